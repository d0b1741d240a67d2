//! `POST /api/entitlements/refresh` (`DOMAIN.md` §10): a hosted tenant runtime trades its refresh
//! token for a signed entitlement lease. 401 for an unknown token or a host mismatch; 410 when no
//! lease can be issued (tenant inactive, non-granting subscription).

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, IdempotencyKey};
use super::licensing::metadata;
use super::AppState;
use crate::flows::hosted::{refresh_lease, LeaseRefreshRequest};
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this area.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(refresh))
}

/// `POST /api/entitlements/refresh`.
#[utoipa::path(post, path = "/api/entitlements/refresh", tag = "hosted", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer exactly what the first request did")),
    request_body = LeaseRefreshRequest,
    responses(
        (status = 200, description = "`{entitlement_jwt}`: the signed lease"),
        (status = 401, description = "`lease_token_invalid`: unknown token, other org or host", body = ErrorBody),
        (status = 410, description = "`lease_unavailable` (`details.reason`)", body = ErrorBody)))]
pub(super) async fn refresh(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(request): ApiJson<LeaseRefreshRequest>,
) -> Result<Json<Value>, ApiError> {
    let jwt = refresh_lease(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        &request,
        key.as_deref(),
        metadata("tenant"),
    )
    .await?;
    Ok(Json(json!({ "entitlement_jwt": jwt })))
}
