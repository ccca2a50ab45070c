//! Operations: `/healthz`, `/readyz`, `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};
use crate::metrics::{BackendLabels, CircuitLabels, PoolLabels};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Serialize, ToSchema)]
struct Health {
    status: &'static str,
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "ops", responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Readiness: the database answers (within 2 s: a database that is away or unreachable makes
/// the node not ready, so a load balancer sends traffic elsewhere until it is back).
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Health>, ApiError> {
    let answered = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping());
    if answered.await.unwrap_or(false) {
        Ok(axum::Json(Health { status: "ready" }))
    } else {
        Err(ApiError::Unavailable("the database does not answer".into()))
    }
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "ops",
    responses((status = 200, body = String, content_type = "application/openmetrics-text",
        description = "OpenMetrics text (`version=1.0.0`), which Prometheus reads")))]
async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(depth) = state.store.queue_depth().await {
        state.metrics.queue_depth.set(depth);
    }
    state
        .metrics
        .database_backend
        .get_or_create(&BackendLabels {
            backend: state.store.backend_name().into(),
        })
        .set(1);
    if let Some(pool) = state.store.pool_status() {
        for (name, value) in [
            ("max", pool.max_size),
            ("open", pool.size),
            ("idle", pool.available),
            ("waiting", pool.waiting),
        ] {
            state
                .metrics
                .database_pool
                .get_or_create(&PoolLabels { state: name.into() })
                .set(value as i64);
        }
    }
    if let Ok(tripped) = state.store.tripped_circuits().await {
        let now = crate::clock::now_ms();
        state.metrics.circuit_next_probe.clear();
        for (subscription, circuit) in tripped {
            let state_label = if circuit.next_probe_at.is_some_and(|t| t > now) {
                "open"
            } else {
                "half_open"
            };
            state
                .metrics
                .circuit_next_probe
                .get_or_create(&CircuitLabels {
                    subscription,
                    state: state_label.into(),
                })
                .set(circuit.next_probe_at.unwrap_or(now) / 1000);
        }
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
