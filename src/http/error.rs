//! The one place HTTP errors become responses: status, stable `code`, and the JSON body
//! `{error, code, message, details, request_id}`. Causes are logged here, never sent.

use crate::engine::command::CommandError;
use crate::engine::store::StoreError;
use crate::flows::FlowError;
use crate::gateways::stripe::StripeGatewayError;
use aggregates::error::DomainError;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The header carrying the request id (set by the request-id layer when the client sent none).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: serde_json::Value,
    request_id: String,
    retry_after_seconds: Option<i64>,
}

impl ApiError {
    /// An error with a status, a stable code and a human message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: json!({}),
            request_id: String::new(),
            retry_after_seconds: None,
        }
    }

    /// The answer to a domain refusal: its code, the status `README.md` lists for it, and its
    /// machine-readable details (a 429 also carries `Retry-After`).
    pub fn domain(error: &DomainError, headers: &HeaderMap) -> ApiError {
        let (status, details) = domain_status_and_details(error);
        let mut api = ApiError::new(status, error.code(), error.to_string())
            .with_details(details)
            .for_request(headers);
        if let DomainError::TrialRateLimited {
            retry_after_seconds,
        }
        | DomainError::ExchangeRateLimited {
            retry_after_seconds,
        } = error
        {
            api.retry_after_seconds = Some(*retry_after_seconds);
        }
        api
    }

    /// The answer to a store failure: typed refusals become client errors, the rest an opaque 500.
    pub fn store(error: &StoreError, headers: &HeaderMap) -> ApiError {
        match error {
            StoreError::IdempotencyKeyReused { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "This Idempotency-Key was already used with a different request.",
            )
            .for_request(headers),
            StoreError::WrongExpectedVersion { .. } => concurrent_update(headers),
            StoreError::InvalidRequest(reason) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", reason.clone())
                    .for_request(headers)
            }
            other => ApiError::internal(other, headers),
        }
    }

    /// The answer to a failed service flow.
    pub fn flow(error: FlowError, headers: &HeaderMap) -> ApiError {
        match &error {
            FlowError::Domain(domain) => ApiError::domain(domain, headers),
            FlowError::Store(store) => ApiError::store(store, headers),
            FlowError::Command(command) => ApiError::command(command, headers),
            FlowError::UnknownActivationKey => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_activation_key",
                "No license has this activation key.",
            )
            .for_request(headers),
            FlowError::UnknownInstallationToken => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "TOKEN_REVOKED",
                "This installation token is not valid; activate again.",
            )
            .for_request(headers),
            FlowError::UnknownStaffToken => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "This staff token is not valid.",
            )
            .for_request(headers),
            FlowError::Contended => concurrent_update(headers),
            FlowError::Stripe(StripeGatewayError::Api(reason)) => {
                tracing::warn!(%reason, "Stripe refused or failed a request");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "stripe_unavailable",
                    "Stripe did not complete the request; retry.",
                )
                .for_request(headers)
            }
            FlowError::Stripe(StripeGatewayError::Config(_))
            | FlowError::Codec(_)
            | FlowError::Jwt(_) => ApiError::internal(&error, headers),
        }
    }

    /// The answer to a failed command.
    pub fn command(error: &CommandError<DomainError>, headers: &HeaderMap) -> ApiError {
        match error {
            CommandError::Domain(domain) => ApiError::domain(domain, headers),
            CommandError::Store(store) => ApiError::store(store, headers),
            CommandError::Contended { .. } => concurrent_update(headers),
            CommandError::StreamName(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                error.to_string(),
            )
            .for_request(headers),
            CommandError::Decode(_) | CommandError::StreamTooLong(_) => {
                ApiError::internal(error, headers)
            }
        }
    }

    /// Machine-readable details, e.g. `{"retry_after_seconds": 12}`.
    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = details;
        self
    }

    /// The id of the request this answers, read from its headers.
    pub fn for_request(mut self, headers: &HeaderMap) -> ApiError {
        self.request_id = request_id(headers);
        self
    }

    /// An unexpected failure: the cause is logged with the request id and the client gets an
    /// opaque 500 — or, when the database could not be reached, 503 `database_unavailable`
    /// with `Retry-After`.
    pub fn internal(cause: &(dyn std::error::Error + 'static), headers: &HeaderMap) -> ApiError {
        let request_id = request_id(headers);
        if database_unreachable(cause) {
            tracing::warn!(%request_id, error = %cause, source = ?cause.source(), "the database is unreachable");
            let mut api = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "The database cannot be reached right now; nothing was changed. Retry shortly.",
            )
            .for_request(headers);
            api.retry_after_seconds = Some(DATABASE_RETRY_AFTER_SECONDS);
            return api;
        }
        tracing::error!(%request_id, error = %cause, source = ?cause.source(), "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "The request failed on our side; it has been logged. Retrying is safe.",
        )
        .for_request(headers)
    }
}

/// The `Retry-After` of a 503 `database_unavailable`.
const DATABASE_RETRY_AFTER_SECONDS: i64 = 1;

/// Whether a store error that cannot reach the database is anywhere in `cause`'s chain.
fn database_unreachable(cause: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(cause);
    while let Some(error) = next {
        let store = error
            .downcast_ref::<StoreError>()
            .is_some_and(StoreError::is_unavailable);
        let driver = error
            .downcast_ref::<sqlx::Error>()
            .is_some_and(crate::engine::store::database_unreachable);
        if store || driver {
            return true;
        }
        next = error.source();
    }
    false
}

/// The request id a request carries, or an empty string.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn concurrent_update(headers: &HeaderMap) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "concurrent_update",
        "Another request changed the same record at the same moment; retry.",
    )
    .for_request(headers)
}

/// The HTTP status of each domain refusal, and the details it carries.
fn domain_status_and_details(error: &DomainError) -> (StatusCode, serde_json::Value) {
    use DomainError::*;
    match error {
        InvalidInput { field, reason } => (
            StatusCode::BAD_REQUEST,
            json!({ "field": field, "reason": reason }),
        ),
        UnknownPlan { plan } | PlanNotPurchasable { plan } => {
            (StatusCode::BAD_REQUEST, json!({ "plan": plan }))
        }
        ExchangeMalformed => (StatusCode::BAD_REQUEST, json!({})),
        NotFound { entity } => (StatusCode::NOT_FOUND, json!({ "entity": entity })),
        UnknownCheckoutSession => (StatusCode::NOT_FOUND, json!({})),
        TokenRevoked | InstallationRevoked | RenewedKeyAvailable | ExchangeInvalid
        | LeaseTokenInvalid => (StatusCode::UNAUTHORIZED, json!({})),
        LeaseUnavailable { reason } => (StatusCode::GONE, json!({ "reason": reason })),
        LicenseRevoked | LicenseSuspended | ExchangeRevoked | NoBillingRecord
        | SubscriptionCanceled | OwnerRequired => (StatusCode::FORBIDDEN, json!({})),
        Forbidden { action } => (StatusCode::FORBIDDEN, json!({ "action": action })),
        WorkspaceLimitReached { current, limit } => (
            StatusCode::FORBIDDEN,
            json!({ "current": current, "limit": limit }),
        ),
        MaxInstallations { current, limit } => (
            StatusCode::CONFLICT,
            json!({ "current": current, "limit": limit }),
        ),
        InvalidTransition { from, to } => (StatusCode::CONFLICT, json!({ "from": from, "to": to })),
        TrialSignupRequired { action_url } => {
            (StatusCode::CONFLICT, json!({ "action_url": action_url }))
        }
        TrialNotAvailable { reason } => (StatusCode::CONFLICT, json!({ "reason": reason })),
        CatalogVersionNotNewer { latest } => (StatusCode::CONFLICT, json!({ "latest": latest })),
        AlreadyExists { .. }
        | FloorNotApplicable
        | HandoffCompleted
        | RedemptionConflict
        | RedemptionInProgress
        | RedemptionAlreadyActivated
        | TrialAlreadyUsed
        | LastOwner
        | AlreadyMember => (StatusCode::CONFLICT, json!({})),
        HandoffExpired | ExchangeNotMigratable => (StatusCode::GONE, json!({})),
        TrialRateLimited {
            retry_after_seconds,
        }
        | ExchangeRateLimited {
            retry_after_seconds,
        } => (
            StatusCode::TOO_MANY_REQUESTS,
            json!({ "retry_after_seconds": retry_after_seconds }),
        ),
    }
}

/// The JSON body of every error answer, `{error, code, message, details, request_id}` (`DOMAIN.md`
/// §15); also written by the server for the refusals hyper makes before routing.
pub fn error_body(
    status: StatusCode,
    code: &str,
    message: &str,
    details: &serde_json::Value,
    request_id: &str,
) -> serde_json::Value {
    json!({
        "error": status.canonical_reason().unwrap_or("error"),
        "code": code,
        "message": message,
        "details": details,
        "request_id": request_id,
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = error_body(
            self.status,
            self.code,
            &self.message,
            &self.details,
            &self.request_id,
        );
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
