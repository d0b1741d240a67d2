//! The one place HTTP errors become responses: status, stable `code` (every code of the HTTP layer
//! is an [`ErrorCode`]; the domain's come from `DomainError::code`), and the JSON body
//! `{error, code, message, details, request_id}`. Handlers write `?`: flow, domain and store
//! errors convert with `From`; the request id comes from a layer ([`request_id_scope`]). Causes
//! are logged here, never sent.

use crate::engine::command::CommandError;
use crate::engine::store::StoreError;
use crate::flows::FlowError;
use crate::gateways::stripe::StripeGatewayError;
use aggregates::error::DomainError;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The header carrying the request id (set by the request-id layer when the client sent none).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Every code the HTTP layer answers with besides the domain's own ([`DomainError::code`]), with
/// the one status each has. The codes `DOMAIN.md` names are written exactly as there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: a field, a target or a body breaks its documented shape.
    InvalidRequest,
    /// 400: the server could not read the request as HTTP/1.1.
    MalformedRequest,
    /// 400: an email address that is not one.
    InvalidEmail,
    /// 400: a Stripe webhook whose signature does not verify.
    InvalidSignature,
    /// 400: a Stripe webhook arrived, but no webhook secret is configured.
    WebhooksNotConfigured,
    /// 401: no usable `Authorization: Bearer` token.
    Unauthorized,
    /// 401: a portal route was called without a session cookie.
    MissingSession,
    /// 401: the session cookie is malformed or names no session.
    InvalidSession,
    /// 401: the session's twelve hours are over.
    ExpiredSession,
    /// 401: the session was ended by signing out.
    RevokedSession,
    /// 403: the signed-in user's role does not allow this (or they are no member).
    Forbidden,
    /// 403: a state-changing browser request came from another site.
    CrossSiteRequest,
    /// 401: no license has this activation key.
    InvalidActivationKey,
    /// 401: an unknown or rotated installation token (`DOMAIN.md`'s `TOKEN_REVOKED`).
    TokenRevoked,
    /// 404: no route matches the path.
    NotFound,
    /// 405: the path does not take the method.
    MethodNotAllowed,
    /// 408: the body did not arrive in time.
    RequestTimeout,
    /// 409: the idempotency key was used with another request.
    IdempotencyKeyReused,
    /// 409: the record kept changing through every retry.
    ConcurrentUpdate,
    /// 413: the body is larger than the route accepts.
    PayloadTooLarge,
    /// 414: the URI is too long.
    UriTooLong,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 431: the request head has too many or too large headers.
    HeadersTooLarge,
    /// 429: too many requests from this client; `Retry-After` says when to try again.
    RateLimited,
    /// 500: a failure on our side (logged, never described).
    InternalError,
    /// 502: Stripe did not complete a request.
    StripeUnavailable,
    /// 503: the database cannot be reached.
    DatabaseUnavailable,
    /// 503: `/readyz`: not ready to serve.
    NotReady,
    /// 503: legacy exchange has no v5 key configured.
    ExchangeNotConfigured,
    /// 503: a read asked to wait for a position the read models have not folded in time.
    ReadModelLagging,
}

impl ErrorCode {
    /// The code as clients see it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::MalformedRequest => "malformed_request",
            ErrorCode::InvalidEmail => "invalid_email",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::WebhooksNotConfigured => "webhooks_not_configured",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::MissingSession => "missing_session",
            ErrorCode::InvalidSession => "invalid_session",
            ErrorCode::ExpiredSession => "expired_session",
            ErrorCode::RevokedSession => "revoked_session",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::CrossSiteRequest => "cross_site_request",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InvalidActivationKey => "invalid_activation_key",
            ErrorCode::TokenRevoked => "TOKEN_REVOKED",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::ConcurrentUpdate => "concurrent_update",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::StripeUnavailable => "stripe_unavailable",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::ExchangeNotConfigured => "exchange_not_configured",
            ErrorCode::ReadModelLagging => "read_model_lagging",
        }
    }

    /// The status every answer with this code has.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest
            | ErrorCode::MalformedRequest
            | ErrorCode::InvalidEmail
            | ErrorCode::InvalidSignature
            | ErrorCode::WebhooksNotConfigured => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized
            | ErrorCode::InvalidActivationKey
            | ErrorCode::TokenRevoked
            | ErrorCode::MissingSession
            | ErrorCode::InvalidSession
            | ErrorCode::ExpiredSession
            | ErrorCode::RevokedSession => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::CrossSiteRequest => StatusCode::FORBIDDEN,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::IdempotencyKeyReused | ErrorCode::ConcurrentUpdate => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::StripeUnavailable => StatusCode::BAD_GATEWAY,
            ErrorCode::DatabaseUnavailable
            | ErrorCode::NotReady
            | ErrorCode::ExchangeNotConfigured
            | ErrorCode::ReadModelLagging => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

tokio::task_local! {
    /// The id of the request being answered, for every error built while answering it.
    static REQUEST_ID: String;
}

/// Runs the rest of the stack with the request's id in scope (set by the request-id layer), so
/// every error answer carries it without a handler passing it along.
pub async fn request_id_scope(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    REQUEST_ID.scope(id, next.run(request)).await
}

/// The id of the request being answered, or an empty string outside one.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: serde_json::Value,
    retry_after_seconds: Option<i64>,
}

impl ApiError {
    /// An error with a code (which names its status) and a human message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: code.status(),
            code: code.as_str(),
            message: message.into(),
            details: json!({}),
            retry_after_seconds: None,
        }
    }

    /// The answer to a domain refusal: its code, the status `README.md` lists for it, and its
    /// machine-readable details (a 429 also carries `Retry-After`).
    pub fn domain(error: &DomainError) -> ApiError {
        let (status, details) = domain_status_and_details(error);
        let mut api = ApiError {
            status,
            code: error.code(),
            message: error.to_string(),
            details,
            retry_after_seconds: None,
        };
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

    /// The answer to a store failure: typed refusals become client errors, the rest an opaque 500
    /// (or 503 when the database cannot be reached).
    pub fn store(error: &StoreError) -> ApiError {
        match error {
            StoreError::IdempotencyKeyReused { .. } => ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "This Idempotency-Key was already used with a different request.",
            ),
            StoreError::WrongExpectedVersion { .. } => concurrent_update(),
            StoreError::InvalidRequest(reason) => {
                ApiError::new(ErrorCode::InvalidRequest, reason.clone())
            }
            other => ApiError::internal(other),
        }
    }

    /// The answer to a failed service flow.
    pub fn flow(error: FlowError) -> ApiError {
        match &error {
            FlowError::Domain(domain) => ApiError::domain(domain),
            FlowError::Store(store) => ApiError::store(store),
            FlowError::Command(command) => ApiError::command(command),
            FlowError::UnknownActivationKey => ApiError::new(
                ErrorCode::InvalidActivationKey,
                "No license has this activation key.",
            ),
            FlowError::UnknownInstallationToken => ApiError::new(
                ErrorCode::TokenRevoked,
                "This installation token is not valid; activate again.",
            ),
            FlowError::UnknownStaffToken => {
                ApiError::new(ErrorCode::Unauthorized, "This staff token is not valid.")
            }
            FlowError::Contended => concurrent_update(),
            FlowError::Stripe(StripeGatewayError::Api(reason)) => {
                tracing::warn!(%reason, "Stripe refused or failed a request");
                ApiError::new(
                    ErrorCode::StripeUnavailable,
                    "Stripe did not complete the request; retry.",
                )
            }
            FlowError::Stripe(StripeGatewayError::Config(_))
            | FlowError::Codec(_)
            | FlowError::Jwt(_)
            | FlowError::Broken(_) => ApiError::internal(&error),
        }
    }

    /// The answer to a failed command.
    pub fn command(error: &CommandError<DomainError>) -> ApiError {
        match error {
            CommandError::Domain(domain) => ApiError::domain(domain),
            CommandError::Store(store) => ApiError::store(store),
            CommandError::Contended { .. } => concurrent_update(),
            CommandError::StreamName(_) => {
                ApiError::new(ErrorCode::InvalidRequest, error.to_string())
            }
            CommandError::Decode(_) | CommandError::StreamTooLong(_) => ApiError::internal(error),
        }
    }

    /// Asks the client to retry after `seconds` (`Retry-After`).
    pub fn retry_after(mut self, seconds: i64) -> ApiError {
        self.retry_after_seconds = Some(seconds);
        self
    }

    /// Machine-readable details, e.g. `{"retry_after_seconds": 12}`.
    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = details;
        self
    }

    /// An unexpected failure: the cause is logged with the request id and the client gets an
    /// opaque 500 — or, when the database could not be reached, 503 `database_unavailable`
    /// with `Retry-After`.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> ApiError {
        let request_id = current_request_id();
        if database_unreachable(cause) {
            tracing::warn!(%request_id, error = %cause, source = ?cause.source(), "the database is unreachable");
            let mut api = ApiError::new(
                ErrorCode::DatabaseUnavailable,
                "The database cannot be reached right now; nothing was changed. Retry shortly.",
            );
            api.retry_after_seconds = Some(DATABASE_RETRY_AFTER_SECONDS);
            return api;
        }
        tracing::error!(%request_id, error = %cause, source = ?cause.source(), "request failed");
        ApiError::new(
            ErrorCode::InternalError,
            "The request failed on our side; it has been logged. Retrying is safe.",
        )
    }

    /// The status of this answer.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<FlowError> for ApiError {
    fn from(error: FlowError) -> ApiError {
        ApiError::flow(error)
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> ApiError {
        ApiError::domain(&error)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::store(&error)
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

fn concurrent_update() -> ApiError {
    ApiError::new(
        ErrorCode::ConcurrentUpdate,
        "Another request changed the same record at the same moment; retry.",
    )
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
        ExchangeMalformed | InvalidToken => (StatusCode::BAD_REQUEST, json!({})),
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
        WorkspaceNotReady { state } => (StatusCode::CONFLICT, json!({ "state": state })),
        RefundNotEligible { reason } => {
            (StatusCode::FORBIDDEN, json!({ "reason": reason.as_str() }))
        }
        RefundInProgress => (StatusCode::CONFLICT, json!({})),
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
/// §15).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The HTTP status's reason phrase.
    error: String,
    /// The stable code (README's table).
    code: String,
    /// What went wrong, for a person.
    message: String,
    /// Machine-readable details (`field`, `retry_after_seconds`, …).
    #[schema(value_type = Object)]
    details: serde_json::Value,
    /// The request's id (also in `x-request-id`).
    request_id: String,
}

/// The body of an error answer as JSON; also written by the server for the refusals hyper makes
/// before routing.
pub fn error_body(
    status: StatusCode,
    code: &str,
    message: &str,
    details: &serde_json::Value,
    request_id: &str,
) -> serde_json::Value {
    json!(ErrorBody {
        error: status.canonical_reason().unwrap_or("error").to_owned(),
        code: code.to_owned(),
        message: message.to_owned(),
        details: details.clone(),
        request_id: request_id.to_owned(),
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = error_body(
            self.status,
            self.code,
            &self.message,
            &self.details,
            &current_request_id(),
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
