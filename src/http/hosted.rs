//! `POST /api/entitlements/refresh` (`DOMAIN.md` §10): a hosted tenant runtime trades its refresh
//! token for a signed entitlement lease. 401 for an unknown token or a host mismatch; 410 when no
//! lease can be issued (tenant inactive, non-granting subscription).

use super::error::ApiError;
use super::extract::ApiJson;
use super::licensing::metadata;
use super::AppState;
use crate::hosted::refresh_lease;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// What a lease refresh sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RefreshRequest {
    org_id: String,
    instance_host: String,
    entitlement_refresh_token: String,
}

/// `POST /api/entitlements/refresh`.
pub(super) async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<Json<Value>, ApiError> {
    let jwt = refresh_lease(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        &request.org_id,
        &request.instance_host,
        &request.entitlement_refresh_token,
        metadata("tenant", &headers),
    )
    .await
    .map_err(|error| ApiError::flow(error, &headers))?;
    Ok(Json(json!({ "entitlement_jwt": jwt })))
}
