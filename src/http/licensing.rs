//! Routes of self-hosted licensing (`DOMAIN.md` §5.2, §5.3): activation, grant refresh and
//! status, and the JWKS that verifies every grant. Thin: parse, call [`crate::flows::licensing`], answer.

use super::error::{current_request_id, ApiError, ErrorCode};
use super::extract::{parse_json, ApiBytes, ApiJson, Bearer, IdempotencyKey};
use super::AppState;
use crate::flows::licensing::{ActivateRequest, Licensing, SignedGrant};
use aggregates::catalog::Catalog;
use aggregates::license::IssuedLicense;
use aggregates::log::EventMetadata;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Json;
use axum::Router;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

/// The routes of this area.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/activate", post(activate))
        .route("/v1/grants/refresh", post(refresh))
        .route("/v1/grants/status", post(status))
        .route("/v1/entitlements", get(entitlements))
        .route("/v1/continuity/capture", post(capture_continuity))
        .route("/v1/licenses/exchange", post(exchange))
}

/// How often a runtime should refresh its grant, and by how much to spread refreshes (§5.2).
const RECOMMENDED_REFRESH_AFTER_SECONDS: u32 = 21_600;
const REFRESH_JITTER_PERCENT: u32 = 20;

/// Metadata of an event caused by this request.
pub(super) fn metadata(actor: &str) -> EventMetadata {
    let request = current_request_id();
    EventMetadata {
        actor: actor.to_owned(),
        causation_id: None,
        correlation_id: Some(request.clone()).filter(|r| !r.is_empty()),
        request_id: Some(request).filter(|r| !r.is_empty()),
        effective_at: Utc::now(),
    }
}

fn licensing(state: &AppState) -> Licensing<'_> {
    Licensing {
        store: state.store.as_ref(),
        bindings: &state.token_bindings,
        keys: &state.keys,
        catalog: &state.catalog,
    }
}

fn license_view(license: &IssuedLicense, catalog: &Catalog) -> Value {
    let granting = license.state.grants_paid() && license.revoked.is_none();
    json!({
        "license_id": license.license_id,
        "state": if license.revoked.is_some() { "revoked" } else { license.state.as_str() },
        "tier": catalog.plan(&license.plan_version).map(|p| p.tier.clone()),
        "features": catalog.capabilities(Some(&license.plan_version), granting),
        "license_version": license.license_version,
        "current_period_end": license.current_period_end,
    })
}

fn refresh_policy() -> Value {
    json!({ "recommended_refresh_after_sec": RECOMMENDED_REFRESH_AFTER_SECONDS, "jitter_percent": REFRESH_JITTER_PERCENT })
}

fn grant_view(grant: &SignedGrant) -> Value {
    json!({ "jwt": grant.jwt, "jti": grant.jti, "expires_at": grant.expires_at })
}

/// `GET /.well-known/jwks.json`.
pub(super) async fn jwks(State(state): State<AppState>) -> Json<Value> {
    Json(state.keys.signer.jwks())
}

/// `POST /v1/activate`.
pub(super) async fn activate(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(request): ApiJson<ActivateRequest>,
) -> Result<Json<Value>, ApiError> {
    let activation = licensing(&state)
        .activate(&request, key.as_deref(), metadata("installation"))
        .await?;
    Ok(Json(json!({
        "license": license_view(&activation.license, &state.catalog),
        "installation": {
            "installation_id": activation.installation_id,
            "installation_token": activation.installation_token.expose(),
            "status": "active",
        },
        "grant": grant_view(&activation.grant),
        "refresh_policy": refresh_policy(),
    })))
}

/// `POST /v1/grants/refresh` (Bearer installation token).
pub(super) async fn refresh(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    Bearer(token): Bearer,
) -> Result<Json<Value>, ApiError> {
    let (license, grant) = licensing(&state)
        .refresh_grant(&token, key.as_deref(), metadata("installation"))
        .await?;
    Ok(Json(json!({
        "license": license_view(&license, &state.catalog),
        "grant": grant_view(&grant),
        "refresh_policy": refresh_policy(),
    })))
}

/// What `POST /v1/grants/status` may send: the `license_version` the runtime holds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusRequest {
    license_version: Option<u64>,
}

/// `POST /v1/grants/status` (Bearer installation token).
pub(super) async fn status(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    ApiBytes(body): ApiBytes,
) -> Result<Json<Value>, ApiError> {
    // The body is optional: an empty one asks for the current version only.
    let request: StatusRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StatusRequest::default()
    } else {
        parse_json(&body)?
    };
    let known = request.license_version;
    let (license_version, refresh_required) = licensing(&state).grant_status(&token, known).await?;
    Ok(Json(
        json!({ "license_version": license_version, "refresh_required": refresh_required }),
    ))
}

/// `GET /v1/entitlements` (Bearer installation token): the payload of `DOMAIN.md` §14.
pub(super) async fn entitlements(
    State(state): State<AppState>,
    Bearer(token): Bearer,
) -> Result<Json<Value>, ApiError> {
    let (license, installation_id, entitlements) =
        licensing(&state).entitlements(&token, Utc::now()).await?;
    let mut body = json!(entitlements);
    body["license_id"] = json!(license.license_id);
    body["installation_id"] = json!(installation_id);
    body["license_version"] = json!(license.license_version);
    Ok(Json(body))
}

/// What `POST /v1/continuity/capture` sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaptureRequest {
    monitored_systems: u32,
}

/// `POST /v1/continuity/capture` (Bearer installation token): the grandfather floor, once (§7).
pub(super) async fn capture_continuity(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(request): ApiJson<CaptureRequest>,
) -> Result<Json<Value>, ApiError> {
    let report = licensing(&state)
        .capture_floor(
            &token,
            request.monitored_systems,
            key.as_deref(),
            metadata("installation"),
        )
        .await?;
    Ok(Json(json!(report)))
}

/// `POST /v1/licenses/exchange`: a v5 license token for a v6 license and an activation (§5.4).
pub(super) async fn exchange(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(request): ApiJson<crate::flows::exchange::ExchangeRequest>,
) -> Result<Json<Value>, ApiError> {
    let Some(verifier) = &state.legacy else {
        return Err(ApiError::new(
            ErrorCode::ExchangeNotConfigured,
            "Legacy exchange is not available: no v5 public key is configured.",
        ));
    };
    let activation = crate::flows::exchange::exchange(
        &licensing(&state),
        verifier,
        &request,
        key.as_deref(),
        metadata("installation"),
    )
    .await?;
    Ok(Json(json!({
        "license": license_view(&activation.license, &state.catalog),
        "installation": {
            "installation_id": activation.installation_id,
            "installation_token": activation.installation_token.expose(),
            "status": "active",
        },
        "grant": grant_view(&activation.grant),
        "refresh_policy": refresh_policy(),
    })))
}
