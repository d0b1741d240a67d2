//! The one place HTTP errors become responses: status, stable `code`, and the JSON body
//! `{error, code, message, details, request_id}`. Causes are logged here, never sent.

use axum::http::{HeaderMap, StatusCode};
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

    /// An unexpected failure: the cause is logged with the request id and the client gets an opaque 500.
    pub fn internal(cause: &(dyn std::error::Error + 'static), headers: &HeaderMap) -> ApiError {
        let request_id = request_id(headers);
        tracing::error!(%request_id, error = %cause, source = ?cause.source(), "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "The request failed on our side; it has been logged. Retrying is safe.",
        )
        .for_request(headers)
    }
}

/// The request id a request carries, or an empty string.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.status.canonical_reason().unwrap_or("error"),
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "request_id": self.request_id,
        });
        (self.status, Json(body)).into_response()
    }
}
