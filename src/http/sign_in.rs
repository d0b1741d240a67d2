//! Sign-in by email over HTTP (`../shared/design/PORTAL.md` §2):
//!
//! - `POST /api/public/magic-link/request {email}`: always 200 with the same body, known email or
//!   not (only a malformed email is 400 `invalid_email`); the link is decided and sent off the
//!   request path, so the answer's timing tells nothing either. 20 a minute per client address
//!   (429 with `Retry-After`); 3 an hour per email, silently.
//! - `GET /auth/magic-link/verify?token=`: a confirmation page; it never signs anyone in (mail
//!   scanners open links). Its button POSTs to the same path, which consumes the token.
//! - `POST /auth/magic-link/code {email, code}`: signs in by the code instead.
//! - `POST /auth/logout`: ends every session of the user.
//!
//! A form gets pages and redirects (303 to `/portal` on success); a JSON client gets JSON.

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{ApiQuery, ClientAddress, FormOrJson};
use super::licensing::metadata;
use super::pages::{masked_email, nonce, render};
use super::session::{cleared_session_cookie, session_cookie, PortalUser};
use super::AppState;
use crate::flows::sign_in::{pending_sign_in, sign_in, sign_out, Proof, SignedIn};
use crate::flows::FlowError;
use aggregates::error::DomainError;
use aggregates::ids::Email;
use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Sign-in requests one client address may make per minute.
pub const SIGN_IN_REQUESTS_PER_MINUTE_MAX: usize = 20;
/// What every sign-in request is answered, whatever became of it.
const REQUESTED_MESSAGE: &str =
    "If this email can sign in to Pulse Account, a sign-in link and code are on their way.";

/// The routes of this area.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(request_link))
        .routes(routes!(confirmation_page, verify_token))
        .routes(routes!(verify_code))
        .routes(routes!(logout))
}

#[derive(Template)]
#[template(path = "sign_in_confirm.html")]
struct ConfirmPage<'a> {
    nonce: &'a str,
    masked_email: &'a str,
    token: &'a str,
}

#[derive(Template)]
#[template(path = "sign_in_invalid.html")]
struct InvalidPage<'a> {
    nonce: &'a str,
}

#[derive(Template)]
#[template(path = "sign_in_sent.html")]
struct SentPage<'a> {
    nonce: &'a str,
    message: &'a str,
    email: &'a str,
}

/// What a sign-in request sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LinkRequest {
    email: String,
}

/// `POST /api/public/magic-link/request`.
#[utoipa::path(post, path = "/api/public/magic-link/request", tag = "portal",
    request_body(content = LinkRequest, description = "JSON, or a form (`application/x-www-form-urlencoded`, answered with a page)"),
    responses(
        (status = 200, description = "`{success: true, message}`, the same bytes for every email"),
        (status = 400, description = "`invalid_email`, `invalid_request`", body = ErrorBody),
        (status = 403, description = "`cross_site_request`", body = ErrorBody),
        (status = 429, description = "`rate_limited` (20 a minute per address) with `Retry-After`", body = ErrorBody)))]
pub(super) async fn request_link(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    body: FormOrJson<LinkRequest>,
) -> Result<Response, ApiError> {
    let email = Email::parse(&body.value.email).map_err(|_| {
        ApiError::new(ErrorCode::InvalidEmail, "This is not an email address.")
            .with_details(json!({ "field": "email" }))
    })?;
    admit(&state, client)?;
    if state
        .sign_in_queue
        .enqueue(email.clone(), metadata("public"))
        .is_err()
    {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "Sign-in is busy right now; try again in a moment.",
        )
        .retry_after(1));
    }
    if body.from_form {
        let nonce = nonce();
        let page = SentPage {
            nonce: &nonce,
            message: REQUESTED_MESSAGE,
            email: email.as_str(),
        };
        return Ok(render(StatusCode::OK, &page, &nonce));
    }
    Ok(Json(json!({ "success": true, "message": REQUESTED_MESSAGE })).into_response())
}

/// Counts a sign-in or recovery request, or a code attempt, of `client`; 429 with `Retry-After` past the limit.
pub(super) fn admit(state: &AppState, client: std::net::IpAddr) -> Result<(), ApiError> {
    state
        .sign_in_limit
        .admit(client, std::time::Instant::now())
        .map_err(|seconds| {
            ApiError::new(
                ErrorCode::RateLimited,
                "Too many sign-in or code attempts from this address; wait a moment.",
            )
            .with_details(json!({ "retry_after_seconds": seconds }))
            .retry_after(seconds as i64)
        })
}

/// The query of the link in the email.
#[derive(Debug, Deserialize)]
pub(super) struct VerifyQuery {
    token: String,
}

/// `GET /auth/magic-link/verify?token=`: a page that asks before it signs in.
#[utoipa::path(get, path = "/auth/magic-link/verify", tag = "portal",
    params(("token" = String, Query, description = "The link's token (`ml1_…`)")),
    responses(
        (status = 200, description = "A page that asks before signing in (a GET never signs in)", content_type = "text/html"),
        (status = 400, description = "A page offering a new link: the token was used, expired or superseded", content_type = "text/html")))]
pub(super) async fn confirmation_page(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<VerifyQuery>,
) -> Result<Response, ApiError> {
    let nonce = nonce();
    let pending = pending_sign_in(
        state.store.as_ref(),
        &state.keys,
        &query.token,
        chrono::Utc::now(),
    )
    .await?;
    Ok(match pending {
        Some(email) => {
            let masked = masked_email(email.as_str());
            let page = ConfirmPage {
                nonce: &nonce,
                masked_email: &masked,
                token: &query.token,
            };
            render(StatusCode::OK, &page, &nonce)
        }
        None => invalid_page(&nonce),
    })
}

fn invalid_page(nonce: &str) -> Response {
    render(StatusCode::BAD_REQUEST, &InvalidPage { nonce }, nonce)
}

/// What the confirmation page posts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenProof {
    token: String,
}

/// `POST /auth/magic-link/verify`: consumes the link's token.
#[utoipa::path(post, path = "/auth/magic-link/verify", tag = "portal",
    request_body(content = TokenProof, description = "A form (the confirmation page's button) or JSON"),
    responses(
        (status = 303, description = "Signed in: `Set-Cookie: __Host-pulse_cp_session=…`, to `/portal`"),
        (status = 400, description = "`invalid_token` (JSON), or the page offering a new link (form)", body = ErrorBody),
        (status = 403, description = "`cross_site_request`", body = ErrorBody)))]
pub(super) async fn verify_token(
    State(state): State<AppState>,
    body: FormOrJson<TokenProof>,
) -> Result<Response, ApiError> {
    let signed_in = sign_in(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        Proof::Token(&body.value.token),
        metadata("public"),
    )
    .await;
    answer_sign_in(signed_in, body.from_form)
}

/// What the code form posts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CodeProof {
    email: String,
    code: String,
}

/// `POST /auth/magic-link/code`: signs in by the email's code. Code attempts count against the
/// same per-address limit as sign-in requests, so guessing across many emails is slow too.
#[utoipa::path(post, path = "/auth/magic-link/code", tag = "portal",
    request_body(content = CodeProof, description = "A form or JSON"),
    responses(
        (status = 303, description = "Signed in: `Set-Cookie: __Host-pulse_cp_session=…`, to `/portal`"),
        (status = 400, description = "`invalid_token` (5 wrong codes end the link)", body = ErrorBody),
        (status = 429, description = "`rate_limited`: sign-in requests and code attempts share 20 a minute per address", body = ErrorBody),
        (status = 403, description = "`cross_site_request`", body = ErrorBody)))]
pub(super) async fn verify_code(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    body: FormOrJson<CodeProof>,
) -> Result<Response, ApiError> {
    admit(&state, client)?;
    let Ok(email) = Email::parse(&body.value.email) else {
        return answer_sign_in(Err(DomainError::InvalidToken.into()), body.from_form);
    };
    let signed_in = sign_in(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        Proof::Code {
            email: &email,
            code: body.value.code.trim(),
        },
        metadata("public"),
    )
    .await;
    answer_sign_in(signed_in, body.from_form)
}

/// A sign-in's answer: 303 to `/portal` with the session cookie; a refused proof is the
/// invalid-link page for a form, 400 `invalid_token` for JSON.
fn answer_sign_in(
    signed_in: Result<SignedIn, FlowError>,
    from_form: bool,
) -> Result<Response, ApiError> {
    match signed_in {
        Ok(signed_in) => {
            let mut response = redirect_to_portal();
            response.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(signed_in.cookie.expose()),
            );
            Ok(response)
        }
        Err(FlowError::Domain(DomainError::InvalidToken)) if from_form => {
            Ok(invalid_page(&nonce()))
        }
        Err(other) => Err(other.into()),
    }
}

fn redirect_to_portal() -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/portal"));
    response
}

/// `POST /auth/logout`: ends every session of the signed-in user, clears the cookie, and sends a
/// browser back to `/portal` (303; a JSON client gets 204).
#[utoipa::path(post, path = "/auth/logout", tag = "portal", security(("session" = [])),
    responses(
        (status = 204, description = "Every session of the user ended (JSON client)"),
        (status = 303, description = "Every session of the user ended; to `/portal` (form)"),
        (status = 401, description = "`missing_session`, `invalid_session`, `expired_session`, `revoked_session`", body = ErrorBody),
        (status = 403, description = "`cross_site_request`", body = ErrorBody)))]
pub(super) async fn logout(
    State(state): State<AppState>,
    user: PortalUser,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    sign_out(
        state.store.as_ref(),
        &state.catalog,
        &user.person_id,
        metadata(user.user.user_id.as_str()),
    )
    .await?;
    let from_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    let mut response = if from_form {
        redirect_to_portal()
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cleared_session_cookie());
    Ok(response)
}
