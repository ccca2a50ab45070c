//! The Events pages: the account's events filtered by type, id, conversation and time (with a
//! Live view), and one event: its payload, its causation chain and its deliveries.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use super::Page;
use super::examples::KNOWN_TYPES;
use super::forms::parse_time;
use super::layout::{self, Nav, badge, q, seg, short};
use super::session::Signed;
use crate::error::ApiError;
use crate::model::Event;
use crate::state::AppState;
use crate::store::EventSearch;
use crate::store::StoreError;
use crate::store::policy::MAX_PLUGIN_DEPTH;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/events", get(list))
        .route("/console/events/{id}", get(show))
}

/// Pretty-printed JSON (the text as stored when it cannot be parsed).
pub fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| json.to_string())
}

/// The payload's `conversation_id`, as text.
fn conversation_of(e: &Event) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(e.payload.get()).ok()?;
    match v.get("conversation_id")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[derive(Debug, Default, Deserialize)]
struct EventQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    id: Option<String>,
    conversation_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<i64>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl EventQuery {
    fn search(&self) -> Result<EventSearch, ApiError> {
        let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, ApiError> {
            match nonempty(v) {
                None => Ok(None),
                Some(t) => parse_time(&t).map(Some).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "{name}: a time such as 2026-11-01T09:30 (UTC) or RFC 3339"
                    ))
                }),
            }
        };
        Ok(EventSearch {
            event_type: nonempty(&self.event_type),
            event_id: nonempty(&self.id),
            conversation_id: nonempty(&self.conversation_id),
            from: time("from", &self.from)?,
            to: time("to", &self.to)?,
        })
    }

    /// The filters as a query string, for the next page's link.
    fn query_string(&self) -> String {
        [
            ("type", &self.event_type),
            ("id", &self.id),
            ("conversation_id", &self.conversation_id),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .iter()
        .filter_map(|(k, v)| nonempty(v).map(|v| format!("&{k}={}", q(&v))))
        .collect()
    }
}

async fn list(State(state): State<AppState>, s: Signed, Query(eq): Query<EventQuery>) -> Page {
    let search = eq.search()?;
    let stream_url = match &search.event_type {
        Some(t) => format!("/v1/stream?types={}", q(t)),
        None => "/v1/stream".to_string(),
    };
    let page = state
        .store
        .search_events(s.account.clone(), search, 50, eq.cursor)
        .await?;
    let val = |v: &Option<String>| v.clone().unwrap_or_default();
    Ok(layout::page(
        &s.csrf,
        "Events",
        Nav::Events,
        html! {
            form.filters method="get" action="/console/events" data-test="event-filters" {
                div { label for="f-type" { "Type" }
                    input #f-type type="text" name="type" list="known-types" value=(val(&eq.event_type)) data-test="filter-type";
                    datalist #known-types { @for t in KNOWN_TYPES { option value=(t) {} } } }
                div { label for="f-id" { "Event id" }
                    input #f-id type="text" name="id" value=(val(&eq.id)) data-test="filter-id"; }
                div { label for="f-conv" { "Conversation id" }
                    input #f-conv type="text" name="conversation_id" value=(val(&eq.conversation_id)) data-test="filter-conversation"; }
                div { label for="f-from" { "From (UTC)" }
                    input #f-from type="datetime-local" name="from" value=(val(&eq.from)) data-test="filter-from"; }
                div { label for="f-to" { "To (UTC)" }
                    input #f-to type="datetime-local" name="to" value=(val(&eq.to)) data-test="filter-to"; }
                button.secondary type="submit" data-test="apply-filter" { "Filter" }
                a href="/console/events" { "Clear" }
            }
            // Live adds what is stored from now on: with an event id or an end time it has
            // nothing to add; with a conversation it keeps to it.
            @if eq.id.as_deref().is_none_or(|v| v.trim().is_empty())
                && eq.to.as_deref().is_none_or(|v| v.trim().is_empty()) {
                p {
                    label.live {
                        input type="checkbox" data-live="event" data-live-url=(stream_url)
                            data-live-conversation=[nonempty(&eq.conversation_id)]
                            data-live-target="events-body" data-live-status="events-live-status" data-test="live-toggle";
                        "Live"
                    }
                    " " span #events-live-status.hint role="status" {}
                }
            }
            (table(&page.items))
            @if let Some(c) = page.next_cursor {
                p.pager { a href={ "/console/events?cursor=" (c) (eq.query_string()) } data-test="next-page" { "Older events →" } }
            }
        },
    )
    .into_response())
}

fn table(events: &[Event]) -> Markup {
    html! {
        div.table-wrap {
            table.responsive data-test="events-table" {
                thead { tr { th { "Received" } th { "Event" } th { "Type" } th { "Conversation" } th { "Caused by" } } }
                tbody #events-body {
                    @for e in events {
                        tr data-test="event-row" {
                            td data-label="Received" { (layout::time(e.received_at)) }
                            td.wrap data-label="Event" { a href={ "/console/events/" (seg(&e.id)) } data-test="event-link" { (e.id) } }
                            td data-label="Type" data-test="event-type" { (e.event_type) }
                            td.wrap data-label="Conversation" { (conversation_of(e).unwrap_or_else(|| "—".into())) }
                            td data-label="Caused by" {
                                @match &e.causation {
                                    Some(c) => a href={ "/console/plugins/" (seg(&c.plugin_id)) } { (c.plugin_id) },
                                    None => "—",
                                }
                            }
                        }
                    }
                }
            }
        }
        @if events.is_empty() {
            p data-test="no-events" data-empty-for="events-body" { "No events match." }
        }
    }
}

async fn show(State(state): State<AppState>, s: Signed, Path(id): Path<String>) -> Page {
    let event = state.store.get_event(s.account.clone(), id.clone()).await?;
    // Up the chain: the event each plugin was handling when it emitted the next one.
    let mut chain = Vec::new();
    let mut cause = event.causation.clone();
    while let Some(c) = cause.take() {
        if chain.len() > MAX_PLUGIN_DEPTH as usize {
            break;
        }
        let parent = match state
            .store
            .get_event(s.account.clone(), c.event_id.clone())
            .await
        {
            Ok(p) => Some(p),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        cause = parent.as_ref().and_then(|p| p.causation.clone());
        chain.push((c, parent));
    }
    let caused = state
        .store
        .caused_events(s.account.clone(), id.clone(), 50)
        .await?;
    let deliveries = state.store.event_deliveries(s.account.clone(), id).await?;
    Ok(layout::page(
        &s.csrf,
        &format!("Event {}", event.id),
        Nav::Events,
        html! {
            dl.kv {
                dt { "Type" } dd data-test="event-type" { (event.event_type) }
                dt { "Occurred" } dd { (event.occurred_at) }
                dt { "Received" } dd { (layout::time(event.received_at)) }
            }
            h2 { "Payload" }
            pre data-test="event-payload" { (pretty(event.payload.get())) }
            h2 { "Causation" }
            @if chain.is_empty() {
                p data-test="causation" { "Posted by a client (not emitted by a plugin)." }
            } @else {
                ol data-test="causation" {
                    @for (c, parent) in &chain {
                        li {
                            "Emitted by plugin " a href={ "/console/plugins/" (seg(&c.plugin_id)) } { (c.plugin_id) }
                            " (send-message) while it handled "
                            a href={ "/console/events/" (seg(&c.event_id)) } { (c.event_id) }
                            @if let Some(p) = parent { " (" (p.event_type) ")" } @else { " (no longer stored)" }
                        }
                    }
                }
            }
            @if !caused.is_empty() {
                p { "Plugins emitted, while handling this event:" }
                ul data-test="caused-events" {
                    @for e in &caused {
                        li { a href={ "/console/events/" (seg(&e.id)) } { (e.id) } " (" (e.event_type) ") by "
                            @if let Some(c) = &e.causation { (c.plugin_id) } }
                    }
                }
            }
            h2 { "Deliveries" }
            @if deliveries.is_empty() {
                p data-test="no-deliveries" { "No subscription wanted this event." }
            } @else {
                div.table-wrap {
                    table.responsive data-test="event-deliveries" {
                        thead { tr { th { "Subscription" } th { "Target" } th { "Status" } th { "Attempts" } th { "Last result" } } }
                        tbody {
                            @for (d, t) in &deliveries {
                                tr data-test="event-delivery-row" {
                                    td.wrap data-label="Subscription" { a href={ "/console/subscriptions/" (seg(&d.subscription_id)) } { (d.subscription_id) } }
                                    td.wrap data-label="Target" {
                                        @if let Some(url) = &t.url { span.mono { (url) } }
                                        @if let Some(p) = &t.plugin_id { "Plugin " (p) }
                                        @if let Some(p) = &t.transform_plugin_id { div.hint { "through transform " (p) } }
                                    }
                                    td data-label="Status" { a href={ "/console/deliveries/" (seg(&d.id)) } data-test="delivery-link" { (badge(d.status.as_str())) } }
                                    td data-label="Attempts" { (d.attempts) }
                                    td.wrap data-label="Last result" { (d.last_error.as_deref().map(|e| short(e, 160)).unwrap_or_else(|| "—".into())) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
    .into_response())
}
