//! `GET /v1/staff/export` (auditor): the auditor export over HTTP — the log after `after` (up to
//! `to`) as chained JSONL or CSV ending with the signed manifest, exactly as `pulse-account
//! export` writes it. The body streams page by page through a small bounded channel, so memory
//! stays constant and a slow client slows the export rather than filling the server; the
//! `x-export-head-position` header gives the head the export runs towards, so a client shows
//! progress from each record's position. A failure mid-way aborts the body: the export then lacks
//! its signed manifest, and `pulse-account verify` says so.

use super::error::{ApiError, ErrorBody};
use super::extract::ApiQuery;
use super::staff::Staff;
use super::AppState;
use crate::engine::audit::{export_to, ExportFormat, ExportOutput};
use aggregates::error::DomainError;
use aggregates::log::Position;
use aggregates::staff::StaffRole;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this area.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(export))
}

/// Pages encoded ahead of what the client has read.
const EXPORT_PAGES_IN_FLIGHT: usize = 2;

/// What range and format to export.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportQuery {
    format: Option<String>,
    after: Option<i64>,
    to: Option<i64>,
}

/// Sends each page into the response body; a client that went away stops the export.
struct ChannelOutput(mpsc::Sender<Result<Vec<u8>, std::io::Error>>);

#[async_trait::async_trait]
impl ExportOutput for ChannelOutput {
    async fn write_page(&mut self, bytes: Vec<u8>, _: Position) -> std::io::Result<()> {
        self.0
            .send(Ok(bytes))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

/// `GET /v1/staff/export?format=jsonl|csv&after=&to=`.
#[utoipa::path(get, path = "/v1/staff/export", tag = "staff",
    security(("staff_token" = [])),
    params(("format" = Option<String>, Query, description = "`jsonl` (default) or `csv`"),
           ("after" = Option<i64>, Query, description = "Start after this position"),
           ("to" = Option<i64>, Query, description = "End at this position (default: the head now)")),
    responses(
        (status = 200, description = "The chained, signed export, streamed page by page; `x-export-head-position` tells how far it runs"),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: the auditor role is needed", body = ErrorBody)))]
pub(super) async fn export(
    State(state): State<AppState>,
    staff: Staff,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    staff.require(StaffRole::Auditor, "export the log")?;
    let (format, content_type) = match query.format.as_deref().unwrap_or("jsonl") {
        "jsonl" => (ExportFormat::Jsonl, "application/x-ndjson"),
        "csv" => (ExportFormat::Csv, "text/csv; charset=utf-8"),
        _ => {
            return Err(ApiError::domain(&DomainError::invalid(
                "format",
                "must be jsonl or csv",
            )))
        }
    };
    let after = query.after.unwrap_or(0);
    if after < 0 || query.to.is_some_and(|to| to <= after) {
        return Err(DomainError::invalid(
            "after",
            "after must be 0 or more, and to greater than after",
        )
        .into());
    }
    let head = state.store.head_position().await?;
    let (pages, receiver) = mpsc::channel(EXPORT_PAGES_IN_FLIGHT);
    tokio::spawn(async move {
        let mut output = ChannelOutput(pages.clone());
        let exported = export_to(
            state.store.as_ref(),
            &state.keys.signer,
            Position(after),
            query.to.map(Position),
            format,
            &mut output,
        )
        .await;
        if let Err(error) = exported {
            tracing::error!(%error, "a staff export failed; its body is cut short");
            let _ = pages
                .send(Err(std::io::Error::other(error.to_string())))
                .await;
        }
    });
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|page| (page, receiver))
    });
    let mut response = Response::new(Body::from_stream(body));
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response_headers.insert("x-export-head-position", HeaderValue::from(head.0));
    Ok(response)
}
