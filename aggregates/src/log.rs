//! The log's vocabulary: positions, stream versions, stream names and the recorded-event envelope.
//!
//! These are boundary types: a recorded event is a compatibility promise, so its envelope is
//! serialisable and its payload carries an explicit schema version. How events are stored is the
//! service's business; this module only says what a stored event *is*.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A position in the global log. Positions rise in commit order; `Position::START` precedes every event.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub i64);

impl Position {
    /// The position before the first event: reading after it reads the whole log.
    pub const START: Position = Position(0);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The version of one stream: the number of events in it. A new stream has version 0; its first
/// event has version 1.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct StreamVersion(pub i64);

impl StreamVersion {
    /// The version of a stream that has no events.
    pub const EMPTY: StreamVersion = StreamVersion(0);

    /// The version the next event appended to this stream will carry.
    pub fn next(self) -> StreamVersion {
        StreamVersion(self.0 + 1)
    }
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a stream name was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamNameError {
    /// The stream type must be 1 to [`STREAM_TYPE_LEN_MAX`] characters of `a-z`, `0-9` and `_`,
    /// starting with a letter.
    InvalidType(String),
    /// The stream id must be 1 to [`STREAM_ID_LEN_MAX`] characters of `A-Z a-z 0-9 _ -`.
    InvalidId(String),
}

impl fmt::Display for StreamNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamNameError::InvalidType(t) => write!(f, "invalid stream type {t:?}"),
            StreamNameError::InvalidId(id) => write!(f, "invalid stream id {id:?}"),
        }
    }
}

impl std::error::Error for StreamNameError {}

/// Longest stream type accepted; stream types are short code-level names such as `license`.
pub const STREAM_TYPE_LEN_MAX: usize = 64;
/// Longest stream id accepted; ids are prefixed base32 (`lic_…`) or Stripe ids, far below this.
pub const STREAM_ID_LEN_MAX: usize = 128;

/// The name of one stream: its type (the aggregate kind) and its id. Only [`StreamName::parse`]
/// builds one, so every stream name inside the ledger is valid.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct StreamName {
    stream_type: String,
    stream_id: String,
}

impl StreamName {
    /// Parses a stream type and id, refusing anything outside the documented alphabets and lengths.
    pub fn parse(stream_type: &str, stream_id: &str) -> Result<StreamName, StreamNameError> {
        let type_ok = !stream_type.is_empty()
            && stream_type.len() <= STREAM_TYPE_LEN_MAX
            && stream_type.starts_with(|c: char| c.is_ascii_lowercase())
            && stream_type
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !type_ok {
            return Err(StreamNameError::InvalidType(stream_type.to_owned()));
        }
        let id_ok = !stream_id.is_empty()
            && stream_id.len() <= STREAM_ID_LEN_MAX
            && stream_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !id_ok {
            return Err(StreamNameError::InvalidId(stream_id.to_owned()));
        }
        Ok(StreamName {
            stream_type: stream_type.to_owned(),
            stream_id: stream_id.to_owned(),
        })
    }

    /// The stream type, e.g. `license`.
    pub fn stream_type(&self) -> &str {
        &self.stream_type
    }

    /// The stream id, e.g. `lic_0123456789`.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }
}

impl<'de> Deserialize<'de> for StreamName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            stream_type: String,
            stream_id: String,
        }
        let raw = Raw::deserialize(deserializer)?;
        StreamName::parse(&raw.stream_type, &raw.stream_id).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stream_type, self.stream_id)
    }
}

/// Who did it, why, and when it took effect: recorded with every event of one append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Who caused the event, e.g. `stripe`, `installation:inst_…`, `staff:…`, `system`.
    pub actor: String,
    /// The id of the event or request that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The id shared by every event of one business flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The HTTP request that led to the event, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When the fact took effect in the world (the log is bitemporal: `recorded_at` is when the
    /// ledger learned it).
    pub effective_at: DateTime<Utc>,
}

/// One event as the log holds it, after any upcasting to the current schema version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Its place in the global log.
    pub global_position: Position,
    /// The stream it belongs to.
    pub stream: StreamName,
    /// Its version within that stream (the first event is 1).
    pub stream_version: StreamVersion,
    /// Its globally unique id.
    pub event_id: String,
    /// Its type, e.g. `license_issued`.
    pub event_type: String,
    /// The schema version of `payload`.
    pub schema_version: i32,
    /// The event's data.
    pub payload: serde_json::Value,
    /// Who, why and when.
    pub metadata: EventMetadata,
    /// When the ledger recorded it.
    pub recorded_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_accept_prefixed_ids() {
        let name = StreamName::parse("license", "lic_0123456789").unwrap();
        assert_eq!(name.to_string(), "license/lic_0123456789");
    }

    #[test]
    fn stream_names_refuse_other_alphabets_and_lengths() {
        assert!(StreamName::parse("License", "x").is_err());
        assert!(StreamName::parse("1license", "x").is_err());
        assert!(StreamName::parse("", "x").is_err());
        assert!(StreamName::parse("license", "").is_err());
        assert!(StreamName::parse("license", "a/b").is_err());
        assert!(StreamName::parse("license", &"a".repeat(STREAM_ID_LEN_MAX + 1)).is_err());
        assert!(StreamName::parse(&"a".repeat(STREAM_TYPE_LEN_MAX + 1), "x").is_err());
    }

    #[test]
    fn stream_names_are_validated_when_deserialised() {
        let bad = serde_json::json!({"stream_type": "license", "stream_id": "a b"});
        assert!(serde_json::from_value::<StreamName>(bad).is_err());
    }
}
