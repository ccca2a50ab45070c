//! The Integrations page: the account's subscriptions, and the "Add webhook URL" form with its
//! "Check URL" action (the same check as `POST /v1/webhook-checks`).
//!
//! Saving calls the same rules and store function as `POST /v1/subscriptions` (and starts the
//! verification handshake the same way), so a subscription made here is exactly one made
//! with the API.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::examples::KNOWN_TYPES;
use super::forms::Fields;
use super::layout::{self, Nav, badge, csrf_input, seg, short};
use super::session::Signed;
use super::{ConsoleError, Page};
use crate::api::subscriptions::check_plugin_refs;
use crate::delivery::verification;
use crate::error::ApiError;
use crate::model::{Delivery, Format, Plugin, Subscription, SubscriptionStatus};
use crate::state::AppState;
use crate::store::StoreError;
use crate::subscriptions::{self as rules, CreateSubscription};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/integrations", get(list).post(create))
        .route("/console/integrations/new", get(new_form))
        .route("/console/integrations/check", post(check))
        .route("/console/subscriptions/{id}/status", post(set_status))
        .route("/console/subscriptions/{id}/delete", post(delete))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    cursor: Option<i64>,
    done: Option<String>,
}

/// Fixed notices after an action (never text from the query itself).
fn done_notice(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "created" => Some(
            "Webhook saved. A URL that needs the handshake is verified now; its status updates here.",
        ),
        "deleted" => Some("Subscription deleted."),
        "enabled" => Some("Subscription enabled."),
        "disabled" => Some("Subscription disabled."),
        _ => None,
    }
}

/// What a subscription delivers to: its URL as text (never a link), or its plugin.
pub fn target(sub: &Subscription) -> Markup {
    html! {
        @if let Some(url) = &sub.url {
            span.mono.wrap data-test="sub-url" { (url) }
        } @else if let Some(p) = &sub.plugin_id {
            "Plugin " a href={ "/console/plugins/" (seg(p)) } data-test="sub-plugin" { (p) }
        }
    }
}

/// Status with its reason.
pub fn status(sub: &Subscription) -> Markup {
    html! {
        span data-test="sub-status" { (badge(sub.status.as_str())) }
        @if let Some(reason) = &sub.status_reason {
            @if sub.status != SubscriptionStatus::Active {
                div.hint.wrap data-test="sub-status-reason" { (reason) }
            }
        }
    }
}

fn last_delivery(d: Option<&Delivery>) -> Markup {
    html! {
        @match d {
            None => span.hint { "none yet" },
            Some(d) => {
                (badge(d.status.as_str())) " "
                a href={ "/console/deliveries/" (seg(&d.id)) } { (layout::time(d.updated_at)) }
                @if let Some(e) = &d.last_error {
                    div.hint.wrap { (short(e, 120)) }
                }
            }
        }
    }
}

/// Enable or disable, and delete after a confirmation.
pub fn actions(sub: &Subscription, csrf: &str, from_subscription: bool) -> Markup {
    let id = seg(&sub.id);
    let (next, label) = match sub.status {
        SubscriptionStatus::Disabled => ("active", "Enable"),
        _ => ("disabled", "Disable"),
    };
    html! {
        div.actions {
            form method="post" action={ "/console/subscriptions/" (id) "/status" } {
                (csrf_input(csrf))
                @if from_subscription { input type="hidden" name="from" value="subscription"; }
                input type="hidden" name="status" value=(next);
                button.secondary type="submit" data-test={ "sub-" (label.to_lowercase()) } { (label) }
            }
            details.confirm {
                summary data-test="sub-delete" { "Delete" }
                p { "Delete this subscription and its delivery history? This cannot be undone." }
                form method="post" action={ "/console/subscriptions/" (id) "/delete" } {
                    (csrf_input(csrf))
                    button.danger type="submit" data-test="sub-delete-confirm" { "Yes, delete it" }
                }
            }
        }
    }
}

async fn list(State(state): State<AppState>, s: Signed, Query(q): Query<ListQuery>) -> Page {
    let page = state
        .store
        .list_subscriptions(s.account.clone(), 50, q.cursor)
        .await?;
    let ids = page.items.iter().map(|sub| sub.id.clone()).collect();
    let latest = state
        .store
        .latest_deliveries(s.account.clone(), ids)
        .await?;
    let names: HashMap<String, String> = account_plugins(&state, &s.account)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    // Follow only handshakes still running (a failed one keeps its reason until tried again).
    let pending = page.items.iter().any(|sub| {
        sub.status == SubscriptionStatus::PendingVerification
            && sub
                .status_reason
                .as_deref()
                .is_none_or(|r| r.starts_with("waiting"))
    });
    Ok(layout::page(
        &s.csrf,
        "Integrations",
        Nav::Integrations,
        html! {
            (layout::notice(done_notice(q.done.as_deref())))
            div.actions {
                a.button href="/console/integrations/new" data-test="add-webhook-url" { "Add webhook URL" }
            }
            p.hint { "Every subscription of this account: URL webhooks (the Airy webhook is the one with format airy) and plugin subscribers." }
            // While a handshake runs, the table follows it (the script re-reads this region).
            div #subscriptions data-poll=[pending.then_some("1000")] {
                (table(&page.items, &latest, &names, &s.csrf))
            }
            @if let Some(c) = page.next_cursor {
                p.pager { a href={ "/console/integrations?cursor=" (c) } data-test="next-page" { "Older subscriptions →" } }
            }
        },
    )
    .into_response())
}

fn table(
    subs: &[Subscription],
    latest: &HashMap<String, Delivery>,
    names: &HashMap<String, String>,
    csrf: &str,
) -> Markup {
    html! {
        @if subs.is_empty() {
            p data-test="no-subscriptions" { "No subscriptions yet. Add a webhook URL to receive events." }
        } @else {
            div.table-wrap {
                table.responsive data-test="subscriptions-table" {
                    thead { tr {
                        th { "Target" } th { "Event types" } th { "Format" } th { "Transform" }
                        th { "Status" } th { "Last delivery" } th { "Actions" }
                    } }
                    tbody {
                        @for sub in subs {
                            tr data-test="subscription-row" data-id=(sub.id) {
                                td.wrap.target data-label="Target" {
                                    (target(sub))
                                    div.small { a href={ "/console/subscriptions/" (seg(&sub.id)) } data-test="open-subscription" { (sub.id) } }
                                }
                                td data-label="Event types" data-test="sub-event-types" { (sub.event_types.join(", ")) }
                                td data-label="Format" data-test="sub-format" {
                                    (sub.format.as_str())
                                    @if sub.format == Format::Airy { " (Airy webhook)" }
                                }
                                td data-label="Transform" {
                                    @match &sub.transform_plugin_id {
                                        Some(p) => a href={ "/console/plugins/" (seg(p)) } data-test="sub-transform" { (names.get(p).unwrap_or(p)) },
                                        None => "—",
                                    }
                                }
                                td data-label="Status" { (status(sub)) }
                                td data-label="Last delivery" data-test="sub-last-delivery" { (last_delivery(latest.get(&sub.id))) }
                                td data-label="Actions" { (actions(sub, csrf, false)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What the form holds, as typed (so it can be shown again with an error or a check report).
#[derive(Debug, Clone)]
struct WebhookForm {
    url: String,
    all_types: bool,
    types: Vec<String>,
    other_types: String,
    format: Format,
    headers: String,
    transform: String,
    verify: bool,
}

impl Default for WebhookForm {
    fn default() -> Self {
        WebhookForm {
            url: String::new(),
            all_types: false,
            types: vec!["message:created".into()],
            other_types: String::new(),
            format: Format::Standard,
            headers: String::new(),
            transform: String::new(),
            verify: true,
        }
    }
}

impl WebhookForm {
    fn from_fields(f: &Fields) -> WebhookForm {
        WebhookForm {
            url: f.get("url").unwrap_or_default().trim().to_string(),
            all_types: f.checked("all_types"),
            types: f.all("event_type"),
            other_types: f.get("other_types").unwrap_or_default(),
            format: f
                .get("format")
                .and_then(|v| Format::parse(&v))
                .unwrap_or_default(),
            headers: f.get("headers").unwrap_or_default(),
            transform: f.get("transform").unwrap_or_default(),
            verify: f.checked("verify"),
        }
    }

    fn event_types(&self) -> Vec<String> {
        if self.all_types {
            return vec!["*".into()];
        }
        let mut types: Vec<String> = self.types.clone();
        for t in self
            .other_types
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if !types.iter().any(|x| x == t) {
                types.push(t.to_string());
            }
        }
        types
    }

    /// `Name: value` lines.
    fn header_map(&self) -> Result<BTreeMap<String, String>, ApiError> {
        let mut map = BTreeMap::new();
        for (i, line) in self.headers.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (name, value) = line.split_once(':').ok_or_else(|| {
                ApiError::invalid(format!(
                    "headers, line {}: write each header as \"Name: value\"",
                    i + 1
                ))
            })?;
            map.insert(name.trim().to_string(), value.trim().to_string());
        }
        rules::validate_headers(&map)?;
        Ok(map)
    }
}

fn form_page(
    csrf: &str,
    form: &WebhookForm,
    plugins: &[Plugin],
    error: Option<&str>,
    check: Option<Markup>,
) -> Markup {
    layout::page(
        csrf,
        "Add webhook URL",
        Nav::Integrations,
        html! {
            form.card method="post" action="/console/integrations" data-test="webhook-form" {
                (csrf_input(csrf))
                @if let Some(error) = error {
                    p.error role="alert" data-test="form-error" { (error) }
                }
                label for="url" { "URL" }
                input #url type="text" name="url" value=(form.url) required inputmode="url"
                    placeholder="https://example.com/webhooks" data-test="webhook-url";
                p.hint { "Events are POSTed here, signed (Standard Webhooks). http or https." }
                fieldset {
                    legend { "Event types" }
                    label { input type="checkbox" name="all_types" value="*" checked[form.all_types]
                        data-all-types data-test="type-all"; "All event types" }
                    @for t in KNOWN_TYPES {
                        label { input type="checkbox" name="event_type" value=(t)
                            checked[form.types.iter().any(|x| x == t)] data-event-type
                            data-test={ "type-" (t.replace(':', "-")) }; (t) }
                    }
                    label.block for="other-types" { "Other types (comma-separated)" }
                    input #other-types type="text" name="other_types" value=(form.other_types)
                        data-event-type data-test="type-other";
                }
                label for="format" { "Format" }
                select #format name="format" data-test="webhook-format" {
                    @for (f, text) in [(Format::Standard, "standard: {type, timestamp, data}"),
                                       (Format::Papercups, "papercups: {event, payload} (always verified)"),
                                       (Format::Airy, "airy: the flat message object")] {
                        option value=(f.as_str()) selected[form.format == f] { (text) }
                    }
                }
                label for="headers" { "Custom headers (one \"Name: value\" per line)" }
                textarea #headers name="headers" rows="3" data-test="webhook-headers" { (form.headers) }
                label for="transform" { "Transform plugin" }
                select #transform name="transform" data-test="webhook-transform" {
                    option value="" selected[form.transform.is_empty()] { "None" }
                    @for p in plugins {
                        option value=(p.id) selected[form.transform == p.id] { (p.name) " (" (p.id) ")" }
                    }
                }
                label.inline {
                    input type="checkbox" name="verify" value="on" checked[form.verify] data-test="webhook-verify";
                    "Verify the URL first (the webhook:verify handshake: it must answer with the challenge)"
                }
                div.actions {
                    button.secondary type="submit" formaction="/console/integrations/check" data-test="check-url" { "Check URL" }
                    button type="submit" data-test="save-webhook" { "Save webhook" }
                    a href="/console/integrations" { "Cancel" }
                }
            }
            @if let Some(check) = check { (check) }
        },
    )
}

async fn account_plugins(state: &AppState, account: &str) -> Result<Vec<Plugin>, ConsoleError> {
    Ok(state
        .store
        .list_plugins(account.to_string(), 250, None)
        .await?
        .items)
}

async fn new_form(State(state): State<AppState>, s: Signed) -> Page {
    let plugins = account_plugins(&state, &s.account).await?;
    Ok(form_page(&s.csrf, &WebhookForm::default(), &plugins, None, None).into_response())
}

async fn create(State(state): State<AppState>, s: Signed, fields: Fields) -> Page {
    let form = WebhookForm::from_fields(&fields);
    match save(&state, &s.account, &form).await {
        Ok(()) => Ok(Redirect::to("/console/integrations?done=created").into_response()),
        Err(ConsoleError::Api(e))
            if !matches!(e, ApiError::Internal(_) | ApiError::Unavailable(_)) =>
        {
            let plugins = account_plugins(&state, &s.account).await?;
            let page = form_page(&s.csrf, &form, &plugins, Some(&e.to_string()), None);
            Ok((StatusCode::BAD_REQUEST, page).into_response())
        }
        Err(e) => Err(e),
    }
}

/// Creates the subscription as `POST /v1/subscriptions` does.
async fn save(state: &AppState, account: &str, form: &WebhookForm) -> Result<(), ConsoleError> {
    let transform = Some(form.transform.clone()).filter(|t| !t.is_empty());
    check_plugin_refs(state, account, &[transform.as_ref()]).await?;
    let req = CreateSubscription {
        url: Some(form.url.clone()),
        plugin_id: None,
        transform_plugin_id: transform,
        description: String::new(),
        event_types: form.event_types(),
        headers: form.header_map()?,
        format: form.format,
        verify: form.verify,
        rate_limit_per_second: None,
        max_in_flight: None,
        ordering: None,
    };
    let sub = rules::build(account, req, &state.net_policy)?;
    let sub = state.store.create_subscription(sub).await?;
    if sub.status == SubscriptionStatus::PendingVerification {
        verification::spawn(state, sub);
    }
    Ok(())
}

async fn check(State(state): State<AppState>, s: Signed, fields: Fields) -> Page {
    let form = WebhookForm::from_fields(&fields);
    let plugins = account_plugins(&state, &s.account).await?;
    let report = match form.header_map() {
        Ok(headers) => {
            super::check::run(
                &state,
                &s.account,
                &form.url,
                form.format,
                &headers,
                form.verify,
            )
            .await
        }
        Err(e) => super::check::refused(&e.to_string()),
    };
    Ok(form_page(&s.csrf, &form, &plugins, None, Some(report)).into_response())
}

async fn set_status(
    State(state): State<AppState>,
    s: Signed,
    Path(id): Path<String>,
    fields: Fields,
) -> Page {
    let status = match fields.get("status").as_deref() {
        Some("active") => SubscriptionStatus::Active,
        Some("disabled") => SubscriptionStatus::Disabled,
        _ => return Err(ApiError::invalid("status: active or disabled").into()),
    };
    let patch = crate::subscriptions::UpdateSubscription {
        status: Some(status),
        ..Default::default()
    };
    let (sub, verify_now) = state
        .store
        .update_subscription(s.account, id, move |sub| {
            rules::apply_update(sub, patch).map_err(StoreError::Conflict)
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ConsoleError::Api(ApiError::invalid(m)),
            other => other.into(),
        })?;
    if verify_now {
        verification::spawn(&state, sub.clone());
    }
    let done = if status == SubscriptionStatus::Active {
        "enabled"
    } else {
        "disabled"
    };
    Ok(back_to(&fields, &sub.id, done))
}

/// Where an action returns: the subscription's page when it came from there, else the list.
fn back_to(fields: &Fields, id: &str, done: &str) -> Response {
    if fields.get("from").as_deref() == Some("subscription") {
        Redirect::to(&format!("/console/subscriptions/{}?done={done}", seg(id))).into_response()
    } else {
        Redirect::to(&format!("/console/integrations?done={done}")).into_response()
    }
}

async fn delete(State(state): State<AppState>, s: Signed, Path(id): Path<String>) -> Page {
    state.store.delete_subscription(s.account, id).await?;
    Ok(Redirect::to("/console/integrations?done=deleted").into_response())
}
