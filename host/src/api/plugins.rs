//! `/v1/plugins`: upload WebAssembly components, manage their settings and versions, read
//! their logs.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AccountId;
use super::extract::{ApiJson, ApiPath, ApiQuery, WasmBody};
use super::{ListResponse, PageQuery, with_status};
use crate::clock::{new_id, now_ms};
use crate::config::Config;
use crate::error::{ApiError, ErrorBody, NotFoundAs};
use crate::model::{
    InstanceMode, LogLevel, Plugin, PluginLimits, PluginLogLine, PluginVersion, VersionStatus,
};
use crate::plugin_config;
use crate::plugins::limits;
use crate::schema::{Str, array, string_map};
use crate::state::AppState;

pub fn router(config: &Config) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload, list))
        .routes(routes!(get_one, update, replace, delete))
        .routes(routes!(versions))
        .routes(routes!(logs))
        .layer(axum::extract::DefaultBodyLimit::max(
            config.max_plugin_bytes,
        ))
}

/// A WebAssembly component, as the raw request body.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Only its schema is used: the handlers read the body as bytes.
struct Component(Vec<u8>);

/// Query of an upload.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// Display name, 1 to 100 characters.
    name: String,
    /// Configuration as a JSON object of strings (optional; also settable with PATCH).
    config: Option<String>,
    /// Comma-separated hosts outgoing HTTP may reach (optional; also settable with PATCH).
    allowed_hosts: Option<String>,
    /// Comma-separated config keys whose values are secret: encrypted at rest and shown as
    /// `"********"` (optional; also settable with PATCH).
    secret_keys: Option<String>,
}

/// Body of `PATCH /v1/plugins/{id}`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlugin {
    /// New name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = name_schema)]
    pub name: Option<String>,
    /// New configuration (replaces the whole map). For a secret key that has a value,
    /// `"********"` (what responses show) keeps that value.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = config_schema)]
    pub config: Option<BTreeMap<String, String>>,
    /// Config keys whose values are secret (replaces the set): encrypted at rest, shown as
    /// `"********"` in every response, passed in clear to the plugin.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = secret_keys_schema)]
    pub secret_keys: Option<BTreeSet<String>>,
    /// Hosts outgoing `wasi:http` may reach: names, or `*.example.com`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = hosts_schema)]
    pub allowed_hosts: Option<Vec<String>>,
    /// Limit overrides (replaces all overrides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<PluginLimits>,
    /// Keep log lines at this level and above: `trace`, `debug`, `info` (default), `warn`, `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    /// `per_event` (default): a fresh instance for every event; `reuse`: an instance serves
    /// further events of the same subscription (its globals and heap persist between them)
    /// until a discard rule throws it away. See the README's "Instance reuse".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<InstanceMode>,
}

const MAX_NAME: usize = 100;
const MAX_CONFIG_KEYS: usize = 256;
const MAX_CONFIG_KEY_BYTES: usize = 256;
const MAX_CONFIG_VALUE_BYTES: usize = 64 * 1024;
const MAX_HOSTS: usize = 64;
/// What [`check_hosts`] accepts: a host name, or `*.` and one.
const HOST_PATTERN: &str = r"^(\*\.)?[A-Za-z0-9-]([A-Za-z0-9.-]{0,251}[A-Za-z0-9-])?$";
/// Something besides spaces.
const NOT_BLANK: &str = r"\S";

fn name_schema() -> RefOr<Schema> {
    Str::new("Display name.")
        .len(1, MAX_NAME)
        .pattern(NOT_BLANK)
        .nullable()
        .build()
}

fn config_schema() -> RefOr<Schema> {
    string_map(
        "Configuration the plugin reads (`config::get`); replaces the whole map.",
        Str::new("Key").len(1, MAX_CONFIG_KEY_BYTES),
        Str::new("Value").len(0, MAX_CONFIG_VALUE_BYTES),
        MAX_CONFIG_KEYS,
        true,
    )
}

fn secret_keys_schema() -> RefOr<Schema> {
    array(
        "Config keys whose values are secret (replaces the set).",
        Str::new("A config key.")
            .len(1, MAX_CONFIG_KEY_BYTES)
            .build(),
        0,
        MAX_CONFIG_KEYS,
        true,
    )
}

fn hosts_schema() -> RefOr<Schema> {
    array(
        "Hosts outgoing `wasi:http` may reach: names, or `*.example.com`.",
        Str::new("A host name, or `*.` and one.")
            .pattern(HOST_PATTERN)
            .build(),
        0,
        MAX_HOSTS,
        true,
    )
}

/// A plugin's name: 1 to 100 characters (the console checks its forms with it too).
pub(crate) fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME {
        return Err(ApiError::invalid(format!(
            "name: 1 to {MAX_NAME} characters"
        )));
    }
    Ok(())
}

/// A plugin's configuration: at most 256 keys, bounded sizes.
pub(crate) fn check_config(config: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if config.len() > MAX_CONFIG_KEYS {
        return Err(ApiError::invalid(format!(
            "config: at most {MAX_CONFIG_KEYS} keys"
        )));
    }
    if let Some((k, _)) = config.iter().find(|(k, v)| {
        k.is_empty() || k.len() > MAX_CONFIG_KEY_BYTES || v.len() > MAX_CONFIG_VALUE_BYTES
    }) {
        return Err(ApiError::invalid(format!(
            "config: key {k:?} or its value is too long (keys 1-256 bytes, values ≤ 64 KiB)"
        )));
    }
    Ok(())
}

/// `secret_keys`: config key names, as many and as long as config keys may be.
pub(crate) fn check_secret_keys(keys: &BTreeSet<String>) -> Result<(), ApiError> {
    if keys.len() > MAX_CONFIG_KEYS {
        return Err(ApiError::invalid(format!(
            "secret_keys: at most {MAX_CONFIG_KEYS} keys"
        )));
    }
    if let Some(k) = keys
        .iter()
        .find(|k| k.is_empty() || k.len() > MAX_CONFIG_KEY_BYTES)
    {
        return Err(ApiError::invalid(format!(
            "secret_keys: {k:?} is not a config key name (1-{MAX_CONFIG_KEY_BYTES} bytes)"
        )));
    }
    Ok(())
}

/// `allowed_hosts`: at most 64 host names or `*.` patterns.
pub(crate) fn check_hosts(hosts: &[String]) -> Result<(), ApiError> {
    if hosts.len() > MAX_HOSTS {
        return Err(ApiError::invalid(format!(
            "allowed_hosts: at most {MAX_HOSTS} hosts"
        )));
    }
    for h in hosts {
        let name = h.strip_prefix("*.").unwrap_or(h);
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !name.starts_with('.')
            && !name.ends_with('.');
        if !ok {
            return Err(ApiError::invalid(format!(
                "allowed_hosts: {h:?} is not a host name (use e.g. \"api.example.com\" or \"*.example.com\")"
            )));
        }
    }
    Ok(())
}

/// Upload a plugin: the component is the raw body (`curl --data-binary @plugin.wasm`).
///
/// The component is validated in the request (a 400 names what is wrong) and compiled after
/// it: the answer is `202` with `status: "compiling"`; poll the plugin until `status` is
/// `ready` or `failed` (with `failure`). Its deliveries wait for the compilation.
#[utoipa::path(post, path = "/v1/plugins", operation_id = "upload_plugin", tag = "plugins", params(UploadQuery),
    request_body(content((Component = "application/wasm"), (Component = "application/octet-stream")),
        description = "A WebAssembly component"),
    security(("api_key" = [])),
    responses((status = 202, body = Plugin, description = "Stored and compiling"), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "quota_exceeded: plugins or plugin_bytes")))]
async fn upload(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiQuery(q): ApiQuery<UploadQuery>,
    WasmBody(body): WasmBody,
) -> Result<Response, ApiError> {
    check_name(&q.name)?;
    let config: BTreeMap<String, String> = match &q.config {
        Some(c) => super::extract::parse_json(c.as_bytes()).map_err(|e| {
            ApiError::invalid(format!("config: must be a JSON object of strings ({e})"))
        })?,
        None => BTreeMap::new(),
    };
    check_config(&config)?;
    let allowed_hosts: Vec<String> = q
        .allowed_hosts
        .as_deref()
        .map(|h| {
            h.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    check_hosts(&allowed_hosts)?;
    let secret_keys: BTreeSet<String> = q
        .secret_keys
        .as_deref()
        .map(|k| {
            k.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    check_secret_keys(&secret_keys)?;
    let now = now_ms();
    let plugin = Plugin {
        id: new_id("plg"),
        account_id: account,
        name: q.name.trim().to_string(),
        config,
        secret_keys,
        allowed_hosts,
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
    Ok(with_status(StatusCode::ACCEPTED, plugin))
}

/// List plugins, newest first.
#[utoipa::path(get, path = "/v1/plugins", operation_id = "list_plugins", tag = "plugins", params(PageQuery), security(("api_key" = [])),
    responses((status = 200, body = ListResponse<Plugin>)))]
async fn list(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<ListResponse<Plugin>>, ApiError> {
    let (limit, cursor) = q.parse()?;
    Ok(Json(
        state
            .store
            .list_plugins(account, limit, cursor)
            .await?
            .into(),
    ))
}

/// Get a plugin.
#[utoipa::path(get, path = "/v1/plugins/{id}", operation_id = "get_plugin", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")), security(("api_key" = [])),
    responses((status = 200, body = Plugin), (status = 404, body = ErrorBody)))]
async fn get_one(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Plugin>, ApiError> {
    Ok(Json(
        state
            .store
            .get_plugin(account, id)
            .await
            .or_not_found("plugin")?,
    ))
}

/// Change a plugin's name, configuration (and which of its keys are secret), allowed hosts,
/// limits, log level or instance mode (`instances`).
#[utoipa::path(patch, path = "/v1/plugins/{id}", operation_id = "update_plugin", tag = "plugins", request_body = UpdatePlugin,
    params(("id" = String, Path, description = "Plugin id")), security(("api_key" = [])),
    responses((status = 200, body = Plugin), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdatePlugin>,
) -> Result<Json<Plugin>, ApiError> {
    if let Some(n) = &req.name {
        check_name(n)?;
    }
    if let Some(c) = &req.config {
        check_config(c)?;
    }
    if let Some(k) = &req.secret_keys {
        check_secret_keys(k)?;
    }
    if let Some(h) = &req.allowed_hosts {
        check_hosts(h)?;
    }
    if let Some(l) = &req.limits {
        limits::validate(l).map_err(ApiError::invalid)?;
    }
    let plugin = state
        .store
        .update_plugin(account, id, move |p| {
            if let Some(n) = req.name {
                p.name = n.trim().to_string();
            }
            plugin_config::apply(p, req.config, req.secret_keys);
            if let Some(h) = req.allowed_hosts {
                p.allowed_hosts = h;
            }
            if let Some(l) = req.limits {
                p.limits = l;
            }
            if let Some(l) = req.log_level {
                p.log_level = l;
            }
            if let Some(mode) = req.instances {
                p.instances = mode;
            }
            p.updated_at = now_ms();
        })
        .await
        .or_not_found("plugin")?;
    state.plugins.registry.update_settings(&plugin);
    Ok(Json(plugin))
}

/// Upload a new version, validated in the request and compiled after it (`202`, `status:
/// "compiling"`, `latest_version` its number). Once `ready` it replaces the current version
/// atomically (calls in flight finish on the old one); one that `failed` never does.
#[utoipa::path(put, path = "/v1/plugins/{id}", operation_id = "replace_plugin", tag = "plugins",
    request_body(content((Component = "application/wasm"), (Component = "application/octet-stream")),
        description = "A WebAssembly component"),
    params(("id" = String, Path, description = "Plugin id")), security(("api_key" = [])),
    responses((status = 202, body = Plugin, description = "Stored and compiling"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 403, body = ErrorBody, description = "quota_exceeded: plugin_bytes")))]
async fn replace(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
    WasmBody(body): WasmBody,
) -> Result<Response, ApiError> {
    let plugin = state
        .plugins
        .new_version(&state.store, account, id, body.to_vec())
        .await?;
    Ok(with_status(StatusCode::ACCEPTED, plugin))
}

/// Delete a plugin (refused while a subscription uses it).
#[utoipa::path(delete, path = "/v1/plugins/{id}", operation_id = "delete_plugin", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")), security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.plugins.delete(&state.store, account, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A plugin's versions, newest first, each with its `status` (`compiling`, `ready`, `failed`
/// with `failure`).
#[utoipa::path(get, path = "/v1/plugins/{id}/versions", operation_id = "list_plugin_versions", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")), security(("api_key" = [])),
    responses((status = 200, body = ListResponse<PluginVersion>), (status = 404, body = ErrorBody)))]
async fn versions(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ListResponse<PluginVersion>>, ApiError> {
    let data = state
        .store
        .plugin_versions(account, id)
        .await
        .or_not_found("plugin")?;
    Ok(Json(ListResponse {
        data,
        next_cursor: None,
    }))
}

/// How many log lines to return.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// 1 to 1000 (default 100).
    #[param(schema_with = log_limit_schema)]
    limit: Option<usize>,
}

/// The most log lines one request returns.
const MAX_LOG_LINES: usize = 1000;

fn log_limit_schema() -> RefOr<Schema> {
    crate::schema::integer(
        "Lines to return (default 100).",
        Some(1),
        Some(MAX_LOG_LINES as u64),
        true,
    )
}

/// A plugin's recent log lines, newest first: `log` calls, stdout, stderr and failures.
#[utoipa::path(get, path = "/v1/plugins/{id}/logs", operation_id = "list_plugin_logs", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id"), LogQuery), security(("api_key" = [])),
    responses((status = 200, body = ListResponse<PluginLogLine>), (status = 404, body = ErrorBody)))]
async fn logs(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Json<ListResponse<PluginLogLine>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LOG_LINES).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("limit: must be 1 to {MAX_LOG_LINES}"),
        });
    }
    let data = state
        .store
        .plugin_logs(account, id, limit)
        .await
        .or_not_found("plugin")?;
    Ok(Json(ListResponse {
        data,
        next_cursor: None,
    }))
}
