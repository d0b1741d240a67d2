//! The HTTP/1.1 server under the router: accepts at most [`ServerLimits::connections_max`]
//! connections at once, closes a connection whose request head does not arrive within
//! [`ServerLimits::header_read_timeout`] (the same bound closes an idle keep-alive connection),
//! and answers hyper's own refusals (a head with too many or too large headers, an unparsable
//! request) in the API's JSON error shape instead of hyper's empty bodies.
//!
//! Hyper writes those refusals itself, before any request reaches the router, and offers no
//! hook to shape them. Every answer the router gives carries `x-request-id` (the request-id
//! layer); [`JsonTransportErrors`] wraps each connection and replaces a response head hyper
//! wrote without one by the JSON answer of the same status.

use super::error::{error_body, ErrorCode, REQUEST_ID_HEADER};
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Most header fields one request may carry; more answers 431.
pub const REQUEST_HEADERS_MAX: usize = 100;
/// Largest request head (request line and headers) in bytes; larger answers 431. Hyper's read
/// buffer is this size, so it also bounds the memory one connection holds before its body.
pub const REQUEST_HEAD_BYTES_MAX: usize = 64 * 1024;
/// How long a failed accept (e.g. out of file descriptors) waits before the next one.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// How the server bounds its clients.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Time to receive a request's whole head, counted from when the connection is ready for
    /// it: a slow head and an idle keep-alive connection are both closed after it.
    pub header_read_timeout: Duration,
    /// Time to receive a request's whole body, counted from when the router took the request;
    /// a body not received by then answers 408.
    pub body_read_timeout: Duration,
    /// Most connections open at once; further clients wait in the listen backlog.
    pub connections_max: usize,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            connections_max: 1024,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and waits for
/// the open connections to finish their in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(REQUEST_HEADERS_MAX)
        .max_buf_size(REQUEST_HEAD_BYTES_MAX);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let connection = builder.serve_connection(
            TokioIo::new(JsonTransportErrors::new(stream)),
            TowerToHyperService::new(router.clone().map_request(
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                },
            )),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A connection whose hyper-written refusals are rewritten into the API's JSON error shape.
pub struct JsonTransportErrors<IO> {
    io: IO,
    /// A replacement answer still being written, and how much of it was.
    pending: Option<(Vec<u8>, usize)>,
}

impl<IO> JsonTransportErrors<IO> {
    /// Wraps a connection.
    pub fn new(io: IO) -> JsonTransportErrors<IO> {
        JsonTransportErrors { io, pending: None }
    }
}

impl<IO: AsyncWrite + Unpin> JsonTransportErrors<IO> {
    /// Writes what is left of a replacement answer; ready once all of it is written.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for JsonTransportErrors<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for JsonTransportErrors<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pending(cx))?;
        if let Some(status) = transport_refusal(buf) {
            this.pending = Some((json_refusal(status), 0));
            std::task::ready!(this.poll_pending(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// The status of a response head hyper wrote on its own (no `x-request-id`, so not the
/// router's), when it is one of the refusals hyper sends for a request it could not read.
fn transport_refusal(buf: &[u8]) -> Option<StatusCode> {
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let status = StatusCode::from_bytes(rest.get(..3)?).ok()?;
    if !matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::URI_TOO_LONG
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    ) {
        return None;
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let from_router = head.split("\r\n").any(|line| {
        line.starts_with(REQUEST_ID_HEADER) && line[REQUEST_ID_HEADER.len()..].starts_with(':')
    });
    (!from_router).then_some(status)
}

/// The JSON answer that replaces hyper's refusal of `status`; the connection then closes.
fn json_refusal(status: StatusCode) -> Vec<u8> {
    let (code, message) = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            ErrorCode::HeadersTooLarge,
            format!(
                "The request head is too large: at most {REQUEST_HEADERS_MAX} headers and {} KiB.",
                REQUEST_HEAD_BYTES_MAX / 1024
            ),
        ),
        StatusCode::URI_TOO_LONG => (
            ErrorCode::UriTooLong,
            String::from("The request's URI is too long."),
        ),
        _ => (
            ErrorCode::MalformedRequest,
            String::from("The request is not valid HTTP/1.1."),
        ),
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = error_body(
        code.status(),
        code.as_str(),
        &message,
        &serde_json::json!({}),
        &request_id,
    )
    .to_string();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{REQUEST_ID_HEADER}: {request_id}\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len(),
    )
    .into_bytes();
    answer.extend_from_slice(body.as_bytes());
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_hyper_wrote_is_recognised() {
        let head =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(
            transport_refusal(head),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }

    #[test]
    fn an_answer_of_the_router_is_left_alone() {
        let head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-request-id: 1\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(transport_refusal(head), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(transport_refusal(ok), None);
    }

    #[test]
    fn the_replacement_is_the_json_error_shape() {
        let answer =
            String::from_utf8(json_refusal(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], "headers_too_large");
        assert!(!body["request_id"].as_str().unwrap().is_empty());
    }
}
