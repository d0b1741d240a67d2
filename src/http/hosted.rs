//! `POST /api/entitlements/refresh` (`DOMAIN.md` §10): a hosted tenant runtime trades its refresh
//! token for a signed entitlement lease. 401 for an unknown token or a host mismatch; 410 when no
//! lease can be issued (tenant inactive, non-granting subscription).

use super::error::ApiError;
use super::extract::{ApiJson, IdempotencyKey};
use super::licensing::metadata;
use super::AppState;
use crate::flows::hosted::{refresh_lease, LeaseRefreshRequest};
use axum::extract::State;
use axum::routing::post;
use axum::Json;
use axum::Router;
use serde_json::{json, Value};

/// The routes of this area.
pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/entitlements/refresh", post(refresh))
}

/// `POST /api/entitlements/refresh`.
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
