//! `/v1/stream`: the account's live feed as Server-Sent Events (new events, settled attempts,
//! plugin log lines), filtered as asked. What is streamed is decided in [`crate::live`].

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::ReadingAccount;
use super::extract::ApiQuery;
use crate::error::{ApiError, ErrorBody, NotFoundAs};
use crate::events::valid_event_type;
use crate::live::{AttemptSettled, Filter, Listener, LogWritten, Message, Next};
use crate::state::AppState;

/// How often an idle stream gets a comment, so proxies and clients see it alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a disconnected `EventSource` waits before reconnecting.
const RECONNECT: Duration = Duration::from_secs(3);
/// Most event types one stream may filter on.
const MAX_TYPES: usize = 256;

#[derive(OpenApi)]
#[openapi(components(schemas(AttemptSettled, LogWritten<'_>, Lagged)))]
struct StreamDoc;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(StreamDoc::openapi()).routes(routes!(stream))
}

/// Filters of the stream.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Comma-separated event types: only events of these types, and attempts at delivering them.
    types: Option<String>,
    /// Only attempts of this subscription.
    subscription_id: Option<String>,
    /// Only this plugin's log lines, attempts of subscriptions it serves (as subscriber or
    /// transform) and events it emitted.
    plugin_id: Option<String>,
}

/// Data of a `lagged` message.
#[derive(Debug, Serialize, ToSchema)]
struct Lagged {
    /// Messages of this account the stream lost because it read too slowly.
    skipped: u64,
}

fn parse_types(raw: &str) -> Result<BTreeSet<String>, ApiError> {
    let types: BTreeSet<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if types.is_empty() || types.len() > MAX_TYPES {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("types: 1 to {MAX_TYPES} comma-separated event types"),
        });
    }
    if let Some(bad) = types.iter().find(|t| !valid_event_type(t)) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("types: {bad:?} is not an event type (^[a-z][a-z0-9_.:-]{{0,127}}$)"),
        });
    }
    Ok(types)
}

/// Stream what happens in the account as Server-Sent Events.
///
/// Messages (`event:` name, JSON `data`, increasing `id`):
/// - `event`: an event was stored (posted, sent as a message, emitted by a plugin, or
///   `subscription:disabled`), as `GET /v1/events/{id}` shows it;
/// - `attempt`: a delivery attempt settled (`AttemptSettled`);
/// - `log`: a plugin log line was written (`LogWritten`);
/// - `lagged`: the client read too slowly and lost `skipped` messages (`Lagged`); the stream goes on.
///
/// Each filter selects within the kinds it covers: `types` covers events and attempts,
/// `subscription_id` attempts, `plugin_id` log lines, attempts and events. Without filters
/// everything is sent; otherwise a message is sent when some given filter covers its kind and
/// it passes every given filter that does (`?plugin_id=p` alone: p's log lines, the attempts it
/// handled, the events it emitted). A comment is sent every 15 s while idle. Only what happens
/// after connecting is sent; nothing is replayed on reconnection (`Last-Event-ID` is ignored).
/// Besides the API key, the web console's session cookie authenticates this endpoint (it only
/// reads), so the console's `EventSource` can use it.
#[utoipa::path(get, path = "/v1/stream", operation_id = "stream", tag = "events", params(StreamQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, content_type = "text/event-stream",
            description = "`event`, `attempt`, `log` and `lagged` messages, as they happen"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    ReadingAccount(account): ReadingAccount,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let types = q.types.as_deref().map(parse_types).transpose()?;
    if let Some(id) = &q.subscription_id {
        state
            .store
            .get_subscription(account.clone(), id.clone())
            .await
            .or_not_found("subscription")?;
    }
    if let Some(id) = &q.plugin_id
        && !state
            .store
            .plugin_exists(account.clone(), id.clone())
            .await?
    {
        return Err(ApiError::NotFound("plugin".into()));
    }
    let filter = Filter {
        types,
        subscription_id: q.subscription_id,
        plugin_id: q.plugin_id,
    };
    let listener = state
        .live
        .listen(&account)
        .ok_or_else(|| ApiError::Unavailable("the server is shutting down".into()))?;
    // The first message tells the client it is subscribed: anything stored from now on is sent.
    let hello = SseEvent::default().comment("connected").retry(RECONNECT);
    let messages = futures_util::stream::unfold((listener, filter), next_message);
    let events = futures_util::StreamExt::chain(futures_util::stream::iter([Ok(hello)]), messages);
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    // Proxies such as nginx would otherwise buffer the stream.
    Ok(([("x-accel-buffering", "no")], sse).into_response())
}

type StreamState = (Listener, Filter);

async fn next_message(
    (mut listener, filter): StreamState,
) -> Option<(Result<SseEvent, Infallible>, StreamState)> {
    loop {
        let event = match listener.next().await {
            Next::Message(m) if filter.admits(&m) => sse_event(&m),
            Next::Message(_) => continue,
            Next::Lagged(skipped) => SseEvent::default()
                .event("lagged")
                .data(serde_json::to_string(&Lagged { skipped }).expect("plain data")),
            Next::Closed => return None,
        };
        return Some((Ok(event), (listener, filter)));
    }
}

fn sse_event(m: &Message) -> SseEvent {
    SseEvent::default()
        .id(m.id.to_string())
        .event(m.kind.as_str())
        .data(&m.data)
}
