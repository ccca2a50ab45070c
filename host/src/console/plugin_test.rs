//! The plugin page's **Test run**: run the plugin on one of the account's recent events or an
//! example payload and see its decision (with a diff of a replaced payload), log lines,
//! `send-message` calls, key-value writes, outgoing requests and time. It is the same dry run as
//! `POST /v1/plugins/{id}/test`: nothing is sent, stored or logged.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use maud::{Markup, html};
use serde_json::value::RawValue;

use super::Page;
use super::events::pretty;
use super::examples::{self, KNOWN_TYPES};
use super::forms::Fields;
use super::layout::{self, Nav, badge, csrf_input, seg};
use super::session::Signed;
use crate::api::plugin_test_runs::{self as test_runs, TestDecision, TestRunIn, TestRunOut};
use crate::error::ApiError;
use crate::events::EventIn;
use crate::model::{Event, Plugin};
use crate::state::AppState;
use crate::store::EventSearch;

pub fn router() -> Router<AppState> {
    Router::new().route("/console/plugins/{id}/test", post(test_run))
}

/// What the form holds.
#[derive(Debug, Clone, Default)]
struct TestForm {
    source: String,
    event_type: String,
    payload: String,
    config: String,
}

/// The test-run form, for a plugin's page (`recent`: the account's recent events to pick from).
pub fn section(plugin: &Plugin, csrf: &str, recent: &[Event]) -> Markup {
    form(plugin, csrf, recent, &TestForm::default(), None)
}

fn form(
    plugin: &Plugin,
    csrf: &str,
    recent: &[Event],
    f: &TestForm,
    result: Option<Markup>,
) -> Markup {
    let example_type = if f.event_type.is_empty() {
        "message:created"
    } else {
        f.event_type.as_str()
    };
    html! {
        section.card #test-run data-test="test-run" {
            h2 { "Test run" }
            p.hint { "Runs the active version on one event with its limits and config. Nothing is sent, stored or logged: messages and key-value writes are captured and shown." }
            form method="post" action={ "/console/plugins/" (seg(&plugin.id)) "/test#test-run" } data-test="test-run-form" {
                (csrf_input(csrf))
                fieldset {
                    legend { "Event" }
                    label { input type="radio" name="source" value="example" checked[f.source != "recent"] data-test="test-source-example"; "Example payload of type" }
                    label.block for="test-type" { "Example type" }
                    select #test-type name="event_type" data-test="test-run-type" {
                        @for t in KNOWN_TYPES { option value=(t) selected[*t == example_type] { (t) } }
                    }
                    label for="test-payload" { "Payload (JSON; empty: the type's example)" }
                    textarea #test-payload name="payload" rows="6" data-test="test-run-payload" { (f.payload) }
                    @if !recent.is_empty() {
                        label { input type="radio" name="source" value="recent" checked[f.source == "recent"] data-test="test-source-recent"; "One of the account's recent events" }
                        label.block for="test-event" { "Recent event" }
                        select #test-event name="event_id" data-test="test-run-event" {
                            @for e in recent { option value=(e.id) { (e.id) " (" (e.event_type) ")" } }
                        }
                    }
                }
                label for="test-config" { "Config overrides for this run (key=value per line)" }
                textarea #test-config name="config" rows="2" data-test="test-run-config" { (f.config) }
                div.actions { button type="submit" data-test="test-run-submit" { "Test run" } }
            }
            @if let Some(result) = result { (result) }
        }
    }
}

async fn recent_events(state: &AppState, account: &str) -> Result<Vec<Event>, ApiError> {
    Ok(state
        .store
        .search_events(account.to_string(), EventSearch::default(), 20, None)
        .await?
        .items)
}

async fn test_run(
    State(state): State<AppState>,
    s: Signed,
    Path(id): Path<String>,
    fields: Fields,
) -> Page {
    let plugin = state
        .store
        .get_plugin(s.account.clone(), id.clone())
        .await?;
    let recent = recent_events(&state, &s.account).await?;
    let f = TestForm {
        source: fields.get("source").unwrap_or_default(),
        event_type: fields
            .text("event_type")
            .unwrap_or_else(|| "message:created".into()),
        payload: fields.get("payload").unwrap_or_default(),
        config: fields.get("config").unwrap_or_default(),
    };
    let outcome = async {
        let (event_type, payload) = if f.source == "recent" {
            let event_id = fields
                .text("event_id")
                .ok_or_else(|| ApiError::invalid("choose an event"))?;
            let e = state.store.get_event(s.account.clone(), event_id).await?;
            (e.event_type, e.payload.get().to_string())
        } else if f.payload.trim().is_empty() {
            (
                f.event_type.clone(),
                examples::payload(&f.event_type).to_string(),
            )
        } else {
            (f.event_type.clone(), f.payload.trim().to_string())
        };
        let payload = RawValue::from_string(payload)
            .map_err(|e| ApiError::invalid(format!("payload: not JSON ({e})")))?;
        let mut config = BTreeMap::new();
        for (i, line) in f.config.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| {
                ApiError::invalid(format!("config, line {}: write key=value", i + 1))
            })?;
            config.insert(k.trim().to_string(), v.trim().to_string());
        }
        let original = payload.get().to_string();
        let req = TestRunIn {
            event: EventIn {
                event_type,
                payload,
                id: None,
                occurred_at: None,
            },
            config,
        };
        let out = test_runs::run(&state, &s.account, id.clone(), req).await?;
        Ok::<_, ApiError>((original, out))
    }
    .await;
    let (result, status) = match outcome {
        Ok((original, out)) => (report(&original, &out), StatusCode::OK),
        Err(ApiError::NotFound(_)) => return Err(super::ConsoleError::NotFound("plugin")),
        Err(e) => {
            let message = e.to_string();
            let status = e.into_response().status();
            (
                html! { p.error role="alert" data-test="test-run-error" { (message) } },
                status,
            )
        }
    };
    let body = html! {
        p { a href={ "/console/plugins/" (seg(&plugin.id)) } { "← Back to " (plugin.name) } }
        (form(&plugin, &s.csrf, &recent, &f, Some(result)))
    };
    let title = format!("Test run of {}", plugin.name);
    Ok((status, layout::page(&s.csrf, &title, Nav::Plugins, body)).into_response())
}

fn decision_word(d: TestDecision) -> &'static str {
    match d {
        TestDecision::Keep => "keep",
        TestDecision::Replace => "replace",
        TestDecision::Drop => "drop",
        TestDecision::Error => "error",
    }
}

fn report(original: &str, out: &TestRunOut) -> Markup {
    html! {
        div data-test="test-run-result" {
            h3 { "Decision: " span data-test="test-run-decision" { (badge(decision_word(out.decision))) } " in " (out.duration_us) " µs" }
            @if let Some(e) = &out.error {
                p.error data-test="test-run-failure" { (e.kind) ": " (e.message) @if e.retryable { " (retryable)" } }
            }
            @if let Some(p) = &out.payload {
                h4 { "Payload: what changed" }
                pre.diff data-test="test-run-diff" {
                    @for (kind, line) in diff_lines(&pretty(original), &pretty(p.get())) {
                        @match kind {
                            Change::Same => span { "  " (line) "\n" },
                            Change::Removed => span.diff-del { "- " (line) "\n" },
                            Change::Added => span.diff-add { "+ " (line) "\n" },
                        }
                    }
                }
            }
            h4 { "Log lines" }
            @if out.logs.is_empty() { p.hint { "None." } }
            @for l in &out.logs { div.mono.wrap data-test="test-run-log" { (badge(&l.level)) " " (l.message) } }
            h4 { "send-message calls (captured, not sent)" }
            @if out.sent_messages.is_empty() { p.hint { "None." } }
            @for m in &out.sent_messages { div.wrap data-test="test-run-message" { "to conversation " code { (m.conversation_id) } ": " (m.text) } }
            h4 { "Key-value writes (captured, not stored)" }
            @if out.kv_writes.is_empty() { p.hint { "None." } }
            @for w in &out.kv_writes {
                div.mono.wrap data-test="test-run-kv" {
                    (w.op) " " (w.key)
                    @if let Some(v) = &w.value { " = " (serde_json::to_string(v).unwrap_or_default()) }
                    @if let Some(d) = w.delta { " by " (d) }
                    @if let Some(written) = w.written { @if written { " (written)" } @else { " (not written)" } }
                    @if let Some(e) = &w.error { " — refused: " (e) }
                }
            }
            @if !out.http_requests.is_empty() {
                h4 { "Outgoing HTTP" }
                @for r in &out.http_requests {
                    div.mono.wrap { (r.method) " " (r.url) " → "
                        @if let Some(st) = r.status { (st) } @if let Some(e) = &r.error { (e) } }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Same,
    Removed,
    Added,
}

/// A line diff (longest common subsequence); past 500 lines a side, the two texts whole.
fn diff_lines<'a>(old: &'a str, new: &'a str) -> Vec<(Change, &'a str)> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() > 500 || b.len() > 500 {
        return a
            .iter()
            .map(|l| (Change::Removed, *l))
            .chain(b.iter().map(|l| (Change::Added, *l)))
            .collect();
    }
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push((Change::Same, a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push((Change::Removed, a[i]));
            i += 1;
        } else {
            out.push((Change::Added, b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| (Change::Removed, *l)));
    out.extend(b[j..].iter().map(|l| (Change::Added, *l)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_keeps_common_lines_and_marks_the_changed_ones() {
        let d = diff_lines("a\nb\nc", "a\nB\nc\nd");
        assert_eq!(
            d,
            [
                (Change::Same, "a"),
                (Change::Removed, "b"),
                (Change::Added, "B"),
                (Change::Same, "c"),
                (Change::Added, "d"),
            ]
        );
    }
}
