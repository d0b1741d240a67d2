//! Extractors that validate at the edge: JSON bodies and query strings whose rejections become our
//! JSON errors, the `Idempotency-Key` header, and bearer tokens. A malformed header is an error,
//! never ignored.

use super::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

/// Longest `Idempotency-Key` accepted (Stripe's limit).
pub const IDEMPOTENCY_KEY_HEADER_LEN_MAX: usize = 255;

/// A JSON body; a bad one answers 400 `invalid_request` (or 413, 415) in our error shape.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = request.headers().clone();
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => {
                let (status, code) = match &rejection {
                    JsonRejection::MissingJsonContentType(_) => {
                        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
                    }
                    JsonRejection::BytesRejection(_) => {
                        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
                    }
                    _ => (StatusCode::BAD_REQUEST, "invalid_request"),
                };
                Err(ApiError::new(status, code, rejection.body_text()).for_request(&headers))
            }
        }
    }
}

/// A query string; a bad one answers 400 `invalid_request` in our error shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                rejection.body_text(),
            )
            .for_request(&parts.headers)),
        }
    }
}

/// The optional `Idempotency-Key` header: 1 to 255 printable ASCII characters when present.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let key = value.to_str().ok().filter(|key| {
            !key.is_empty()
                && key.len() <= IDEMPOTENCY_KEY_HEADER_LEN_MAX
                && key.bytes().all(|b| b.is_ascii_graphic())
        });
        match key {
            Some(key) => Ok(IdempotencyKey(Some(key.to_owned()))),
            None => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_HEADER_LEN_MAX} printable ASCII characters."),
            )
            .for_request(&parts.headers)),
        }
    }
}

/// A bearer token from `Authorization: Bearer …`; missing or malformed answers 401 `unauthorized`.
pub struct Bearer(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty() && token.len() <= 512);
        match token {
            Some(token) => Ok(Bearer(token.to_owned())),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Send Authorization: Bearer <token>.",
            )
            .for_request(&parts.headers)),
        }
    }
}
