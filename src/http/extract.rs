//! Extractors that validate at the edge: JSON, form and raw bodies, query strings and path
//! parameters whose rejections become our JSON errors, the `Idempotency-Key` header, and bearer
//! tokens. A malformed header is an error, never ignored.

use super::error::{ApiError, ErrorCode};
use super::guard::{decode_pairs, is_body_timeout};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// Longest `Idempotency-Key` accepted (Stripe's limit).
pub const IDEMPOTENCY_KEY_HEADER_LEN_MAX: usize = 255;

/// A JSON body; a bad one answers 400 `invalid_request` naming the field (or 413, 415, 408) in
/// our error shape. Every string in it must be free of control characters other than tab and
/// line breaks, and strings are checked before anything else sees them.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = request.headers().clone();
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| {
                let media = media.trim().to_ascii_lowercase();
                media == "application/json" || media.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "Send the body as JSON with Content-Type: application/json.",
            ));
        }
        let ApiBytes(body) = ApiBytes::from_request(request, state).await?;
        parse_json(&body).map(ApiJson)
    }
}

/// Parses a JSON body into `T`: the message names the field that failed, never the parser's
/// own text; a string holding a control character (other than tab and line breaks) is refused.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let invalid = |message: String, field: Option<String>| {
        ApiError::new(ErrorCode::InvalidRequest, message)
            .with_details(serde_json::json!({ "field": field }))
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        invalid(
            format!(
                "The body is not valid JSON (line {}, column {}).",
                error.line(),
                error.column()
            ),
            None,
        )
    })?;
    if let Some(field) = field_with_control_character(&value, String::new()) {
        return Err(invalid(
            format!("Field `{field}` holds a control character."),
            Some(field),
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let field = error.path().to_string();
        let reason = field_error_reason(&error.inner().to_string());
        if field == "." {
            invalid(format!("The body {reason}."), None)
        } else {
            invalid(format!("Field `{field}` {reason}."), Some(field))
        }
    })
}

/// What is wrong with a field, in our words: serde's message classified, not repeated.
fn field_error_reason(serde_message: &str) -> String {
    if let Some(rest) = serde_message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        return format!("is missing `{name}`");
    }
    if let Some(rest) = serde_message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        return format!("has an unknown field `{name}`");
    }
    if serde_message.starts_with("invalid type") {
        return String::from("has the wrong type");
    }
    if serde_message.starts_with("unknown variant") {
        return String::from("is not one of the accepted values");
    }
    String::from("is not valid")
}

/// The path of the first string (or object key) holding a control character other than tab and
/// line breaks.
fn field_with_control_character(value: &serde_json::Value, path: String) -> Option<String> {
    let dirty = |text: &str| {
        text.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    };
    match value {
        serde_json::Value::String(text) => dirty(text).then_some(path),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| field_with_control_character(item, format!("{path}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(name, item)| {
            let here = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            if dirty(name) {
                return Some(here);
            }
            field_with_control_character(item, here)
        }),
        _ => None,
    }
}

/// A raw body within the route's size limit; too large answers 413 `payload_too_large`, one
/// that does not arrive in time 408 `request_timeout`.
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(ApiBytes(bytes)),
            Err(rejection) => Err(body_rejection(&rejection)),
        }
    }
}

fn body_rejection(rejection: &BytesRejection) -> ApiError {
    if let BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) = rejection {
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            "The body is larger than this route accepts.",
        );
    }
    if is_body_timeout(rejection) {
        return ApiError::new(
            ErrorCode::RequestTimeout,
            "The body did not arrive in time.",
        );
    }
    ApiError::new(ErrorCode::InvalidRequest, "The body could not be read.")
}

/// A query string, strictly decoded (UTF-8, no control characters); a bad one answers 400
/// `invalid_request` in our error shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_pairs(parts.uri.query().unwrap_or_default(), "query string").map(ApiQuery)
    }
}

/// A form body (`application/x-www-form-urlencoded`), strictly decoded like [`ApiQuery`].
pub struct ApiForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiForm<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ApiBytes(body) = ApiBytes::from_request(request, state).await?;
        let text = std::str::from_utf8(&body).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "The form must be percent-encoded UTF-8.",
            )
        })?;
        parse_pairs(text, "form").map(ApiForm)
    }
}

/// A body a browser form (`application/x-www-form-urlencoded`) or a JSON client sent, each
/// decoded as strictly as [`ApiForm`] and [`ApiJson`], and which of the two it was: a form is
/// answered with a page or a redirect, a JSON client with JSON. Any other media type is 415.
pub struct FormOrJson<T> {
    /// The decoded body.
    pub value: T,
    /// Whether a form sent it.
    pub from_form: bool,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for FormOrJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let media = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(|media| media.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if media == "application/x-www-form-urlencoded" {
            let ApiForm(value) = ApiForm::from_request(request, state).await?;
            return Ok(FormOrJson {
                value,
                from_form: true,
            });
        }
        let ApiJson(value) = ApiJson::from_request(request, state).await?;
        Ok(FormOrJson {
            value,
            from_form: false,
        })
    }
}

/// Decodes `name=value` pairs strictly, then deserialises them into `T`.
fn parse_pairs<T: DeserializeOwned>(raw: &str, what: &str) -> Result<T, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidRequest, message);
    let pairs = decode_pairs(raw).ok_or_else(|| {
        invalid(format!(
            "The {what} must be percent-encoded UTF-8 without control characters."
        ))
    })?;
    let mut names = std::collections::BTreeSet::new();
    if let Some((name, _)) = pairs.iter().find(|(name, _)| !names.insert(name)) {
        return Err(invalid(format!("`{name}` is given more than once.")));
    }
    serde_urlencoded::from_str::<T>(&serde_urlencoded::to_string(&pairs).unwrap_or_default())
        .map_err(|error| {
            invalid(format!(
                "The {what} is not valid: {}.",
                field_error_reason(&error.to_string())
            ))
        })
}

/// Path parameters; a bad one answers 400 `invalid_request` in our error shape (the router
/// already refused a path that does not decode cleanly).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(_) => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "A path parameter is not valid.",
            )),
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
            None => Err(ApiError::new(ErrorCode::InvalidRequest,
                format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_HEADER_LEN_MAX} printable ASCII characters."),
            )),
        }
    }
}

/// The address of the client at the other end of the connection (the server records it on each
/// request); the unspecified address when the router is driven without a socket (in-process tests).
pub struct ClientAddress(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |info| info.0.ip()),
        ))
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
                ErrorCode::Unauthorized,
                "Send Authorization: Bearer <token>.",
            )),
        }
    }
}
