//! `POST /v1/trials/start` (`DOMAIN.md` §8). A denial answers with its code; the rate limit
//! answers 429 with `Retry-After` and `details.retry_after_seconds`.

use super::error::ApiError;
use super::extract::{ApiJson, IdempotencyKey};
use super::licensing::metadata;
use super::AppState;
use crate::flows::trials::start_trial;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Json;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

/// The routes of this area.
pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/trials/start", post(start))
}

/// What a trial start sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StartTrialRequest {
    org_id: String,
}

/// `POST /v1/trials/start`.
pub(super) async fn start(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(request): ApiJson<StartTrialRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let signup_url = format!("{}/portal/signup", state.public_url.trim_end_matches('/'));
    let trial = start_trial(
        state.store.as_ref(),
        &state.catalog,
        &request.org_id,
        &signup_url,
        key.as_deref(),
        metadata("organisation"),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "org_id": request.org_id,
            "trial_started_at": trial.trial_started_at,
            "trial_ends_at": trial.trial_ends_at,
            "plan_version": aggregates::trial::TRIAL_PLAN,
            "max_monitored_systems": state.catalog.max_monitored_systems(Some(aggregates::trial::TRIAL_PLAN)),
        })),
    ))
}
