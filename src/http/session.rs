//! The portal's session cookie and the extractor that turns it into the signed-in user.
//!
//! The cookie is `__Host-pulse_cp_session` (`HttpOnly; Secure; SameSite=Lax; Path=/`, twelve
//! hours): the `__Host-` prefix makes browsers refuse it unless it is Secure, host-only and for
//! the whole site. Its value is `<person id>.<secret>`; only the secret's keyed hash is stored
//! (`crate::flows::sign_in`). A handler that takes a [`PortalUser`] runs only for a live session;
//! otherwise the answer says why: `missing_session`, `invalid_session`, `expired_session` or
//! `revoked_session` (401 each).

use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::flows::sign_in::{check_session, SessionCheck};
use aggregates::user::{RegisteredUser, SESSION_TTL_HOURS};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum::http::HeaderValue;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "__Host-pulse_cp_session";
/// Longest session cookie value considered (a person id, a dot, a secret: about 90 characters).
const SESSION_COOKIE_LEN_MAX: usize = 256;

/// The `Set-Cookie` value that starts a session.
pub fn session_cookie(value: &str) -> HeaderValue {
    let max_age = SESSION_TTL_HOURS * 3_600;
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age={max_age}"
    ))
    .expect("a session cookie is printable ASCII")
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_session_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-pulse_cp_session=; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=0",
    )
}

/// The session cookie's value in a request, if it carries one.
pub(super) fn cookie_value(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
}

/// The user a live session signs in.
#[derive(Debug)]
pub struct PortalUser {
    /// The person (names the user's streams).
    pub person_id: String,
    /// The user.
    pub user: RegisteredUser,
}

impl FromRequestParts<AppState> for PortalUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = cookie_value(parts) else {
            return Err(ApiError::new(
                ErrorCode::MissingSession,
                "Sign in first: this route needs a session.",
            ));
        };
        if value.len() > SESSION_COOKIE_LEN_MAX {
            return Err(invalid());
        }
        match check_session(
            state.store.as_ref(),
            &state.keys,
            &value,
            chrono::Utc::now(),
        )
        .await?
        {
            SessionCheck::Live { person_id, user } => Ok(PortalUser { person_id, user }),
            SessionCheck::Invalid => Err(invalid()),
            SessionCheck::Expired => Err(ApiError::new(
                ErrorCode::ExpiredSession,
                "Your session has expired; sign in again.",
            )),
            SessionCheck::Revoked => Err(ApiError::new(
                ErrorCode::RevokedSession,
                "This session was signed out; sign in again.",
            )),
        }
    }
}

fn invalid() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidSession,
        "The session cookie is not valid; sign in again.",
    )
}
