//! Routes of self-hosted licensing (`DOMAIN.md` §5.2, §5.3): activation, grant refresh and
//! status, and the JWKS that verifies every grant. Thin: parse, call [`crate::flows::licensing`], answer.

use super::consistency::MinLogPosition;
use super::error::{current_request_id, ApiError, ErrorBody, ErrorCode};
use super::extract::{parse_json, ApiBytes, ApiJson, Bearer, IdempotencyKey};
use super::AppState;
use crate::flows::licensing::{ActivateRequest, Licensing, SignedGrant};
use aggregates::catalog::Catalog;
use aggregates::ids::{InstallationId, LicenseId};
use aggregates::license::IssuedLicense;
use aggregates::log::EventMetadata;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use projections::entitlements::Entitlements;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this area.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(jwks))
        .routes(routes!(activate))
        .routes(routes!(refresh))
        .routes(routes!(status))
        .routes(routes!(entitlements))
        .routes(routes!(capture_continuity))
        .routes(routes!(exchange))
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
        cache: Some(&state.license_cache),
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
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "The Ed25519 public keys (JWKS) that verify grants, leases and signed documents")))]
pub(super) async fn jwks(State(state): State<AppState>) -> Json<Value> {
    Json(state.keys.signer.jwks())
}

/// `POST /v1/activate`.
#[utoipa::path(post, path = "/v1/activate", tag = "licensing", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer exactly what the first request did")),
    request_body = ActivateRequest,
    responses(
        (status = 200, description = "`license`, `installation` (with its `installation_token`, shown here only), `grant`, `refresh_policy`"),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 401, description = "`invalid_activation_key`", body = ErrorBody),
        (status = 403, description = "`LICENSE_REVOKED`, `LICENSE_SUSPENDED`", body = ErrorBody),
        (status = 409, description = "`MAX_INSTALLATIONS`, `idempotency_key_reused`", body = ErrorBody)))]
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
#[utoipa::path(post, path = "/v1/grants/refresh", tag = "licensing", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer exactly what the first request did")),
    security(("installation_token" = [])),
    responses(
        (status = 200, description = "`license`, a new `grant`, `refresh_policy`"),
        (status = 401, description = "`unauthorized`, `TOKEN_REVOKED`, `INSTALLATION_REVOKED`", body = ErrorBody),
        (status = 403, description = "`LICENSE_REVOKED`, `LICENSE_SUSPENDED`", body = ErrorBody)))]
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
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusRequest {
    license_version: Option<u64>,
}

/// `POST /v1/grants/status` (Bearer installation token).
#[utoipa::path(post, path = "/v1/grants/status", tag = "licensing",
    security(("installation_token" = [])), request_body(content = Option<StatusRequest>, description = "Optional: the `license_version` the runtime holds"),
    responses(
        (status = 200, description = "`{license_version, refresh_required}`"),
        (status = 401, description = "`unauthorized`, `TOKEN_REVOKED`, `INSTALLATION_REVOKED`", body = ErrorBody),
        (status = 413, description = "`payload_too_large` (over 64 KiB)", body = ErrorBody)))]
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
#[utoipa::path(get, path = "/v1/entitlements", tag = "licensing",
    security(("installation_token" = [])),
    params(("x-min-log-position" = Option<i64>, Header, description = "The `x-log-position` of the client's own write: the answer is at least that current")),
    responses(
        (status = 200, description = "The entitlement payload of DOMAIN.md §14 with the continuity block of §7"),
        (status = 401, description = "`unauthorized`, `TOKEN_REVOKED`", body = ErrorBody)))]
pub(super) async fn entitlements(
    State(state): State<AppState>,
    MinLogPosition(at_least): MinLogPosition,
    Bearer(token): Bearer,
) -> Result<Response, ApiError> {
    let (license, installation_id, entitlements) = licensing(&state)
        .entitlements(&token, Utc::now(), at_least)
        .await?;
    Ok(Json(EntitlementsBody {
        entitlements: &entitlements,
        license_id: &license.license_id,
        installation_id: &installation_id,
        license_version: license.license_version,
    })
    .into_response())
}

/// The answer of `GET /v1/entitlements`: the entitlements and whose they are, serialised
/// straight from the license, with no JSON tree built on the way.
#[derive(Serialize)]
struct EntitlementsBody<'a> {
    #[serde(flatten)]
    entitlements: &'a Entitlements,
    license_id: &'a LicenseId,
    installation_id: &'a InstallationId,
    license_version: u64,
}

/// What `POST /v1/continuity/capture` sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CaptureRequest {
    monitored_systems: u32,
}

/// `POST /v1/continuity/capture` (Bearer installation token): the grandfather floor, once (§7).
#[utoipa::path(post, path = "/v1/continuity/capture", tag = "licensing", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer exactly what the first request did")),
    security(("installation_token" = [])), request_body = CaptureRequest,
    responses(
        (status = 200, description = "The continuity report: `plan_limit`, `grandfathered_floor`, `effective_limit`, `capture_pending`, `captured_at`"),
        (status = 401, description = "`unauthorized`, `TOKEN_REVOKED`", body = ErrorBody),
        (status = 409, description = "`floor_not_applicable`", body = ErrorBody)))]
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
#[utoipa::path(post, path = "/v1/licenses/exchange", tag = "licensing", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer exactly what the first request did")),
    request_body = crate::flows::exchange::ExchangeRequest,
    responses(
        (status = 200, description = "As activation: `license`, `installation`, `grant`, `refresh_policy`"),
        (status = 400, description = "`exchange_malformed`", body = ErrorBody),
        (status = 401, description = "`RENEWED_KEY_AVAILABLE`, `exchange_invalid`", body = ErrorBody),
        (status = 403, description = "`exchange_revoked`", body = ErrorBody),
        (status = 409, description = "`MAX_INSTALLATIONS`", body = ErrorBody),
        (status = 410, description = "`exchange_not_migratable`", body = ErrorBody),
        (status = 429, description = "`exchange_rate_limited`", body = ErrorBody),
        (status = 503, description = "`exchange_not_configured`", body = ErrorBody)))]
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
