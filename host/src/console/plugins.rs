//! The Plugins pages: the list (with attached subscriptions and recent failures), uploads by
//! file picker or drag and drop, and a plugin's page: versions, settings (config, allowed hosts,
//! limits with the server's ceilings, log level), logs with a live tail, attaching it, the test
//! run, and deleting it (a refusal says which subscriptions use it).
//!
//! Uploads go to the same plugin runtime calls as `POST /v1/plugins` and `PUT /v1/plugins/{id}`,
//! settings are checked by the same rules as `PATCH /v1/plugins/{id}`; refusals carry the API's
//! message.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::examples::KNOWN_TYPES;
use super::forms::Fields;
use super::layout::{self, Nav, badge, csrf_input, q, seg};
use super::session::Signed;
use super::{ConsoleError, Page};
use crate::api::plugins as api_rules;
use crate::clock::{new_id, now_ms};
use crate::config::Config;
use crate::error::ApiError;
use crate::model::{
    InstanceMode, LogLevel, Plugin, PluginLimits, SubscriptionStatus, VersionStatus,
};
use crate::plugin_config;
use crate::plugins::limits::{self, CEILING, DEFAULTS};
use crate::state::AppState;
use crate::store::StoreError;
use crate::subscriptions::{self as rules, CreateSubscription, UpdateSubscription};

pub fn router(config: &Config) -> Router<AppState> {
    let uploads = Router::new()
        .route("/console/plugins/upload", post(upload))
        .route("/console/plugins/{id}/versions", post(upload_version))
        .layer(axum::extract::DefaultBodyLimit::max(
            config.max_plugin_bytes,
        ));
    Router::new()
        .route("/console/plugins", get(list))
        .route("/console/plugins/{id}", get(show))
        .route("/console/plugins/{id}/settings", post(settings))
        .route("/console/plugins/{id}/attach", post(attach))
        .route("/console/plugins/{id}/delete", post(delete))
        .merge(uploads)
}

#[derive(Debug, Deserialize)]
struct Done {
    done: Option<String>,
}

fn done_notice(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "uploaded" => Some(
            "Plugin uploaded: it is compiling, and its events wait until it is ready (this page follows it).",
        ),
        "version" => Some(
            "New version uploaded: it is compiling; new events run on it once it is ready (this page follows it).",
        ),
        "saved" => Some("Settings saved."),
        "subscriber" => Some("Subscribed: the plugin now receives the chosen events."),
        "transform" => Some(
            "Attached as the webhook's transform: its events pass through the plugin before they are sent.",
        ),
        "deleted" => Some("Plugin deleted."),
        _ => None,
    }
}

/// A drop zone that uploads a `.wasm` to `action`; `with_name` adds the name field.
fn upload_zone(action: &str, with_name: bool, label: &str) -> Markup {
    html! {
        div.dropzone data-upload=(action) data-test="upload-zone" {
            @if with_name {
                label for="plugin-name" { "Name" }
                input #plugin-name type="text" name="name" maxlength="100"
                    placeholder="(the file's name)" data-test="plugin-name";
            }
            label for="plugin-file" { (label) }
            input #plugin-file type="file" accept=".wasm,application/wasm" data-test="plugin-file";
            p.hint { "…or drop a .wasm component here. It is checked at once and compiled right after." }
            p.hint data-upload-progress role="status" {}
            p.error data-upload-error role="alert" data-test="upload-error" {}
        }
    }
}

async fn list(State(state): State<AppState>, s: Signed, Query(d): Query<Done>) -> Page {
    let plugins = state
        .store
        .list_plugins(s.account.clone(), 250, None)
        .await?
        .items;
    let uses = state
        .store
        .plugin_uses(s.account.clone(), now_ms() - 24 * 3_600_000)
        .await?;
    Ok(layout::page(
        &s.csrf,
        "Plugins",
        Nav::Plugins,
        html! {
            (layout::notice(done_notice(d.done.as_deref())))
            section.card {
                h2 { "Upload a plugin" }
                (upload_zone("/console/plugins/upload", true, "WebAssembly component (.wasm)"))
            }
            @if plugins.is_empty() {
                p data-test="no-plugins" { "No plugins yet." }
            } @else {
                div.table-wrap {
                    table.responsive data-test="plugins-table" {
                        thead { tr { th { "Name" } th { "Active version" } th { "Status" } th { "Attached to" } th { "Failures (24 h)" } } }
                        tbody {
                            @for p in &plugins {
                                @let u = uses.get(&p.id).cloned().unwrap_or_default();
                                tr data-test="plugin-row" data-id=(p.id) {
                                    td.wrap data-label="Name" {
                                        a href={ "/console/plugins/" (seg(&p.id)) } data-test="plugin-link" { (p.name) }
                                        div.hint.mono { (p.id) }
                                    }
                                    td data-label="Active version" { "v" (p.version) }
                                    td.wrap data-label="Status" data-test="plugin-status" data-compile-status=(p.id) { (compile_status(p)) }
                                    td.wrap data-label="Attached to" data-test="plugin-attached" {
                                        @if u.subscriber_of.is_empty() && u.transform_of.is_empty() { "—" }
                                        @for id in &u.subscriber_of { div { "subscriber: " a href={ "/console/subscriptions/" (seg(id)) } { (id) } } }
                                        @for id in &u.transform_of { div { "transform of " a href={ "/console/subscriptions/" (seg(id)) } { (id) } } }
                                    }
                                    td data-label="Failures (24 h)" data-test="plugin-failures" {
                                        @if u.errors > 0 { (badge("error")) " " } (u.errors)
                                    }
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

/// Where a plugin's newest version stands: its status badge (named when it is not the active
/// version) and, when it failed, why. While it compiles, the page follows it (console.js).
fn compile_status(p: &Plugin) -> Markup {
    html! {
        @if p.latest_version != p.version { "v" (p.latest_version) " " }
        (badge(p.status.as_str()))
        @if p.status == VersionStatus::Compiling { span data-compiling {} }
        @if let Some(why) = &p.failure { div.error data-test="plugin-failure" { (why) } }
    }
}

/// The JSON the upload script reads: where to go next, or the API's reason.
fn upload_answer(result: Result<String, ApiError>) -> Response {
    match result {
        Ok(to) => Json(json!({ "redirect": to })).into_response(),
        Err(e) => {
            let message = e.to_string();
            let status = e.into_response().status();
            (status, Json(json!({ "error": message }))).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    name: Option<String>,
}

async fn upload(
    State(state): State<AppState>,
    s: Signed,
    Query(uq): Query<UploadQuery>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let result = async {
        let body = body.map_err(crate::api::extract::body_error)?;
        let name = uq.name.unwrap_or_default().trim().to_string();
        api_rules::check_name(&name)?;
        let now = now_ms();
        let plugin = Plugin {
            id: new_id("plg"),
            account_id: s.account.clone(),
            name,
            config: BTreeMap::new(),
            secret_keys: Default::default(),
            allowed_hosts: Vec::new(),
            limits: PluginLimits::default(),
            log_level: LogLevel::default(),
            instances: Default::default(),
            version: 1,
            latest_version: 1,
            status: VersionStatus::Compiling,
            failure: None,
            created_at: now,
            updated_at: now,
        };
        let plugin = state
            .plugins
            .create(&state.store, plugin, body.to_vec())
            .await?;
        Ok(format!(
            "/console/plugins/{}?done=uploaded",
            seg(&plugin.id)
        ))
    }
    .await;
    upload_answer(result)
}

async fn upload_version(
    State(state): State<AppState>,
    s: Signed,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let result = async {
        let body = body.map_err(crate::api::extract::body_error)?;
        let plugin = state
            .plugins
            .new_version(&state.store, s.account.clone(), id, body.to_vec())
            .await?;
        Ok(format!("/console/plugins/{}?done=version", seg(&plugin.id)))
    }
    .await;
    upload_answer(result)
}

/// One limit in the settings form: (field, label, override, default, ceiling).
type LimitRow = (
    &'static str,
    &'static str,
    Option<u32>,
    Option<u32>,
    Option<u32>,
);

fn limit_rows(current: &PluginLimits) -> [LimitRow; 7] {
    [
        (
            "memory_mb",
            "Memory (MiB)",
            current.memory_mb,
            DEFAULTS.memory_mb,
            CEILING.memory_mb,
        ),
        (
            "deadline_ms",
            "Deadline (ms)",
            current.deadline_ms,
            DEFAULTS.deadline_ms,
            CEILING.deadline_ms,
        ),
        (
            "send_messages",
            "send-message calls",
            current.send_messages,
            DEFAULTS.send_messages,
            CEILING.send_messages,
        ),
        (
            "kv_value_bytes",
            "Key-value value (bytes)",
            current.kv_value_bytes,
            DEFAULTS.kv_value_bytes,
            CEILING.kv_value_bytes,
        ),
        (
            "kv_keys",
            "Key-value keys",
            current.kv_keys,
            DEFAULTS.kv_keys,
            CEILING.kv_keys,
        ),
        (
            "log_bytes",
            "Log bytes per call",
            current.log_bytes,
            DEFAULTS.log_bytes,
            CEILING.log_bytes,
        ),
        (
            "replace_bytes",
            "Replace payload (bytes)",
            current.replace_bytes,
            DEFAULTS.replace_bytes,
            CEILING.replace_bytes,
        ),
    ]
}

async fn show(
    State(state): State<AppState>,
    s: Signed,
    Path(id): Path<String>,
    Query(d): Query<Done>,
) -> Page {
    plugin_page(
        &state,
        &s,
        &id,
        done_notice(d.done.as_deref()),
        None,
        StatusCode::OK,
    )
    .await
}

async fn plugin_page(
    state: &AppState,
    s: &Signed,
    id: &str,
    notice: Option<&str>,
    error: Option<String>,
    status: StatusCode,
) -> Page {
    let plugin = state
        .store
        .get_plugin(s.account.clone(), id.to_string())
        .await?;
    let versions = state
        .store
        .plugin_versions(s.account.clone(), id.to_string())
        .await?;
    let logs = state
        .store
        .plugin_logs(s.account.clone(), id.to_string(), 100)
        .await?;
    let uses = state
        .store
        .plugin_uses(s.account.clone(), now_ms() - 24 * 3_600_000)
        .await?
        .remove(id)
        .unwrap_or_default();
    let webhooks: Vec<_> = state
        .store
        .list_subscriptions(s.account.clone(), 250, None)
        .await?
        .items
        .into_iter()
        .filter(|sub| sub.url.is_some())
        .collect();
    let recent = state
        .store
        .search_events(s.account.clone(), Default::default(), 20, None)
        .await?
        .items;
    let pid = seg(&plugin.id);
    let csrf = &s.csrf;
    // Secret values are shown masked; the mask posted back keeps them (plugin_config::apply).
    let config_text: String = plugin_config::masked(&plugin.config, &plugin.secret_keys)
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let secret_keys_text = plugin
        .secret_keys
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let body = html! {
        (layout::notice(notice))
        @if let Some(error) = &error { p.error role="alert" data-test="plugin-error" { (error) } }
        dl.kv {
            dt { "Id" } dd.mono { (plugin.id) }
            dt { "Active version" } dd data-test="plugin-version" { "v" (plugin.version) }
            dt { "Status" } dd data-test="plugin-status" data-compile-status="plugin" { (compile_status(&plugin)) }
            dt { "Attached to" } dd data-test="plugin-attached" {
                @if uses.subscriber_of.is_empty() && uses.transform_of.is_empty() { "nothing yet" }
                @for sid in &uses.subscriber_of { div { "subscriber: " a href={ "/console/subscriptions/" (seg(sid)) } { (sid) } } }
                @for sid in &uses.transform_of { div { "transform of " a href={ "/console/subscriptions/" (seg(sid)) } { (sid) } } }
            }
            dt { "Failures (24 h)" } dd { (uses.errors) }
        }
        (super::plugin_test::section(&plugin, csrf, &recent))
        h2 { "Versions" }
        div.table-wrap {
            table.responsive data-test="plugin-versions" {
                thead { tr { th { "Version" } th { "Status" } th { "Uploaded" } th { "Size" } th { "SHA-256" } } }
                tbody {
                    @for v in &versions {
                        tr {
                            td data-label="Version" { "v" (v.version) @if v.version == plugin.version && v.status == VersionStatus::Ready { " " (badge("active")) } }
                            td.wrap data-label="Status" data-compile-status={ "v" (v.version) } {
                                (badge(v.status.as_str()))
                                @if let Some(why) = &v.failure { div.error { (why) } }
                            }
                            td data-label="Uploaded" { (layout::time(v.created_at)) }
                            td data-label="Size" { (v.size_bytes) " bytes" }
                            td.mono.wrap data-label="SHA-256" { (v.sha256) }
                        }
                    }
                }
            }
        }
        section.card {
            h3 { "Upload a new version" }
            (upload_zone(&format!("/console/plugins/{pid}/versions"), false, "New version (.wasm)"))
        }
        h2 { "Settings" }
        form.card method="post" action={ "/console/plugins/" (pid) "/settings" } data-test="plugin-settings" {
            (csrf_input(csrf))
            label for="p-name" { "Name" }
            input #p-name type="text" name="name" value=(plugin.name) required maxlength="100";
            label for="p-config" { "Config (one key=value per line; the plugin reads it with config-get)" }
            textarea #p-config name="config" rows="4" data-test="plugin-config" { (config_text) }
            label for="p-secret-keys" { "Secret keys (comma-separated): their values are encrypted at rest and shown as " (plugin_config::MASK) "; leave the mask in place to keep a value" }
            input #p-secret-keys type="text" name="secret_keys" value=(secret_keys_text) data-test="plugin-secret-keys";
            label for="p-hosts" { "Allowed hosts for outgoing HTTP (one per line, e.g. api.example.com or *.example.com)" }
            textarea #p-hosts name="allowed_hosts" rows="2" data-test="plugin-hosts" { (plugin.allowed_hosts.join("\n")) }
            fieldset {
                legend { "Limits per event (empty: the default)" }
                @for (key, label, value, default, ceiling) in limit_rows(&plugin.limits) {
                    label for={ "l-" (key) } { (label) }
                    input id={ "l-" (key) } type="number" min="0" max=[ceiling] name={ "limit_" (key) }
                        value=[value] placeholder=[default.map(|d| format!("default {d}"))] data-test={ "limit-" (key) };
                    p.hint { "Default " (default.unwrap_or(0)) ", ceiling on this server " (ceiling.unwrap_or(0)) "." }
                }
            }
            label for="p-level" { "Log level (lines below it are not kept; failures always are)" }
            select #p-level name="log_level" data-test="plugin-log-level" {
                @for l in [LogLevel::Trace, LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error] {
                    option value=(l.as_str()) selected[plugin.log_level == l] { (l.as_str()) }
                }
            }
            label for="p-instances" { "Instances (reuse: an instance serves further events of the same subscription, keeping its globals and heap; see the README)" }
            select #p-instances name="instances" data-test="plugin-instances" {
                option value="per_event" selected[plugin.instances == InstanceMode::PerEvent] { "per_event: a fresh instance per event" }
                option value="reuse" selected[plugin.instances == InstanceMode::Reuse] { "reuse" }
            }
            div.actions { button type="submit" data-test="save-settings" { "Save settings" } }
        }
        h2 { "Attach" }
        div.card {
            form method="post" action={ "/console/plugins/" (pid) "/attach" } data-test="attach-subscriber" {
                (csrf_input(csrf))
                input type="hidden" name="as" value="subscriber";
                fieldset {
                    legend { "As a subscriber of these event types" }
                    label { input type="checkbox" name="all_types" value="*" data-all-types; "All event types" }
                    @for t in KNOWN_TYPES {
                        label { input type="checkbox" name="event_type" value=(t) data-event-type checked[*t == "message:created"]; (t) }
                    }
                }
                button.secondary type="submit" data-test="attach-as-subscriber" { "Subscribe the plugin" }
            }
            form method="post" action={ "/console/plugins/" (pid) "/attach" } data-test="attach-transform" {
                (csrf_input(csrf))
                input type="hidden" name="as" value="transform";
                label for="attach-webhook" { "As the transform of a webhook" }
                select #attach-webhook name="subscription_id" data-test="attach-webhook" {
                    @for sub in &webhooks {
                        option value=(sub.id) { (sub.url.as_deref().unwrap_or_default()) " (" (sub.id) ")" }
                    }
                }
                div.actions {
                    button.secondary type="submit" disabled[webhooks.is_empty()] data-test="attach-as-transform" { "Attach as transform" }
                }
            }
        }
        h2 #logs { "Logs" }
        p {
            label.live {
                input type="checkbox" data-live="log" data-live-url={ "/v1/stream?plugin_id=" (q(&plugin.id)) }
                    data-live-target="logs-body" data-live-status="logs-live-status" data-test="live-toggle";
                "Live tail"
            }
            " " span #logs-live-status.hint role="status" {}
        }
        div.table-wrap {
            table.responsive data-test="plugin-logs" {
                thead { tr { th { "At" } th { "Level" } th { "Event" } th { "Message" } } }
                tbody #logs-body {
                    @for l in &logs {
                        tr data-test="log-row" {
                            td data-label="At" { (layout::time(l.at)) }
                            td data-label="Level" { (badge(&l.level)) }
                            td.wrap data-label="Event" {
                                @match &l.event_id {
                                    Some(e) => a href={ "/console/events/" (seg(e)) } { (e) },
                                    None => "—",
                                }
                            }
                            td.wrap.mono data-label="Message" data-test="log-message" { (l.message) }
                        }
                    }
                }
            }
        }
        @if logs.is_empty() { p data-empty-for="logs-body" { "No log lines yet." } }
        h2 { "Delete" }
        details.confirm {
            summary data-test="delete-plugin" { "Delete this plugin" }
            p { "Delete the plugin and all its versions? A plugin that a subscription uses cannot be deleted." }
            form method="post" action={ "/console/plugins/" (pid) "/delete" } {
                (csrf_input(csrf))
                button.danger type="submit" data-test="delete-plugin-confirm" { "Yes, delete it" }
            }
        }
    };
    let title = format!("Plugin {}", plugin.name);
    Ok((status, layout::page(csrf, &title, Nav::Plugins, body)).into_response())
}

/// The settings form, checked as `PATCH /v1/plugins/{id}` checks them.
/// A plugin's settings as submitted.
struct Settings {
    name: String,
    config: BTreeMap<String, String>,
    secret_keys: BTreeSet<String>,
    hosts: Vec<String>,
    limits: PluginLimits,
    level: LogLevel,
    /// Unchanged when the form has no such field.
    instances: Option<InstanceMode>,
}

fn parse_settings(f: &Fields) -> Result<Settings, ApiError> {
    let name = f.text("name").unwrap_or_default();
    api_rules::check_name(&name)?;
    let mut config = BTreeMap::new();
    for (i, line) in f.get("config").unwrap_or_default().lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| ApiError::invalid(format!("config, line {}: write key=value", i + 1)))?;
        config.insert(k.trim().to_string(), v.trim().to_string());
    }
    api_rules::check_config(&config)?;
    let secret_keys: BTreeSet<String> = f
        .get("secret_keys")
        .unwrap_or_default()
        .split(['\n', ','])
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    api_rules::check_secret_keys(&secret_keys)?;
    let hosts: Vec<String> = f
        .get("allowed_hosts")
        .unwrap_or_default()
        .split(['\n', ','])
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    api_rules::check_hosts(&hosts)?;
    let num = |key: &str| -> Result<Option<u32>, ApiError> {
        match f.text(&format!("limit_{key}")) {
            None => Ok(None),
            Some(v) => v
                .parse::<u32>()
                .map(Some)
                .map_err(|_| ApiError::invalid(format!("limits.{key}: a whole number"))),
        }
    };
    let limits = PluginLimits {
        memory_mb: num("memory_mb")?,
        deadline_ms: num("deadline_ms")?,
        send_messages: num("send_messages")?,
        kv_value_bytes: num("kv_value_bytes")?,
        kv_keys: num("kv_keys")?,
        log_bytes: num("log_bytes")?,
        replace_bytes: num("replace_bytes")?,
    };
    limits::validate(&limits).map_err(ApiError::invalid)?;
    let level = f
        .get("log_level")
        .and_then(|l| LogLevel::parse(&l))
        .unwrap_or_default();
    let instances = match f.get("instances") {
        None => None,
        Some(m) => Some(
            InstanceMode::parse(&m)
                .ok_or_else(|| ApiError::invalid("instances: one of per_event, reuse"))?,
        ),
    };
    Ok(Settings {
        name,
        config,
        secret_keys,
        hosts,
        limits,
        level,
        instances,
    })
}

async fn settings(
    State(state): State<AppState>,
    s: Signed,
    Path(id): Path<String>,
    fields: Fields,
) -> Page {
    let Settings {
        name,
        config,
        secret_keys,
        hosts,
        limits: plugin_limits,
        level,
        instances,
    } = match parse_settings(&fields) {
        Ok(v) => v,
        Err(e) => {
            return plugin_page(
                &state,
                &s,
                &id,
                None,
                Some(e.to_string()),
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    let plugin = state
        .store
        .update_plugin(s.account.clone(), id, move |p| {
            p.name = name;
            plugin_config::apply(p, Some(config), Some(secret_keys));
            p.allowed_hosts = hosts;
            p.limits = plugin_limits;
            p.log_level = level;
            if let Some(mode) = instances {
                p.instances = mode;
            }
            p.updated_at = now_ms();
        })
        .await?;
    state.plugins.registry.update_settings(&plugin);
    Ok(Redirect::to(&format!("/console/plugins/{}?done=saved", seg(&plugin.id))).into_response())
}

async fn attach(
    State(state): State<AppState>,
    s: Signed,
    Path(id): Path<String>,
    fields: Fields,
) -> Page {
    // The plugin must be this account's (a 404 otherwise).
    state
        .store
        .get_plugin(s.account.clone(), id.clone())
        .await?;
    let result: Result<&str, ConsoleError> = async {
        if fields.get("as").as_deref() == Some("transform") {
            let sub_id = fields
                .text("subscription_id")
                .ok_or_else(|| ApiError::invalid("choose a webhook"))?;
            let patch = UpdateSubscription {
                transform_plugin_id: Some(Some(id.clone())),
                ..Default::default()
            };
            state
                .store
                .update_subscription(s.account.clone(), sub_id, move |sub| {
                    rules::apply_update(sub, patch).map_err(StoreError::Conflict)
                })
                .await
                .map_err(|e| match e {
                    StoreError::Conflict(m) => ConsoleError::Api(ApiError::invalid(m)),
                    other => other.into(),
                })?;
            Ok("transform")
        } else {
            let event_types = if fields.checked("all_types") {
                vec!["*".to_string()]
            } else {
                fields.all("event_type")
            };
            let req = CreateSubscription {
                url: None,
                plugin_id: Some(id.clone()),
                transform_plugin_id: None,
                description: String::new(),
                event_types,
                headers: BTreeMap::new(),
                format: Default::default(),
                verify: false,
                rate_limit_per_second: None,
                max_in_flight: None,
                ordering: None,
            };
            let sub = rules::build(&s.account, req, &state.net_policy)?;
            debug_assert_eq!(sub.status, SubscriptionStatus::Active);
            state.store.create_subscription(sub).await?;
            Ok("subscriber")
        }
    }
    .await;
    match result {
        Ok(done) => {
            Ok(Redirect::to(&format!("/console/plugins/{}?done={done}", seg(&id))).into_response())
        }
        Err(ConsoleError::Api(e)) => {
            plugin_page(
                &state,
                &s,
                &id,
                None,
                Some(e.to_string()),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
        Err(e) => Err(e),
    }
}

async fn delete(State(state): State<AppState>, s: Signed, Path(id): Path<String>) -> Page {
    match state
        .plugins
        .delete(&state.store, s.account.clone(), id.clone())
        .await
    {
        Ok(()) => Ok(Redirect::to("/console/plugins?done=deleted").into_response()),
        Err(e) => match ApiError::from(e) {
            ApiError::Conflict(reason) => {
                plugin_page(
                    &state,
                    &s,
                    &id,
                    None,
                    Some(format!("Not deleted: {reason}")),
                    StatusCode::CONFLICT,
                )
                .await
            }
            other => Err(other.into()),
        },
    }
}
