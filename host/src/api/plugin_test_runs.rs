//! `POST /v1/plugins/{id}/test`: runs a plugin's active version on an event without side
//! effects, and answers with everything it did (a dry run, `crate::plugins::dry_run`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AccountId;
use super::extract::{ApiJson, ApiPath};
use crate::error::{ApiError, ErrorBody, NotFoundAs};
use crate::events::{self, EventIn};
use crate::model::{Event, PluginLogLine};
use crate::plugin_services::StoreKv;
use crate::plugins::dry_run::{DryRunReport, KvWrite};
use crate::plugins::invoke::Input;
use crate::plugins::services::HttpRequest;
use crate::plugins::{Decision, InvokeError};
use crate::state::AppState;

/// The subscription id a test run's event arrives through.
pub const TEST_SUBSCRIPTION_ID: &str = "sub_test";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(test_run))
}

/// Body of `POST /v1/plugins/{id}/test`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRunIn {
    /// The event, as `POST /v1/events` takes it (`type`, `payload`, and optionally `id` and
    /// `occurred_at`); it is not stored.
    pub event: EventIn,
    /// Configuration for this run only, merged over the plugin's stored configuration.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// What the plugin decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestDecision {
    /// Deliver unchanged.
    Keep,
    /// Deliver `payload` instead.
    Replace,
    /// Deliver nothing.
    Drop,
    /// The invocation failed; `error` says why.
    Error,
}

/// Why a test run failed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TestError {
    /// `handler` (the plugin returned an error), `trap` (a panic, an abort, a stack overflow),
    /// `deadline`, `limit` (memory, or the replacement's size), `invalid_output` (a
    /// replacement that is not a JSON object) or `not_loaded`.
    pub kind: String,
    /// The reason, as a delivery attempt records it.
    pub message: String,
    /// Whether a delivery would be retried.
    pub retryable: bool,
}

/// Bytes of the key-value store: the text when it is UTF-8, else `{"base64": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum KvBytes {
    /// UTF-8 text.
    Text(String),
    /// Anything else.
    Binary {
        /// Standard base64.
        base64: String,
    },
}

impl KvBytes {
    fn of(bytes: Vec<u8>) -> KvBytes {
        match String::from_utf8(bytes) {
            Ok(text) => KvBytes::Text(text),
            Err(e) => KvBytes::Binary {
                base64: STANDARD.encode(e.into_bytes()),
            },
        }
    }
}

/// A `send-message` call, captured: nothing was sent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SentMessageOut {
    /// The conversation.
    pub conversation_id: String,
    /// The text.
    pub text: String,
    /// The made-up id the plugin got back (`dry-run-...`).
    pub message_id: String,
}

/// A key-value write, captured: applied to the run's own view only, never stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KvWriteOut {
    /// `set`, `delete`, `increment` or `set_if`.
    pub op: String,
    /// The key.
    pub key: String,
    /// The value written (`set`, `set_if`) or the counter's new value (`increment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<KvBytes>,
    /// What `increment` added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<i64>,
    /// What `set_if` required (`null`: absent); present for `set_if` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Option<KvBytes>>,
    /// Whether `set_if` wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<bool>,
    /// Why the write was refused (the limits of the real store apply), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<KvWrite> for KvWriteOut {
    fn from(w: KvWrite) -> KvWriteOut {
        let base = |op: &str, key: String| KvWriteOut {
            op: op.into(),
            key,
            value: None,
            delta: None,
            expected: None,
            written: None,
            error: None,
        };
        match w {
            KvWrite::Set {
                key,
                value,
                refused,
            } => KvWriteOut {
                value: Some(KvBytes::of(value)),
                error: refused.map(|r| r.to_string()),
                ..base("set", key)
            },
            KvWrite::Delete { key } => base("delete", key),
            KvWrite::Increment { key, delta, result } => KvWriteOut {
                delta: Some(delta),
                value: result.as_ref().ok().map(|n| KvBytes::Text(n.to_string())),
                error: result.err().map(|r| r.to_string()),
                ..base("increment", key)
            },
            KvWrite::SetIf {
                key,
                expected,
                value,
                result,
            } => KvWriteOut {
                value: Some(KvBytes::of(value)),
                expected: Some(expected.map(KvBytes::of)),
                written: result.as_ref().ok().copied(),
                error: result.err().map(|r| r.to_string()),
                ..base("set_if", key)
            },
        }
    }
}

/// An outgoing `wasi:http` request the plugin made (these are really sent, to allowed hosts
/// only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HttpRequestOut {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The URL.
    pub url: String,
    /// The response status, when one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why none came: refused (`allowed_hosts`, network policy) or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<HttpRequest> for HttpRequestOut {
    fn from(r: HttpRequest) -> HttpRequestOut {
        HttpRequestOut {
            method: r.method,
            url: r.url,
            status: r.status,
            error: r.error,
        }
    }
}

/// The result of a test run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TestRunOut {
    /// `keep`, `replace`, `drop`, or `error`.
    pub decision: TestDecision,
    /// The replacement payload, when `replace`.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Box<RawValue>>,
    /// Log lines at the plugin's `log_level` (log calls, stdout, stderr, refusals, the failure);
    /// not written to the plugin's log.
    pub logs: Vec<PluginLogLine>,
    /// `send-message` calls, captured.
    pub sent_messages: Vec<SentMessageOut>,
    /// Key-value writes, captured.
    pub kv_writes: Vec<KvWriteOut>,
    /// Outgoing HTTP requests.
    pub http_requests: Vec<HttpRequestOut>,
    /// How long the invocation took (instantiation and handler), in microseconds.
    pub duration_us: u64,
    /// Why it failed, when `decision` is `error`.
    pub error: Option<TestError>,
}

impl From<DryRunReport> for TestRunOut {
    fn from(report: DryRunReport) -> TestRunOut {
        let (decision, payload, error) = match report.result {
            Ok(Decision::Keep) => (TestDecision::Keep, None, None),
            Ok(Decision::Replace(p)) => (TestDecision::Replace, Some(p), None),
            Ok(Decision::Drop) => (TestDecision::Drop, None, None),
            Err(InvokeError {
                kind,
                message,
                retryable,
            }) => {
                let error = TestError {
                    kind: kind.as_str().into(),
                    message,
                    retryable,
                };
                (TestDecision::Error, None, Some(error))
            }
        };
        let c = report.captured;
        TestRunOut {
            decision,
            payload,
            logs: c.logs,
            sent_messages: c
                .sent_messages
                .into_iter()
                .map(|m| SentMessageOut {
                    conversation_id: m.conversation_id,
                    text: m.text,
                    message_id: m.message_id,
                })
                .collect(),
            kv_writes: c.kv_writes.into_iter().map(KvWriteOut::from).collect(),
            http_requests: c.http_requests.into_iter().map(Into::into).collect(),
            duration_us: u64::try_from(report.duration.as_micros()).unwrap_or(u64::MAX),
            error,
        }
    }
}

/// Run a plugin on an event without side effects: the active version, its limits and its
/// configuration (with `config` merged over it for this run). `send-message` calls and
/// key-value writes are captured and returned, not performed (key-value reads see the plugin's
/// real store overlaid with the run's own writes); log lines are returned, not written to the
/// plugin's log. Outgoing HTTP still reaches the plugin's `allowed_hosts` (and nothing else).
/// A few runs go at once per server; a run waits for a free slot up to 10 s (then 503). A
/// plugin with no version that runs yet (its first one compiling, or failed) is a 409 saying so.
#[utoipa::path(post, path = "/v1/plugins/{id}/test", operation_id = "test_plugin", tag = "plugins", request_body = TestRunIn,
    params(("id" = String, Path, description = "Plugin id")), security(("api_key" = [])),
    responses((status = 200, body = TestRunOut), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody,
            description = "The plugin has no version that runs: compiling, or failed"),
        (status = 503, body = ErrorBody)))]
async fn test_run(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<TestRunIn>,
) -> Result<Json<TestRunOut>, ApiError> {
    run(&state, &account, id, req).await.map(Json)
}

/// Runs a test of the account's plugin `id` (what `POST /v1/plugins/{id}/test` answers; the web
/// console's Test run calls it too).
pub async fn run(
    state: &AppState,
    account: &str,
    id: String,
    req: TestRunIn,
) -> Result<TestRunOut, ApiError> {
    let account = account.to_string();
    let plugin = state
        .store
        .get_plugin(account.clone(), id)
        .await
        .or_not_found("plugin")?;
    super::plugins::check_config(&req.config)?;
    let e = events::prepare(
        &account,
        req.event,
        None,
        state.config.max_event_bytes,
        "event.",
    )?;
    let event = Event {
        seq: 0,
        id: e.id,
        event_type: e.event_type,
        payload: e.payload,
        occurred_at: e.occurred_at,
        received_at: e.received_at,
        causation: None,
    };
    let Some(loaded) = state.plugins.registry.get(&plugin.id) else {
        use crate::plugins::registry::Unloaded;
        return Err(ApiError::Conflict(
            match state.plugins.registry.unloaded(&plugin.id) {
                Some(Unloaded::Compiling(v)) => format!(
                    "plugin {} has no version that runs yet: version {v} is still compiling; \
                 try again once the plugin's status is \"ready\"",
                    plugin.id
                ),
                Some(Unloaded::Failed(v, why)) => format!(
                    "plugin {} has no version that runs: version {v} failed to compile: {why}",
                    plugin.id
                ),
                None => format!(
                    "plugin {} is not loaded on this server (its component failed to load at start; see the server log)",
                    plugin.id
                ),
            },
        ));
    };
    let loaded = Arc::new(loaded.with_config(req.config));
    let base = Arc::new(StoreKv {
        store: state.store.clone(),
        plugin_id: plugin.id,
    });
    let input = Input {
        event: &event,
        subscription_id: TEST_SUBSCRIPTION_ID,
        attempt: 1,
    };
    let report = state
        .plugins
        .dry_run(loaded, base, input)
        .await
        .map_err(|busy| ApiError::Unavailable(busy.to_string()))?;
    Ok(report.into())
}
