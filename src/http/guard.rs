//! What every request passes before a handler sees it, and the answers the router gives on its
//! own: a request target (path and query) that does not decode to UTF-8 free of control
//! characters is refused with 400 `invalid_request`, identically whatever store is behind it; a
//! body must arrive within a deadline; an unknown path is 404 `not_found` and a wrong method 405
//! `method_not_allowed`, all in the JSON error shape.

use super::error::{ApiError, ErrorCode};
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Whether text from outside may be kept: no control character (NUL, C0, DEL, C1) at all.
pub fn is_clean_text(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

/// Percent-decodes `raw` (and `+` as a space when `plus_is_space`), requiring UTF-8 free of
/// control characters; `None` when it is not.
pub fn decode_component(raw: &str, plus_is_space: bool) -> Option<String> {
    let spaced;
    let raw = if plus_is_space && raw.contains('+') {
        spaced = raw.replace('+', " ");
        spaced.as_str()
    } else {
        raw
    };
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    String::from_utf8(bytes)
        .ok()
        .filter(|text| is_clean_text(text))
}

/// Every `name=value` pair of a query string or form body, strictly decoded; `None` when any
/// name or value is not UTF-8 free of control characters.
pub fn decode_pairs(raw: &str) -> Option<Vec<(String, String)>> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((
                decode_component(name, true)?,
                decode_component(value, true)?,
            ))
        })
        .collect()
}

/// Refuses a request whose path or query does not decode cleanly, before routing.
pub async fn clean_targets(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let refusal = if decode_component(uri.path(), false).is_none() {
        Some((
            "path",
            "The path must be percent-encoded UTF-8 without control characters.",
        ))
    } else if uri
        .query()
        .is_some_and(|query| decode_pairs(query).is_none())
    {
        Some((
            "query",
            "The query string must be percent-encoded UTF-8 without control characters.",
        ))
    } else {
        None
    };
    match refusal {
        Some((field, message)) => ApiError::new(ErrorCode::InvalidRequest, message)
            .with_details(serde_json::json!({ "field": field }))
            .into_response(),
        None => next.run(request).await,
    }
}

/// Gives each request's body a deadline: a body not received within `limit` of the request
/// reaching the router fails with [`BodyReadTimeout`], which the extractors answer with 408.
pub async fn body_deadline(limit: Duration, request: Request, next: Next) -> Response {
    let deadline = tokio::time::Instant::now() + limit;
    let request = request.map(|body| Body::new(DeadlineBody::new(body, deadline)));
    next.run(request).await
}

/// The body of a request that did not arrive before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyReadTimeout;

/// A body that fails once its deadline has passed.
struct DeadlineBody {
    body: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(body: Body, deadline: tokio::time::Instant) -> DeadlineBody {
        DeadlineBody {
            body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyReadTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Whether a body-reading error, anywhere in its chain of causes, is a missed deadline.
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<BodyReadTimeout>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The router's answer to a path no route matches.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "No route matches this path.")
}

/// The router's answer to a method the path's route does not take (it sets `Allow`).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "This path does not take this method; see the Allow header.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_components_decode() {
        assert_eq!(decode_component("a%20b+c", true).as_deref(), Some("a b c"));
        assert_eq!(decode_component("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(
            decode_component("caf%C3%A9", false).as_deref(),
            Some("café")
        );
    }

    #[test]
    fn invalid_utf8_and_control_characters_are_refused() {
        for raw in ["%FF%FE", "%C0%AF", "%00", "a%0Ab", "%7F", "%C2%85"] {
            assert_eq!(decode_component(raw, true), None, "{raw}");
        }
        assert_eq!(decode_pairs("after=%00"), None);
        assert_eq!(decode_pairs("email=%FF%40example.com"), None);
        assert_eq!(
            decode_pairs("a=1&b=&c"),
            Some(vec![
                (String::from("a"), String::from("1")),
                (String::from("b"), String::new()),
                (String::from("c"), String::new()),
            ])
        );
    }
}
