//! The self-hosted recovery jobs over HTTP (`../shared/design/PORTAL.md` §4), for a customer who
//! is not signed in (the portal's Billing panels run the same jobs for a signed-in one):
//!
//! - `POST /v1/manage/request`, `/v1/retrieve-license/request`, `/v1/gdpr/request-export`,
//!   `/v1/gdpr/request-delete` `{email}`: always 200 with the same body; a 6-digit code is
//!   emailed when the email owns a license (decided off the request path);
//! - `POST /v1/manage`, `/v1/retrieve-license`, `/v1/gdpr/export`, `/v1/gdpr/confirm-delete`
//!   `{email, code}` (`confirm: true` for the delete): the job, once per code;
//! - `POST /v1/self-refund {email, token}` (the activation key).
//!
//! Requests and code attempts count against the per-address limit of sign-in.

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{ApiJson, ClientAddress};
use super::licensing::metadata;
use super::sign_in::admit;
use super::AppState;
use crate::flows::billing_portal::ManageBilling;
use crate::flows::recovery::{self, Deleted, Eraser};
use crate::flows::self_refund::{Refunded, SelfRefunds};
use crate::flows::FlowError;
use aggregates::email_code::RecoveryJob;
use aggregates::error::DomainError;
use aggregates::ids::Email;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every code request is answered, whatever became of it.
const CODE_REQUESTED_MESSAGE: &str =
    "If this email owns a Pulse license, a 6-digit code is on its way. It works once, for 15 minutes.";

/// The routes of this area.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(request_manage))
        .routes(routes!(manage))
        .routes(routes!(request_retrieve))
        .routes(routes!(retrieve))
        .routes(routes!(request_export))
        .routes(routes!(export))
        .routes(routes!(request_delete))
        .routes(routes!(confirm_delete))
        .routes(routes!(self_refund))
}

impl AppState {
    /// The self-refunds, as this service makes them.
    pub(super) fn self_refunds(&self) -> SelfRefunds<'_> {
        SelfRefunds {
            store: self.store.as_ref(),
            keys: &self.keys,
            catalog: &self.catalog,
            stripe: &self.stripe,
            window_days: self.recovery.self_refund_window_days,
        }
    }

    /// What the `delete` job needs.
    pub(super) fn eraser(&self) -> Eraser<'_> {
        Eraser {
            recovery: &self.recovery,
            projections: &self.projections,
            metrics: &self.metrics,
            catalog: &self.catalog,
            support_email: &self.support_email,
        }
    }
}

/// What a code request sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CodeRequest {
    email: String,
}

/// What a confirmation sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CodeConfirmation {
    email: String,
    code: String,
}

/// What the delete confirmation sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteConfirmation {
    email: String,
    code: String,
    /// Must be `true`: the licenses are revoked and the data erased, for good.
    confirm: Option<bool>,
}

fn parse_email(raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw).map_err(|_| {
        ApiError::new(ErrorCode::InvalidEmail, "This is not an email address.")
            .with_details(json!({ "field": "email" }))
    })
}

/// Queues a code request for `job`; the same answer for every email.
fn request_code(
    state: &AppState,
    client: std::net::IpAddr,
    job: RecoveryJob,
    body: &CodeRequest,
) -> Result<Json<Value>, ApiError> {
    let email = parse_email(&body.email)?;
    admit(state, client)?;
    if state
        .recovery
        .queue
        .enqueue((job, email), metadata("public"))
        .is_err()
    {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "Too many requests right now; try again in a moment.",
        )
        .retry_after(1));
    }
    Ok(Json(
        json!({ "success": true, "message": CODE_REQUESTED_MESSAGE }),
    ))
}

/// Uses the code of `job`; a malformed email is refused like a wrong code (nothing tells which
/// emails have codes).
async fn confirm(
    state: &AppState,
    client: std::net::IpAddr,
    job: RecoveryJob,
    email: &str,
    code: &str,
) -> Result<(Email, String), ApiError> {
    admit(state, client)?;
    let email = Email::parse(email).map_err(|_| ApiError::domain(&DomainError::InvalidToken))?;
    let code_id = recovery::confirm_code(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        job,
        &email,
        code.trim(),
        metadata("public"),
    )
    .await?;
    Ok((email, code_id))
}

/// `POST /v1/manage/request`.
#[utoipa::path(post, path = "/v1/manage/request", tag = "recovery",
    request_body = CodeRequest,
    responses(
        (status = 200, description = "`{success: true, message}`, the same bytes for every email; a code is emailed when the email owns a license"),
        (status = 400, description = "`invalid_email`, `invalid_request`", body = ErrorBody),
        (status = 429, description = "`rate_limited` with `Retry-After`", body = ErrorBody)))]
pub(super) async fn request_manage(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<Json<Value>, ApiError> {
    request_code(&state, client, RecoveryJob::Manage, &body)
}

/// `POST /v1/manage`: a Stripe Billing Portal session for the license's customer.
#[utoipa::path(post, path = "/v1/manage", tag = "recovery",
    request_body = CodeConfirmation,
    responses(
        (status = 200, description = "`{url, local}`: a Stripe Billing Portal session for the customer of the email's newest license that has one (local checkout mode: the portal's stand-in page, `local: true`)"),
        (status = 400, description = "`invalid_token` (wrong, used, expired or another job's code; 5 wrong codes end it), `invalid_request`", body = ErrorBody),
        (status = 403, description = "`no_billing_record`: no license of the email has a Stripe customer", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`stripe_unavailable`", body = ErrorBody)))]
pub(super) async fn manage(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<CodeConfirmation>,
) -> Result<Json<Value>, ApiError> {
    let (email, _) = confirm(&state, client, RecoveryJob::Manage, &body.email, &body.code).await?;
    let return_url = format!(
        "{}/portal?section=billing",
        state.public_url.trim_end_matches('/')
    );
    let answer =
        match recovery::manage(state.store.as_ref(), &state.stripe, &email, &return_url).await? {
            ManageBilling::Stripe(url) => json!({ "url": url, "local": false }),
            ManageBilling::Local => json!({
                "url": format!("{}/portal/billing-local", state.public_url.trim_end_matches('/')),
                "local": true,
            }),
        };
    Ok(Json(answer))
}

/// `POST /v1/retrieve-license/request`.
#[utoipa::path(post, path = "/v1/retrieve-license/request", tag = "recovery",
    request_body = CodeRequest,
    responses(
        (status = 200, description = "`{success: true, message}`, the same bytes for every email"),
        (status = 400, description = "`invalid_email`, `invalid_request`", body = ErrorBody),
        (status = 429, description = "`rate_limited` with `Retry-After`", body = ErrorBody)))]
pub(super) async fn request_retrieve(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<Json<Value>, ApiError> {
    request_code(&state, client, RecoveryJob::Retrieve, &body)
}

/// `POST /v1/retrieve-license`: every license of the email with its activation key.
#[utoipa::path(post, path = "/v1/retrieve-license", tag = "recovery",
    request_body = CodeConfirmation,
    responses(
        (status = 200, description = "`{licenses: [{activation_key, license_id, tier, plan_version, issued_at, expires_at, state, email}]}` in issue order"),
        (status = 400, description = "`invalid_token`, `invalid_request`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody)))]
pub(super) async fn retrieve(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<CodeConfirmation>,
) -> Result<Json<Value>, ApiError> {
    let (email, _) = confirm(
        &state,
        client,
        RecoveryJob::Retrieve,
        &body.email,
        &body.code,
    )
    .await?;
    let licenses =
        recovery::retrieve(state.store.as_ref(), &state.keys, &state.catalog, &email).await?;
    Ok(Json(json!({ "licenses": licenses })))
}

/// `POST /v1/gdpr/request-export`.
#[utoipa::path(post, path = "/v1/gdpr/request-export", tag = "recovery",
    request_body = CodeRequest,
    responses(
        (status = 200, description = "`{success: true, message}`, the same bytes for every email"),
        (status = 400, description = "`invalid_email`, `invalid_request`", body = ErrorBody),
        (status = 429, description = "`rate_limited` with `Retry-After`", body = ErrorBody)))]
pub(super) async fn request_export(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<Json<Value>, ApiError> {
    request_code(&state, client, RecoveryJob::Export, &body)
}

/// `POST /v1/gdpr/export`: everything the ledger holds on the email, signed.
#[utoipa::path(post, path = "/v1/gdpr/export", tag = "recovery",
    request_body = CodeConfirmation,
    responses(
        (status = 200, description = "`{export, signature}`: `export` holds the email's licenses, installations (names opened), accounts and roles, and its events with their positions; `signature` is an EdDSA JWT (verify with `/.well-known/jwks.json`, `aud` `pulse-personal-data-export`) whose `export_sha256` is the SHA-256 of `export` as JSON with sorted keys and no whitespace"),
        (status = 400, description = "`invalid_token`, `invalid_request`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody)))]
pub(super) async fn export(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<CodeConfirmation>,
) -> Result<Json<Value>, ApiError> {
    let (email, _) = confirm(&state, client, RecoveryJob::Export, &body.email, &body.code).await?;
    let signed = recovery::export(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        &email,
        chrono::Utc::now(),
    )
    .await?;
    Ok(Json(
        json!({ "export": signed.export, "signature": signed.signature }),
    ))
}

/// `POST /v1/gdpr/request-delete`.
#[utoipa::path(post, path = "/v1/gdpr/request-delete", tag = "recovery",
    request_body = CodeRequest,
    responses(
        (status = 200, description = "`{success: true, message}`, the same bytes for every email"),
        (status = 400, description = "`invalid_email`, `invalid_request`", body = ErrorBody),
        (status = 429, description = "`rate_limited` with `Retry-After`", body = ErrorBody)))]
pub(super) async fn request_delete(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<Json<Value>, ApiError> {
    request_code(&state, client, RecoveryJob::Delete, &body)
}

/// `POST /v1/gdpr/confirm-delete`: revokes the licenses and erases the person.
#[utoipa::path(post, path = "/v1/gdpr/confirm-delete", tag = "recovery",
    request_body = DeleteConfirmation,
    responses(
        (status = 200, description = "`{deleted_count, message, stripe_reminder}`: every license revoked (reason `erasure`), then the person erased; nothing in the store or its files holds the email after"),
        (status = 400, description = "`invalid_request` without `confirm: true` (the code is not used), `invalid_token`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody)))]
pub(super) async fn confirm_delete(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<DeleteConfirmation>,
) -> Result<Json<Deleted>, ApiError> {
    if body.confirm != Some(true) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "Deleting revokes your licenses and erases your data for good: send confirm: true.",
        )
        .with_details(json!({ "field": "confirm" })));
    }
    let (email, code_id) =
        confirm(&state, client, RecoveryJob::Delete, &body.email, &body.code).await?;
    let metadata = metadata("public");
    // Its own task: a client that goes away must not cut an erasure short.
    let deleted =
        tokio::spawn(
            async move { recovery::delete(state.eraser(), &email, &code_id, metadata).await },
        )
        .await
        .map_err(|_| FlowError::Broken("the erasure task ended without an answer"))??;
    Ok(Json(deleted))
}

/// What a self-refund sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SelfRefundRequest {
    /// The email the license was bought with.
    email: String,
    /// The license's activation key.
    token: String,
}

/// `POST /v1/self-refund`.
#[utoipa::path(post, path = "/v1/self-refund", tag = "recovery",
    request_body = SelfRefundRequest,
    responses(
        (status = 200, description = "`{license_id, refund_id, charge, refunded_at}`: Stripe refunded the first payment and the license is revoked"),
        (status = 400, description = "`invalid_email`, `invalid_request`", body = ErrorBody),
        (status = 401, description = "`invalid_activation_key`: no license of this email has this key", body = ErrorBody),
        (status = 403, description = "`refund_not_eligible` with `details.reason`: `window_passed`, `already_refunded`, `not_paid`, `revoked`", body = ErrorBody),
        (status = 409, description = "`refund_in_progress`: another request is refunding it; ask again in a minute", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`stripe_unavailable`: Stripe did not answer; nothing is recorded as refunded, ask again in a minute", body = ErrorBody)))]
pub(super) async fn self_refund(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<SelfRefundRequest>,
) -> Result<Json<Refunded>, ApiError> {
    let email = parse_email(&body.email)?;
    admit(&state, client)?;
    let metadata = metadata("public");
    // Its own task: once Stripe is asked, its answer is recorded even if the client goes away.
    let refunded = tokio::spawn(async move {
        let refunds = state.self_refunds();
        refunds.refund(&email, body.token.trim(), metadata).await
    })
    .await
    .map_err(|_| FlowError::Broken("the self-refund task ended without an answer"))??;
    Ok(Json(refunded))
}
