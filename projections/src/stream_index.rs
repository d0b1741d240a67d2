//! The stream index: one document per stream, saying how long it is and where it sits in the log.
//!
//! Support uses it to list what exists (every license, handoff, account …) without scanning the
//! log, and to know which positions to replay for one stream.

use crate::{DocumentProjection, FoldError};
use aggregates::log::{Position, RecordedEvent, StreamVersion};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The stream index projection.
pub struct StreamIndex;

/// What the index knows about one stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    /// The stream type.
    pub stream_type: String,
    /// The stream id.
    pub stream_id: String,
    /// The stream's version after its latest event.
    pub version: StreamVersion,
    /// The position of its first event.
    pub first_position: Position,
    /// The position of its latest event.
    pub last_position: Position,
    /// The type of its latest event.
    pub last_event_type: String,
    /// When its first event was recorded.
    pub first_recorded_at: DateTime<Utc>,
    /// When its latest event was recorded.
    pub last_recorded_at: DateTime<Utc>,
}

impl StreamIndex {
    /// The document key of a stream: `type/id`.
    pub fn key(stream_type: &str, stream_id: &str) -> String {
        format!("{stream_type}/{stream_id}")
    }
}

impl DocumentProjection for StreamIndex {
    const NAME: &'static str = "stream_index";
    type Document = StreamSummary;

    fn document_keys(event: &RecordedEvent) -> Vec<String> {
        vec![StreamIndex::key(
            event.stream.stream_type(),
            event.stream.stream_id(),
        )]
    }

    fn apply(
        _key: &str,
        document: Option<StreamSummary>,
        event: &RecordedEvent,
    ) -> Result<Option<StreamSummary>, FoldError> {
        let expected_version = document
            .as_ref()
            .map_or(StreamVersion(1), |summary| summary.version.next());
        if event.stream_version != expected_version {
            return Err(FoldError::new(format!(
                "stream {} jumps from version {} to {} at position {}",
                event.stream,
                expected_version.0 - 1,
                event.stream_version,
                event.global_position
            )));
        }
        let summary = match document {
            None => StreamSummary {
                stream_type: event.stream.stream_type().to_owned(),
                stream_id: event.stream.stream_id().to_owned(),
                version: event.stream_version,
                first_position: event.global_position,
                last_position: event.global_position,
                last_event_type: event.event_type.clone(),
                first_recorded_at: event.recorded_at,
                last_recorded_at: event.recorded_at,
            },
            Some(summary) => StreamSummary {
                version: event.stream_version,
                last_position: event.global_position,
                last_event_type: event.event_type.clone(),
                last_recorded_at: event.recorded_at,
                ..summary
            },
        };
        Ok(Some(summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aggregates::log::{EventMetadata, StreamName};
    use chrono::TimeZone;

    fn event(position: i64, id: &str, version: i64, event_type: &str) -> RecordedEvent {
        let at = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap()
            + chrono::Duration::seconds(position);
        RecordedEvent {
            global_position: Position(position),
            stream: StreamName::parse("license", id).unwrap(),
            stream_version: StreamVersion(version),
            event_id: format!("e{position}"),
            event_type: event_type.to_owned(),
            schema_version: 1,
            payload: serde_json::json!({}),
            metadata: EventMetadata {
                actor: "system".into(),
                causation_id: None,
                correlation_id: None,
                request_id: None,
                effective_at: at,
            },
            recorded_at: at,
        }
    }

    fn fold(events: &[RecordedEvent]) -> Result<Option<StreamSummary>, FoldError> {
        events.iter().try_fold(None, |doc, e| {
            let key = &StreamIndex::document_keys(e)[0];
            StreamIndex::apply(key, doc, e)
        })
    }

    #[test]
    fn a_stream_summary_tracks_first_and_last_event() {
        let summary = fold(&[
            event(3, "lic_a", 1, "license_issued"),
            event(9, "lic_a", 2, "license_revoked"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(summary.version, StreamVersion(2));
        assert_eq!(summary.first_position, Position(3));
        assert_eq!(summary.last_position, Position(9));
        assert_eq!(summary.last_event_type, "license_revoked");
        assert!(summary.first_recorded_at < summary.last_recorded_at);
    }

    #[test]
    fn a_version_gap_stops_the_fold_instead_of_hiding_it() {
        let error = fold(&[event(1, "lic_a", 1, "a"), event(2, "lic_a", 3, "b")]).unwrap_err();
        assert!(
            error.reason.contains("jumps from version 1 to 3"),
            "{error}"
        );
    }

    #[test]
    fn every_event_touches_exactly_its_own_stream_document() {
        assert_eq!(
            StreamIndex::document_keys(&event(1, "lic_b", 1, "a")),
            vec!["license/lic_b".to_owned()]
        );
    }
}
