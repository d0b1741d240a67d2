//! Routes of the purchase flow (`DOMAIN.md` §6, §9): handoffs, Checkout Sessions, the session
//! lookup, and Stripe's webhook. Thin: parse, call [`crate::flows::purchase`], answer.

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{ApiBytes, ApiForm, ApiJson, ApiPath, ApiQuery, IdempotencyKey};
use super::licensing::metadata;
use super::AppState;
use crate::flows::purchase::{
    parse_handoff_id, Checkout, CreateHandoffRequest, StartCheckoutRequest,
};
use crate::gateways::stripe::{WebhookRejection, WEBHOOK_BODY_BYTES_MAX};
use aggregates::handoff::Handoff;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this area.
pub(super) fn router() -> OpenApiRouter<AppState> {
    // Stripe's webhook takes a larger body than the service's default.
    let webhook = OpenApiRouter::new()
        .routes(routes!(stripe_webhook))
        .layer(DefaultBodyLimit::max(WEBHOOK_BODY_BYTES_MAX));
    OpenApiRouter::new()
        .routes(routes!(create_handoff, resolve_handoff))
        .routes(routes!(start_checkout, session_result))
        .routes(routes!(begin_redemption))
        .routes(routes!(redemption_activated))
        .routes(routes!(redemption_failed))
        .routes(routes!(local_checkout_page))
        .routes(routes!(local_checkout_complete))
        .merge(webhook)
}

/// The purchase use cases over this service's state.
pub(in crate::http) fn checkout(state: &AppState) -> Checkout<'_> {
    Checkout {
        store: state.store.as_ref(),
        stripe: &state.stripe,
        keys: &state.keys,
        catalog: &state.catalog,
    }
}

fn browser_view(handoff: &Handoff) -> Value {
    serde_json::to_value(handoff.browser_view(Utc::now())).unwrap_or(Value::Null)
}

/// `POST /v1/checkout/portal-handoff`, from the installation.
#[utoipa::path(post, path = "/v1/checkout/portal-handoff", tag = "purchase", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer exactly what the first request did")),
    request_body = CreateHandoffRequest,
    responses(
        (status = 201, description = "`{portal_handoff_id, feature, expires_at}`"),
        (status = 400, description = "`invalid_request`", body = ErrorBody)))]
pub(super) async fn create_handoff(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(request): ApiJson<CreateHandoffRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let handoff = checkout(&state)
        .create_handoff(&request, key.as_deref(), metadata("installation"))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "portal_handoff_id": handoff.handoff_id, "feature": handoff.intent.feature, "expires_at": handoff.expires_at }),
        ),
    ))
}

/// The query of `GET /v1/checkout/portal-handoff`.
#[derive(Debug, Deserialize)]
pub(super) struct HandoffQuery {
    portal_handoff_id: String,
}

/// `GET /v1/checkout/portal-handoff?portal_handoff_id=`, from the browser: the view only.
#[utoipa::path(get, path = "/v1/checkout/portal-handoff", tag = "purchase",
    params(("portal_handoff_id" = String, Query, description = "The handoff (`cph_…`)")),
    responses(
        (status = 200, description = "`{portal_handoff_id, feature, status, resolved_at, expires_at}`; the first lookup stamps `resolved_at`"),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn resolve_handoff(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<HandoffQuery>,
) -> Result<Json<Value>, ApiError> {
    let handoff_id = parse_handoff_id(&query.portal_handoff_id)?;
    let handoff = checkout(&state)
        .resolve_handoff(&handoff_id, metadata("browser"))
        .await?;
    Ok(Json(browser_view(&handoff)))
}

/// `POST /v1/checkout/session`, from the browser.
#[utoipa::path(post, path = "/v1/checkout/session", tag = "purchase", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer exactly what the first request did")),
    request_body = StartCheckoutRequest,
    responses(
        (status = 200, description = "`{url, plan_key, tier, billing_cycle}`: the Stripe Checkout to open"),
        (status = 400, description = "`unknown_plan`, `plan_not_purchasable`, `invalid_request`", body = ErrorBody),
        (status = 409, description = "`handoff_completed`", body = ErrorBody),
        (status = 410, description = "`handoff_expired`", body = ErrorBody),
        (status = 502, description = "`stripe_unavailable`", body = ErrorBody)))]
pub(super) async fn start_checkout(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(request): ApiJson<StartCheckoutRequest>,
) -> Result<Json<Value>, ApiError> {
    let started = checkout(&state)
        .start_checkout(&request, key.as_deref(), metadata("browser"))
        .await?;
    Ok(Json(json!(started)))
}

/// The query of `GET /v1/checkout/session`.
#[derive(Debug, Deserialize)]
pub(super) struct SessionQuery {
    session_id: String,
}

/// `GET /v1/checkout/session?session_id=`, from the returning installation.
#[utoipa::path(get, path = "/v1/checkout/session", tag = "purchase",
    params(("session_id" = String, Query, description = "The Stripe Checkout Session id")),
    responses(
        (status = 200, description = "`{status: fulfilled|pending|failed, portal_handoff_id, purchase_return_jti, license_id, activation_key, activation_key_prefix, owner_email, tier, plan_key}`"),
        (status = 404, description = "`unknown_checkout_session`", body = ErrorBody)))]
pub(super) async fn session_result(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<SessionQuery>,
) -> Result<Json<Value>, ApiError> {
    let result = checkout(&state)
        .session_result(&query.session_id, Utc::now())
        .await?;
    Ok(Json(json!(result)))
}

/// `POST /v1/webhooks/stripe`: 400 on a bad signature (nothing written), 200 once the event took
/// effect (or already had), 500 so Stripe retries when it could not.
#[utoipa::path(post, path = "/v1/webhooks/stripe", tag = "purchase",
    security(("stripe_signature" = [])), request_body(content = String, description = "The Stripe event, as Stripe sent it (at most 1 MiB)", content_type = "application/json"),
    responses(
        (status = 200, description = "`{outcome: applied|ignored|already_processed}`"),
        (status = 400, description = "`invalid_signature`, `webhooks_not_configured`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 500, description = "Not taken into account: Stripe retries", body = ErrorBody)))]
pub(super) async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Json<Value>, ApiError> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let payload = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "The body is not UTF-8."))?;
    let event = state
        .stripe
        .verify_webhook(payload, signature)
        .map_err(|rejection| {
            let code = match rejection {
                WebhookRejection::NotConfigured => ErrorCode::WebhooksNotConfigured,
                WebhookRejection::BadSignature(_) => ErrorCode::InvalidSignature,
                WebhookRejection::Malformed(_) => ErrorCode::InvalidRequest,
            };
            ApiError::new(code, rejection.to_string())
        })?;
    let mut meta = metadata("stripe");
    meta.causation_id = Some(event.id.clone());
    let outcome = checkout(&state)
        .apply_stripe_event(&event, meta)
        .await
        .map_err(|e| {
            let api = ApiError::flow(e);
            if api.status() == StatusCode::SERVICE_UNAVAILABLE {
                return api;
            }
            tracing::error!(event = %event.id, error = ?api, "a Stripe event could not be applied; Stripe will retry");
            ApiError::new(ErrorCode::InternalError, "The event could not be applied; retry.")
        })?;
    Ok(Json(json!({ "received": true, "outcome": outcome })))
}

fn redemption_view(record: &aggregates::redemption::RedemptionRecord) -> Value {
    json!({
        "portal_handoff_id": record.handoff_id,
        "purchase_return_jti": record.purchase_return_jti,
        "session_id": record.session_id,
        "status": record.status,
        "started_at": record.started_at,
        "redeemed_at": record.redeemed_at,
        "failure_reason": record.failure_reason,
        "failure_message": record.failure_message,
    })
}

/// `POST /v1/checkout/redemptions/begin`: `started`, or 409 `conflict` / `in_progress` /
/// `already_activated` as the decision table says.
#[utoipa::path(post, path = "/v1/checkout/redemptions/begin", tag = "purchase", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer exactly what the first request did")),
    request_body = crate::flows::purchase::BeginRedemptionRequest,
    responses(
        (status = 200, description = "The redemption record: `state`, `decision` (`started`, `in_progress`, `already_activated`, …)"),
        (status = 409, description = "`conflict`", body = ErrorBody)))]
pub(super) async fn begin_redemption(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(request): ApiJson<crate::flows::purchase::BeginRedemptionRequest>,
) -> Result<Json<Value>, ApiError> {
    let record = checkout(&state)
        .begin_redemption(&request, key.as_deref(), metadata("installation"))
        .await?;
    Ok(Json(redemption_view(&record)))
}

/// `POST /v1/checkout/redemptions/activated`.
#[utoipa::path(post, path = "/v1/checkout/redemptions/activated", tag = "purchase", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer exactly what the first request did")),
    request_body = crate::flows::purchase::EndRedemptionRequest,
    responses(
        (status = 200, description = "The redemption record, `activated` (terminal)"),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn redemption_activated(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(request): ApiJson<crate::flows::purchase::EndRedemptionRequest>,
) -> Result<Json<Value>, ApiError> {
    let record = checkout(&state)
        .end_redemption(&request, true, key.as_deref(), metadata("installation"))
        .await?;
    Ok(Json(redemption_view(&record)))
}

/// `POST /v1/checkout/redemptions/failed`.
#[utoipa::path(post, path = "/v1/checkout/redemptions/failed", tag = "purchase", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer exactly what the first request did")),
    request_body = crate::flows::purchase::EndRedemptionRequest,
    responses(
        (status = 200, description = "The redemption record, `failed` with its reason"),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn redemption_failed(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(request): ApiJson<crate::flows::purchase::EndRedemptionRequest>,
) -> Result<Json<Value>, ApiError> {
    let record = checkout(&state)
        .end_redemption(&request, false, key.as_deref(), metadata("installation"))
        .await?;
    Ok(Json(redemption_view(&record)))
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `GET /v1/checkout/local/{session_id}`: local mode's checkout page (404 when Stripe is configured).
#[utoipa::path(get, path = "/v1/checkout/local/{session_id}", tag = "purchase",
    params(("session_id" = String, Path, description = "A local Checkout Session (`cs_local_…`)")),
    responses(
        (status = 200, description = "Local checkout mode only: the page that completes the purchase without Stripe", content_type = "text/html"),
        (status = 404, description = "`not_found` (a Stripe key is configured, or no such session)", body = ErrorBody)))]
pub(super) async fn local_checkout_page(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<String>,
) -> Result<axum::response::Html<String>, ApiError> {
    let started = checkout(&state).local_session(&session_id).await?;
    let price = state.catalog.price(&started.price_id);
    let amount = price.map_or(String::new(), |p| {
        format!(
            "{}.{:02} {}",
            p.amount.amount_minor / 100,
            p.amount.amount_minor % 100,
            p.amount.currency.to_uppercase()
        )
    });
    Ok(axum::response::Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Local checkout</title></head><body>\
         <main><h1>Local checkout</h1>\
         <p>This ledger runs without Stripe: completing this form records the purchase without taking any money.</p>\
         <p>Plan <strong>{plan}</strong> ({cycle}) — {amount}</p>\
         <form method=\"post\" action=\"/v1/checkout/local/{session}/complete\">\
         <label>Email <input type=\"email\" name=\"email\" required></label>\
         <button type=\"submit\">Complete purchase</button></form></main></body></html>",
        plan = escape(&started.plan_key),
        cycle = escape(&format!("{:?}", started.billing_cycle).to_lowercase()),
        amount = escape(&amount),
        session = escape(&session_id),
    )))
}

/// The form of the local checkout page.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct LocalCheckoutForm {
    email: String,
}

/// `POST /v1/checkout/local/{session_id}/complete`: completes the purchase and sends the browser to
/// the installation's success URL.
#[utoipa::path(post, path = "/v1/checkout/local/{session_id}/complete", tag = "purchase",
    params(("session_id" = String, Path, description = "A local Checkout Session (`cs_local_…`)")),
    request_body(content = LocalCheckoutForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Completed (a signed webhook was posted); to the session's success URL"),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn local_checkout_complete(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<String>,
    ApiForm(form): ApiForm<LocalCheckoutForm>,
) -> Result<axum::response::Redirect, ApiError> {
    let destination = checkout(&state)
        .complete_local(&session_id, &form.email, metadata("local_checkout"))
        .await?;
    Ok(axum::response::Redirect::to(&destination))
}
