//! `POST /v1/trials/start` (`DOMAIN.md` §8). A denial answers with its code; the rate limit
//! answers 429 with `Retry-After` and `details.retry_after_seconds`.

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, IdempotencyKey};
use super::licensing::metadata;
use super::AppState;
use crate::flows::trials::start_trial;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this area.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(start))
}

/// What a trial start sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StartTrialRequest {
    org_id: String,
}

/// `POST /v1/trials/start`.
#[utoipa::path(post, path = "/v1/trials/start", tag = "hosted", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer exactly what the first request did")),
    request_body = StartTrialRequest,
    responses(
        (status = 201, description = "`{org_id, trial_started_at, trial_ends_at, plan_version, max_monitored_systems}`"),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 409, description = "`trial_signup_required` (`details.action_url`), `trial_not_available`, `trial_already_used`", body = ErrorBody),
        (status = 429, description = "`trial_rate_limited` with `Retry-After`", body = ErrorBody)))]
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
