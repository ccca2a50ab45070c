//! A subscription's page: its deliveries (by status, newest first, paged, live), each delivery's
//! attempt log, Retry, Recover, the signing secret (reveal, copy, rotate) and Send test event.
//!
//! Every action calls the store function its API endpoint calls; a test event is posted
//! through the normal ingest path, like `POST /v1/events`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Page;
use super::examples::{self, KNOWN_TYPES};
use super::forms::{Fields, parse_time, time_input};
use super::integrations::{actions, status, target};
use super::layout::{self, Nav, badge, csrf_input, q, seg, short};
use super::session::Signed;
use crate::clock::{new_id, now_ms, rfc3339};
use crate::delivery::http::USER_AGENT;
use crate::error::ApiError;
use crate::events::{EventIn, ingest, prepare};
use crate::model::{Attempt, Delivery, DeliveryStatus, Format, Subscription, SubscriptionStatus};
use crate::state::AppState;
use crate::subscriptions as rules;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/subscriptions/{id}", get(show))
        .route("/console/subscriptions/{id}/secret", post(reveal_secret))
        .route(
            "/console/subscriptions/{id}/secret/rotate",
            post(rotate_secret),
        )
        .route(
            "/console/subscriptions/{id}/recover",
            get(recover_preview).post(recover),
        )
        .route("/console/subscriptions/{id}/verify", post(verify_again))
        .route("/console/subscriptions/{id}/test", post(send_test))
        .route(
            "/console/subscriptions/{id}/test/{event_id}",
            get(follow_test),
        )
        .route("/console/deliveries/{id}", get(delivery))
        .route("/console/deliveries/{id}/retry", post(retry))
}

#[derive(Debug, Deserialize)]
struct ShowQuery {
    status: Option<String>,
    cursor: Option<i64>,
    done: Option<String>,
}

fn done_notice(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "enabled" => Some("Subscription enabled."),
        "disabled" => Some("Subscription disabled."),
        "retried" => Some("Delivery queued to be attempted again now."),
        "verify" => Some("Verification handshake started; the status updates when it answers."),
        _ => None,
    }
}

/// The subscription's event types a test event may have: its own, or the known ones for `*`.
fn test_types(sub: &Subscription) -> Vec<String> {
    let own: Vec<String> = sub
        .event_types
        .iter()
        .filter(|t| *t != "*")
        .cloned()
        .collect();
    if own.is_empty() || sub.event_types.iter().any(|t| t == "*") {
        KNOWN_TYPES.iter().map(|t| t.to_string()).collect()
    } else {
        own
    }
}

async fn show(
    State(state): State<AppState>,
    s: Signed,
    Path(id): Path<String>,
    Query(qs): Query<ShowQuery>,
) -> Page {
    let sub = state
        .store
        .get_subscription(s.account.clone(), id.clone())
        .await?;
    let filter = qs.status.as_deref().and_then(DeliveryStatus::parse);
    let page = state
        .store
        .subscription_deliveries(s.account.clone(), id.clone(), filter, 50, qs.cursor)
        .await?;
    let transform_name = match &sub.transform_plugin_id {
        Some(p) => state
            .store
            .get_plugin(s.account.clone(), p.clone())
            .await
            .ok()
            .map(|p| p.name),
        None => None,
    };
    let sid = seg(&sub.id);
    let csrf = &s.csrf;
    let stream_url = format!("/v1/stream?subscription_id={}", q(&sub.id));
    Ok(layout::page(
        csrf,
        &format!("Subscription {}", sub.id),
        Nav::Integrations,
        html! {
            (layout::notice(done_notice(qs.done.as_deref())))
            (details(&sub, transform_name.as_deref()))
            (actions(&sub, csrf, true))
            @if sub.url.is_some() && sub.status != SubscriptionStatus::Active {
                form method="post" action={ "/console/subscriptions/" (sid) "/verify" } {
                    (csrf_input(csrf))
                    button.secondary type="submit" data-test="verify-again" { "Run the verification handshake again" }
                }
            }
            section.card {
                h2 { "Send test event" }
                p.hint { "Posts the type's example payload as a new event through the normal ingest path: every subscription that wants this type gets it, this one included." }
                form method="post" action={ "/console/subscriptions/" (sid) "/test" } {
                    (csrf_input(csrf))
                    label for="test-type" { "Event type" }
                    select #test-type name="type" data-test="test-event-type" {
                        @for t in test_types(&sub) { option value=(t) { (t) } }
                    }
                    div.actions { button type="submit" data-test="send-test-event" { "Send test event" } }
                }
            }
            @if sub.url.is_some() {
                section.card {
                    h2 { "Signing secret" }
                    p.hint { "Verify deliveries with it (see the README's \"Verifying a signature\")." }
                    div.actions {
                        details.confirm {
                            summary data-test="reveal-secret" { "Reveal secret" }
                            p { "Show the signing secret on screen? Anyone who sees it can sign requests your endpoint will accept." }
                            form method="post" action={ "/console/subscriptions/" (sid) "/secret" } {
                                (csrf_input(csrf))
                                button type="submit" data-test="reveal-secret-confirm" { "Yes, show it" }
                            }
                        }
                        details.confirm {
                            summary data-test="rotate-secret" { "Rotate secret" }
                            p { "Make a new secret? The current one keeps signing (as a second signature) for 24 hours, so receivers can switch over." }
                            form method="post" action={ "/console/subscriptions/" (sid) "/secret/rotate" } {
                                (csrf_input(csrf))
                                button type="submit" data-test="rotate-secret-confirm" { "Yes, rotate" }
                            }
                        }
                    }
                }
            }
            section.card {
                h2 { "Recover failed deliveries" }
                form method="get" action={ "/console/subscriptions/" (sid) "/recover" } {
                    label for="recover-since" { "Failed deliveries created since (UTC)" }
                    input #recover-since type="datetime-local" name="since" required
                        value=(time_input(now_ms() - 24 * 3_600_000)) data-test="recover-since";
                    div.actions { button.secondary type="submit" data-test="recover" { "Recover…" } }
                    p.hint { "You see how many will be retried before anything happens." }
                }
            }
            h2 #deliveries { "Deliveries" }
            form.filters method="get" action={ "/console/subscriptions/" (sid) } {
                div {
                    label for="status-filter" { "Status" }
                    select #status-filter name="status" data-test="delivery-status-filter" {
                        option value="" selected[filter.is_none()] { "Any" }
                        @for st in [DeliveryStatus::Pending, DeliveryStatus::Succeeded, DeliveryStatus::Failed, DeliveryStatus::Filtered] {
                            option value=(st.as_str()) selected[filter == Some(st)] { (st.as_str()) }
                        }
                    }
                }
                button.secondary type="submit" data-test="apply-filter" { "Filter" }
                label.live {
                    input type="checkbox" data-live="attempt" data-live-url=(stream_url)
                        data-live-target="deliveries-body" data-live-status="deliveries-live-status" data-test="live-toggle";
                    "Live"
                }
                span #deliveries-live-status.hint role="status" {}
            }
            (deliveries_table(&page.items, csrf, "deliveries-body"))
            @if let Some(c) = page.next_cursor {
                p.pager { a href={ "/console/subscriptions/" (sid) "?cursor=" (c)
                    @if let Some(f) = filter { "&status=" (f.as_str()) } "#deliveries" } data-test="next-page" { "Older deliveries →" } }
            }
        },
    )
    .into_response())
}

fn details(sub: &Subscription, transform_name: Option<&str>) -> Markup {
    html! {
        dl.kv data-test="subscription-details" {
            dt { "Target" } dd { (target(sub)) }
            dt { "Status" } dd { (status(sub)) }
            dt { "Event types" } dd { (sub.event_types.join(", ")) }
            dt { "Format" } dd { (sub.format.as_str()) @if sub.format == Format::Airy { " (the account's Airy webhook)" } }
            dt { "Transform" } dd {
                @match &sub.transform_plugin_id {
                    Some(p) => a href={ "/console/plugins/" (seg(p)) } data-test="sub-transform" { (transform_name.unwrap_or(p)) },
                    None => "—",
                }
            }
            dt { "Custom headers" } dd data-test="sub-headers" {
                @if sub.headers.is_empty() { "—" }
                @for (name, value) in &sub.headers { div.mono.wrap { (name) ": " (value) } }
            }
            dt { "Ordering" } dd { (sub.ordering.as_str()) }
            dt { "Circuit" } dd {
                (badge(match sub.circuit.state {
                    crate::model::CircuitState::Closed => "closed",
                    crate::model::CircuitState::Open => "open",
                    crate::model::CircuitState::HalfOpen => "half_open",
                }))
                @if sub.circuit.consecutive_failures > 0 { " " (sub.circuit.consecutive_failures) " failures in a row" }
            }
            dt { "Created" } dd { (layout::time(sub.created_at)) }
        }
    }
}

/// A table of deliveries; `body_id` names its tbody for the live view.
pub fn deliveries_table(items: &[Delivery], csrf: &str, body_id: &str) -> Markup {
    html! {
        div.table-wrap {
            table.responsive data-test="deliveries-table" {
                thead { tr {
                    th { "Last change" } th { "Delivery" } th { "Event" } th { "Status" }
                    th { "Attempts" } th { "Last result" } th { "Actions" }
                } }
                tbody #(body_id) {
                    @for d in items {
                        tr data-test="delivery-row" data-delivery-id=(d.id) {
                            td data-label="Last change" { (layout::time(d.updated_at)) }
                            td.wrap data-label="Delivery" { a href={ "/console/deliveries/" (seg(&d.id)) } data-test="delivery-link" { (d.id) } }
                            td.wrap data-label="Event" { a href={ "/console/events/" (seg(&d.event_id)) } { (d.event_id) } }
                            td data-label="Status" data-test="delivery-status" { (badge(d.status.as_str())) }
                            td data-label="Attempts" { (d.attempts) }
                            td.wrap data-label="Last result" { (d.last_error.as_deref().map(|e| short(e, 160)).unwrap_or_else(|| "—".into())) }
                            td data-label="Actions" {
                                form method="post" action={ "/console/deliveries/" (seg(&d.id)) "/retry" } {
                                    (csrf_input(csrf))
                                    button.secondary type="submit" data-test="retry-delivery" { "Retry" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if items.is_empty() {
            p data-test="no-deliveries" data-empty-for=(body_id) { "No deliveries here yet." }
        }
    }
}

async fn reveal_secret(State(state): State<AppState>, s: Signed, Path(id): Path<String>) -> Page {
    let sub = state.store.get_subscription(s.account, id).await?;
    let now = now_ms();
    let grace = sub.previous_secret_expires_at.filter(|t| *t > now);
    Ok(secret_page(&s.csrf, &sub, "Signing secret", grace).into_response())
}

fn secret_page(csrf: &str, sub: &Subscription, title: &str, grace: Option<i64>) -> Markup {
    layout::page(
        csrf,
        title,
        Nav::Integrations,
        html! {
            p { "Subscription " a href={ "/console/subscriptions/" (seg(&sub.id)) } { (sub.id) } }
            p { code #secret-value.wrap data-test="secret-value" { (sub.secret) } " "
                button.secondary type="button" data-copy="secret-value" data-test="copy-secret" { "Copy" } }
            @if let Some(until) = grace {
                p.hint data-test="secret-grace" { "The previous secret also signs deliveries until " (layout::time(until)) "." }
            }
        },
    )
}

async fn rotate_secret(State(state): State<AppState>, s: Signed, Path(id): Path<String>) -> Page {
    let (sub, _) = state
        .store
        .update_subscription(s.account, id, |sub| Ok(rules::rotate_secret(sub, now_ms())))
        .await?;
    let grace = sub.previous_secret_expires_at;
    Ok(secret_page(&s.csrf, &sub, "Secret rotated", grace).into_response())
}

#[derive(Debug, Deserialize)]
struct RecoverQuery {
    since: Option<String>,
}

async fn recover_preview(
    State(state): State<AppState>,
    s: Signed,
    Path(id): Path<String>,
    Query(rq): Query<RecoverQuery>,
) -> Page {
    let sub = state
        .store
        .get_subscription(s.account.clone(), id.clone())
        .await?;
    let since = rq.since.as_deref().and_then(parse_time).ok_or_else(|| {
        ApiError::invalid("since: a time such as 2026-11-01T09:30 (UTC) or RFC 3339")
    })?;
    let count = state.store.count_failed_since(s.account, id, since).await?;
    let sid = seg(&sub.id);
    Ok(layout::page(
        &s.csrf,
        "Recover failed deliveries",
        Nav::Integrations,
        html! {
            p data-test="recover-count" {
                strong { (count) } " failed deliver" (if count == 1 { "y" } else { "ies" })
                " of " a href={ "/console/subscriptions/" (sid) } { (sub.id) }
                " created since " (layout::time(since)) " will be attempted again."
            }
            form method="post" action={ "/console/subscriptions/" (sid) "/recover" } {
                (csrf_input(&s.csrf))
                input type="hidden" name="since" value=(rfc3339(since));
                div.actions {
                    button type="submit" data-test="recover-confirm" disabled[count == 0] { "Retry " (count) }
                    a href={ "/console/subscriptions/" (sid) } { "Cancel" }
                }
            }
        },
    )
    .into_response())
}

async fn recover(
    State(state): State<AppState>,
    s: Signed,
    Path(id): Path<String>,
    fields: Fields,
) -> Page {
    let since = fields
        .get("since")
        .as_deref()
        .and_then(parse_time)
        .ok_or_else(|| ApiError::invalid("since: not a time"))?;
    let recovered = state
        .store
        .recover_deliveries(s.account, id.clone(), since, now_ms())
        .await?;
    state.wake_dispatcher();
    Ok(layout::page(
        &s.csrf,
        "Recovery started",
        Nav::Integrations,
        html! {
            p.notice role="status" data-test="recovered" { (recovered) " deliveries queued to be attempted again." }
            p { a href={ "/console/subscriptions/" (seg(&id)) } { "Back to the subscription" } }
        },
    )
    .into_response())
}

async fn verify_again(State(state): State<AppState>, s: Signed, Path(id): Path<String>) -> Page {
    let (sub, ()) = state
        .store
        .update_subscription(s.account, id, |sub| {
            if sub.url.is_none() {
                return Err(crate::store::StoreError::NotFound);
            }
            sub.status = SubscriptionStatus::PendingVerification;
            sub.status_reason = Some("waiting for the verification handshake".into());
            sub.updated_at = now_ms();
            Ok(())
        })
        .await?;
    crate::delivery::verification::spawn(&state, sub.clone());
    Ok(Redirect::to(&format!(
        "/console/subscriptions/{}?done=verify",
        seg(&sub.id)
    ))
    .into_response())
}

async fn send_test(
    State(state): State<AppState>,
    s: Signed,
    Path(id): Path<String>,
    fields: Fields,
) -> Page {
    let sub = state.store.get_subscription(s.account.clone(), id).await?;
    let event_type = fields
        .text("type")
        .unwrap_or_else(|| "message:created".into());
    let payload = examples::payload(&event_type).to_string();
    let event = EventIn {
        event_type,
        payload: RawValue::from_string(payload).expect("serde_json output is JSON"),
        id: Some(new_id("test")),
        occurred_at: None,
    };
    let event = prepare(&s.account, event, None, state.config.max_event_bytes, "")?;
    let mut stored = ingest(&state, vec![event]).await?;
    let event_id = stored.pop().expect("one event in, one out").event.id;
    Ok(Redirect::to(&format!(
        "/console/subscriptions/{}/test/{}",
        seg(&sub.id),
        seg(&event_id)
    ))
    .into_response())
}

/// Follows the test event's delivery to this subscription until it settles.
async fn follow_test(
    State(state): State<AppState>,
    s: Signed,
    Path((id, event_id)): Path<(String, String)>,
) -> Page {
    let sub = state.store.get_subscription(s.account.clone(), id).await?;
    let event = state
        .store
        .get_event(s.account.clone(), event_id.clone())
        .await?;
    let deliveries = state
        .store
        .event_deliveries(s.account.clone(), event_id)
        .await?;
    let mine = deliveries
        .into_iter()
        .find(|(d, _)| d.subscription_id == sub.id)
        .map(|(d, _)| d);
    let detail = match &mine {
        Some(d) => Some(
            state
                .store
                .get_delivery(s.account.clone(), d.id.clone())
                .await?,
        ),
        None => None,
    };
    let settled = detail
        .as_ref()
        .is_some_and(|(d, _)| d.status != DeliveryStatus::Pending);
    // Follow it while something is about to happen (not through hours of retry backoff).
    let following = !settled
        && detail
            .as_ref()
            .is_none_or(|(d, _)| d.next_attempt_at.is_none_or(|at| at <= now_ms() + 60_000));
    Ok(layout::page(
        &s.csrf,
        "Test event",
        Nav::Integrations,
        html! {
            p { "Event " a href={ "/console/events/" (seg(&event.id)) } data-test="test-event-id" { (event.id) }
                " (" (event.event_type) ") to " a href={ "/console/subscriptions/" (seg(&sub.id)) } { (sub.id) } }
            h2 { "Payload sent to the ingest path" }
            pre data-test="test-event-payload" { (super::events::pretty(event.payload.get())) }
            h2 { "Its delivery" }
            div #test-delivery data-poll=[following.then_some("500")] data-test="test-delivery" data-settled=(settled) {
                @match &detail {
                    None => p data-test="test-no-delivery" {
                        "No delivery to this subscription"
                        @if sub.status != SubscriptionStatus::Active { " yet: it is " (sub.status.as_str()) ", so nothing is sent until it is active." }
                        @else { ": it does not want this event type." }
                    },
                    Some((d, attempts)) => {
                        p { (badge(d.status.as_str())) " " a href={ "/console/deliveries/" (seg(&d.id)) } { (d.id) }
                            @if following { " — following until it settles…" } @else if !settled { " — next attempt " (layout::opt_time(d.next_attempt_at)) } }
                        (attempt_log(&sub, d, attempts))
                    }
                }
            }
        },
    )
    .into_response())
}

async fn delivery(State(state): State<AppState>, s: Signed, Path(id): Path<String>) -> Page {
    let (d, attempts) = state.store.get_delivery(s.account.clone(), id).await?;
    let sub = state
        .store
        .get_subscription(s.account.clone(), d.subscription_id.clone())
        .await?;
    // Follow it while its next attempt is near (not for hours of retry backoff).
    let pending = d.status == DeliveryStatus::Pending
        && d.next_attempt_at.is_none_or(|at| at <= now_ms() + 60_000);
    Ok(layout::page(
        &s.csrf,
        &format!("Delivery {}", d.id),
        Nav::Integrations,
        html! {
            div #delivery data-poll=[pending.then_some("1000")] {
                dl.kv {
                    dt { "Status" } dd data-test="delivery-status" { (badge(d.status.as_str())) }
                    dt { "Event" } dd { a href={ "/console/events/" (seg(&d.event_id)) } data-test="delivery-event" { (d.event_id) } }
                    dt { "Subscription" } dd { a href={ "/console/subscriptions/" (seg(&sub.id)) } { (sub.id) } " " (target(&sub)) }
                    dt { "Attempts" } dd { (d.attempts) }
                    dt { "Next attempt" } dd { (layout::opt_time(d.next_attempt_at)) }
                    dt { "Last error" } dd.wrap { (d.last_error.as_deref().unwrap_or("—")) }
                    dt { "Created" } dd { (layout::time(d.created_at)) }
                }
                h2 { "Attempt log" }
                (attempt_log(&sub, &d, &attempts))
            }
            form method="post" action={ "/console/deliveries/" (seg(&d.id)) "/retry" } {
                (csrf_input(&s.csrf))
                div.actions { button type="submit" data-test="retry-delivery" { "Retry" } }
            }
        },
    )
    .into_response())
}

/// The attempts of a delivery, and the request each one sent.
pub fn attempt_log(sub: &Subscription, d: &Delivery, attempts: &[Attempt]) -> Markup {
    html! {
        @if attempts.is_empty() {
            p data-test="no-attempts" { "No attempt yet." }
        } @else {
            div.table-wrap {
                table.responsive data-test="attempt-log" {
                    thead { tr { th { "#" } th { "Time" } th { "Duration" } th { "Result" } th { "Response (first 4 KiB)" } } }
                    tbody {
                        @for (i, a) in attempts.iter().enumerate() {
                            tr data-test="attempt-row" {
                                td data-label="#" { (i + 1) }
                                td data-label="Time" { (layout::time(a.attempted_at)) }
                                td data-label="Duration" { (a.duration_ms) " ms" }
                                td.wrap data-label="Result" data-test="attempt-result" {
                                    @if let Some(code) = a.status_code { "HTTP " (code) " " }
                                    @if let Some(kind) = &a.error_kind { span.badge.bad { (kind) } " " }
                                    @if let Some(m) = &a.error_message { div { (m) } }
                                    @if a.status_code.is_none() && a.error_kind.is_none() { (badge("ok")) }
                                }
                                td.wrap data-label="Response" {
                                    @match &a.response_body {
                                        Some(body) if !body.is_empty() => pre data-test="attempt-response" { (body) },
                                        _ => "—",
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if sub.plugin_id.is_none() || attempts.iter().any(|a| a.request.is_some()) {
                h3 { "Requests sent" }
                @for (i, a) in attempts.iter().enumerate() {
                    (sent_request(i + 1, a, i + 1 == attempts.len()))
                }
                @if attempts.iter().any(|a| a.request.is_none()) && sub.url.is_some() {
                    (headers_every_attempt_sends(sub, d, attempts))
                }
            }
        }
    }
}

/// What attempt `n` sent: URL, headers and body, all as text. The latest attempt's is open.
fn sent_request(n: usize, a: &Attempt, open: bool) -> Markup {
    html! {
        details.sent-request data-test="attempt-request" open[open] {
            summary { "Attempt " (n) ": "
                @match &a.request {
                    Some(r) => { "POST " span.wrap data-test="attempt-request-url" { (r.url.as_deref().unwrap_or("the `wasmhook listen` command line")) } },
                    None => "no request recorded",
                }
            }
            @match &a.request {
                Some(r) => {
                    pre.wrap data-test="attempt-request-headers" {
                        @for (name, value) in &r.headers { (name) ": " (value) "\n" }
                    }
                    pre data-test="attempt-request-body" { (r.body) }
                    @if r.body_truncated {
                        p.hint data-test="attempt-request-truncated" {
                            "[truncated: the first " (r.body.len()) " of " (r.body_bytes) " bytes are kept]"
                        }
                    }
                },
                None => p.hint data-test="attempt-request-missing" {
                    "Nothing was recorded for this attempt: either it sent nothing (a transform plugin failed on the event or dropped it), or it was made before wasmhook kept the requests it sent."
                },
            }
        }
    }
}

/// For attempts recorded before requests were kept: the headers every attempt of this delivery
/// sends, from the subscription as it is now.
fn headers_every_attempt_sends(sub: &Subscription, d: &Delivery, attempts: &[Attempt]) -> Markup {
    html! {
        details data-test="signed-headers" {
            summary { "Headers an attempt without a record sent" }
            p.hint { "From the subscription as it is now. The signature is an HMAC of the body actually sent (after any transform), which was not kept for these attempts." }
            pre.wrap {
                "content-type: application/json\n"
                "user-agent: " (USER_AGENT) "\n"
                @for (name, value) in &sub.headers { (name) ": " (value) "\n" }
                "webhook-id: " (d.id) "\n"
                "webhook-timestamp: <the attempt's start, in Unix seconds"
                @for a in attempts.iter().filter(|a| a.request.is_none()) { "; " (a.attempted_at / 1000) }
                ">\n"
                "webhook-signature: v1,<base64 HMAC-SHA256 of \"" (d.id) ".{timestamp}.{body}\"> (one per secret in force)\n"
                @if sub.format == Format::Airy { "x-airy-content-signature: <hex HMAC-SHA256 of the body>\n" }
            }
        }
    }
}

async fn retry(State(state): State<AppState>, s: Signed, Path(id): Path<String>) -> Page {
    let d = state.store.retry_delivery(s.account, id, now_ms()).await?;
    state.wake_dispatcher();
    Ok(Redirect::to(&format!("/console/deliveries/{}", seg(&d.id))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AttemptRequest;
    use crate::subscriptions::{CreateSubscription, build};

    fn attempt(at: i64, request: Option<AttemptRequest>) -> Attempt {
        Attempt {
            attempted_at: at,
            duration_ms: 5,
            status_code: Some(500),
            error_kind: Some("http_status".into()),
            error_message: Some("HTTP 500".into()),
            response_body: Some("<script>nope()</script>".into()),
            request,
        }
    }

    /// An attempt recorded before requests were kept still renders (with the headers every
    /// attempt sends, from the subscription); a kept request shows as text, with its marker
    /// when its body was cut.
    #[test]
    fn the_attempt_log_shows_requests_sent_and_renders_old_attempts() {
        let req: CreateSubscription =
            serde_json::from_value(serde_json::json!({"url": "https://example.com/hook"})).unwrap();
        let sub = build("acc", req, &Default::default()).unwrap();
        let d = Delivery {
            seq: 1,
            id: "msg_1".into(),
            event_id: "evt_1".into(),
            subscription_id: sub.id.clone(),
            status: DeliveryStatus::Pending,
            attempts: 2,
            next_attempt_at: None,
            last_error: None,
            created_at: 0,
            updated_at: 0,
        };
        let body = format!(
            r#"{{"text":"<img src=x onerror=alert(1)>{}"}}"#,
            "y".repeat(20_000)
        );
        let headers = vec![("webhook-signature".to_string(), "v1,sig=".to_string())];
        let sent = AttemptRequest::new(Some("https://example.com/hook"), &headers, body.as_bytes());
        let html = attempt_log(
            &sub,
            &d,
            &[attempt(1_000, None), attempt(2_000, Some(sent))],
        )
        .into_string();
        assert!(
            html.contains("attempt-request-missing"),
            "the old attempt says so"
        );
        assert!(
            html.contains("data-test=\"signed-headers\""),
            "and shows the headers sent"
        );
        assert!(html.contains("webhook-signature: v1,sig="));
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "the body is text"
        );
        assert!(!html.contains("<img"));
        assert!(html.contains("attempt-request-truncated"));
        assert!(html.contains(&format!("of {} bytes", body.len())));
        // Only one record missing: no reconstructed headers when every attempt has its own.
        let sent = AttemptRequest::new(Some("https://example.com/hook"), &headers, b"{}");
        let html = attempt_log(&sub, &d, &[attempt(2_000, Some(sent))]).into_string();
        assert!(!html.contains("signed-headers") && !html.contains("attempt-request-missing"));
    }
}
