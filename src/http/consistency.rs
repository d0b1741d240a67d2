//! Read-your-writes over HTTP. Every answer to a request whose decisions wrote to the log (or
//! replayed what they wrote) carries `x-log-position`: the newest position written. A read served
//! from read models that may lag accepts it back as `x-min-log-position` ([`ReadAfter`]) and
//! answers only once every read model has folded that far — within
//! [`READ_YOUR_WRITES_WAIT_MAX`], else 503 `read_model_lagging` with `Retry-After`. The
//! installation's reads served from memory (`crate::flows::license_cache`) take it as
//! [`MinLogPosition`] and go to the database when memory is older.

use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::engine::decision::tracking_writes;
use crate::engine::projection::{wait_for_position, READ_YOUR_WRITES_WAIT_MAX};
use aggregates::log::Position;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The response header naming the newest log position a request wrote.
pub const LOG_POSITION_HEADER: &str = "x-log-position";
/// The request header asking a read to wait until the read models have folded a position.
pub const MIN_LOG_POSITION_HEADER: &str = "x-min-log-position";
/// The `Retry-After` of a 503 `read_model_lagging`.
const LAGGING_RETRY_AFTER_SECONDS: i64 = 1;

/// Adds `x-log-position` to the answer of a request whose decisions wrote to the log.
pub async fn log_position_header(request: Request, next: Next) -> Response {
    let (mut response, written) = tracking_writes(next.run(request)).await;
    if let Some(position) = written {
        response
            .headers_mut()
            .insert(LOG_POSITION_HEADER, HeaderValue::from(position.0));
    }
    response
}

/// The position a client's own write returned, when it sent `x-min-log-position`: a read must
/// not answer from anything older.
pub struct MinLogPosition(pub Option<Position>);

impl MinLogPosition {
    fn from_headers(parts: &Parts) -> Result<MinLogPosition, ApiError> {
        let Some(raw) = parts.headers.get(MIN_LOG_POSITION_HEADER) else {
            return Ok(MinLogPosition(None));
        };
        raw.to_str()
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse::<i64>().ok())
            .map(|position| MinLogPosition(Some(Position(position))))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("{MIN_LOG_POSITION_HEADER} must be a log position (a whole number)."),
                )
                .with_details(serde_json::json!({ "field": MIN_LOG_POSITION_HEADER }))
            })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for MinLogPosition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        MinLogPosition::from_headers(parts)
    }
}

/// A read that first waits, when asked, until every read model has folded the position the
/// client's own write returned.
pub struct ReadAfter;

impl FromRequestParts<AppState> for ReadAfter {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let MinLogPosition(Some(position)) = MinLogPosition::from_headers(parts)? else {
            return Ok(ReadAfter);
        };
        for fold in state.projections.iter() {
            let reached = wait_for_position(
                state.store.as_ref(),
                fold.name(),
                position,
                READ_YOUR_WRITES_WAIT_MAX,
            )
            .await?;
            if !reached {
                return Err(ApiError::new(
                    ErrorCode::ReadModelLagging,
                    format!(
                        "The read models have not reached position {} yet; retry shortly.",
                        position.0
                    ),
                )
                .with_details(
                    serde_json::json!({ "projection": fold.name(), "position": position.0 }),
                )
                .retry_after(LAGGING_RETRY_AFTER_SECONDS));
            }
        }
        Ok(ReadAfter)
    }
}
