//! Operational routes: liveness (`/healthz`), readiness (`/readyz`) and metrics (`/metrics`).

use super::error::ErrorBody;
use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this area.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Liveness: the process answers. Touches nothing else, so a slow database never restarts it.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`: the process answers")))]
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Longest `/readyz` takes: a database that does not answer within it is reported unreachable.
const READINESS_CHECK_MAX: Duration = Duration::from_secs(2);

/// Readiness: the database answers and every projection is within the lag bound, decided within
/// [`READINESS_CHECK_MAX`].
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "The database answers and every projection is within the lag bound"),
    (status = 503, description = "`not_ready`", body = ErrorBody)))]
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(READINESS_CHECK_MAX, readiness(&state)).await {
        Ok(answer) => answer,
        Err(_) => {
            tracing::warn!("readiness: the database did not answer in time");
            ApiError::new(ErrorCode::NotReady, "The database did not answer in time.")
                .with_details(json!({ "database": "unreachable" }))
                .into_response()
        }
    }
}

async fn readiness(state: &AppState) -> Response {
    let not_ready = |message: &str, details: serde_json::Value| {
        ApiError::new(ErrorCode::NotReady, message)
            .with_details(details)
            .into_response()
    };
    if let Err(error) = state.store.ping().await {
        tracing::warn!(%error, "readiness: database unreachable");
        return not_ready(
            "The database is unreachable.",
            json!({ "database": "unreachable" }),
        );
    }
    let (head, lags) = match Metrics::lags(state.store.as_ref(), &state.projections).await {
        Ok(lags) => lags,
        Err(error) => {
            tracing::warn!(%error, "readiness: cannot read projection checkpoints");
            return not_ready(
                "Projection checkpoints cannot be read.",
                json!({ "database": "error" }),
            );
        }
    };
    let projections: Vec<_> = lags
        .iter()
        .map(|(name, lag)| json!({ "name": name, "lag_positions": lag, "ready": *lag <= state.readiness_lag_max }))
        .collect();
    let details = json!({ "database": "ok", "head_position": head, "lag_max": state.readiness_lag_max, "projections": projections });
    if lags.iter().any(|(_, lag)| *lag > state.readiness_lag_max) {
        return not_ready(
            "A projection is further behind the log than the readiness bound.",
            details,
        );
    }
    (
        StatusCode::OK,
        Json(json!({ "status": "ready", "details": details })),
    )
        .into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text: positions, lags, batches, errors, leadership, mail outcomes", content_type = "text/plain")))]
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    match state
        .metrics
        .render(state.store.as_ref(), &state.projections)
        .await
    {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => ApiError::internal(&error).into_response(),
    }
}
