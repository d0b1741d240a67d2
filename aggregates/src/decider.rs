//! The Decider: the pure core of every command handler, and the codec that maps its events to the log.
//!
//! `decide(state, command, context)` returns the events a command produces or a domain error;
//! `evolve(state, event)` folds one event into the state. Both are pure. The service loads a stream,
//! folds it with `evolve`, calls `decide`, and appends the result at the version it loaded (see the
//! service's `command` module). Events are stored as `(event_type, schema_version, payload)`; an
//! event enum describes that mapping with serde's adjacent tagging:
//! `#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]`.

use crate::catalog::Catalog;
use chrono::{DateTime, Utc};
use serde::de::{DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::Serialize;
use std::fmt;

/// What a decision may depend on besides the state and the command: the time and the catalog in
/// force. Time comes in here, never from a clock inside the domain; generated ids and secret hashes
/// come in with the command that needs them, drawn by the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context<'a> {
    /// The instant the command is decided at.
    pub now: DateTime<Utc>,
    /// The plan catalog in force.
    pub catalog: &'a Catalog,
}

impl<'a> Context<'a> {
    /// A context deciding at `now` under `catalog`.
    pub fn new(now: DateTime<Utc>, catalog: &'a Catalog) -> Context<'a> {
        Context { now, catalog }
    }
}

/// A pure command handler for one stream type.
pub trait Decider {
    /// The stream type this decider owns, e.g. `license`.
    const STREAM_TYPE: &'static str;
    /// The state folded from the stream's events; `Default` is the state of an empty stream.
    /// Plain data, so the service may hold it across threads.
    type State: Default + Clone + Send + Sync;
    /// What a caller asks for.
    type Command: Send + Sync;
    /// What happened; see the module doc for the storage mapping.
    type Event: DomainEvent + Send + Sync;
    /// Why a command was refused.
    type Error: Send;

    /// Decides what a command produces given the current state. Returning no events is a valid
    /// answer: the command changed nothing.
    fn decide(
        state: &Self::State,
        command: &Self::Command,
        context: &Context<'_>,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state. Total: every event the decider ever produced must fold.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// How the state is kept in a snapshot, for stream types whose streams grow long (an account's
    /// leases, a license's grants): loads then fold only the events after the latest snapshot.
    /// `None`, the default, folds the whole stream on every load.
    const SNAPSHOTS: Option<SnapshotCodec<Self::State>> = None;
}

fn encode_state<S: Serialize>(state: &S) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(state)
}

/// The snapshot form of a decider's state: a JSON document tagged with the state's version.
pub struct SnapshotCodec<S> {
    /// The version of the state's shape and of `evolve`. Raise it whenever either changes: a
    /// snapshot of another version is ignored (and replaced), because it was folded by other code.
    pub state_version: i32,
    /// The state as a document.
    pub encode: fn(&S) -> Result<serde_json::Value, serde_json::Error>,
    /// The state from a document.
    pub decode: fn(serde_json::Value) -> Result<S, serde_json::Error>,
}

impl<S: Serialize + DeserializeOwned> SnapshotCodec<S> {
    /// The state's serde form, at `state_version`.
    pub const fn serde(state_version: i32) -> SnapshotCodec<S> {
        SnapshotCodec {
            state_version,
            encode: encode_state::<S>,
            decode: serde_json::from_value::<S>,
        }
    }
}

/// An event enum that can be stored in the log. The default schema version is 1; a type raises it
/// when its payload changes shape, together with an upcaster for the older versions.
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The schema version this code writes for the event's type.
    fn schema_version(&self) -> i32 {
        1
    }
}

/// An event that does not encode to the log's shape, or a stored event that does not decode into
/// the decider's event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    /// The event type (`?` when encoding failed before the type was known).
    pub event_type: String,
    /// What serde said.
    pub reason: String,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot decode event {:?}: {}",
            self.event_type, self.reason
        )
    }
}

impl std::error::Error for CodecError {}

/// One event ready for the log: its type, schema version and payload.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedEvent {
    /// The event type, e.g. `license_issued`.
    pub event_type: String,
    /// The schema version of `payload`.
    pub schema_version: i32,
    /// The event's data.
    pub payload: serde_json::Value,
}

/// Splits an adjacently tagged event into its type and payload.
pub fn encode<E: DomainEvent>(event: &E) -> Result<EncodedEvent, CodecError> {
    let fail = |reason: String| CodecError {
        event_type: String::from("?"),
        reason,
    };
    let value = serde_json::to_value(event).map_err(|e| fail(e.to_string()))?;
    let serde_json::Value::Object(mut fields) = value else {
        return Err(fail(String::from("an event must serialise to an object")));
    };
    let Some(serde_json::Value::String(event_type)) = fields.remove("event_type") else {
        return Err(fail(String::from(
            "an event must carry a string `event_type` tag",
        )));
    };
    let payload = fields
        .remove("payload")
        .unwrap_or(serde_json::Value::Object(Default::default()));
    Ok(EncodedEvent {
        schema_version: event.schema_version(),
        event_type,
        payload,
    })
}

/// Rebuilds an event from its stored type and (already upcast) payload, reading the payload in
/// place: the tagged form `{event_type, payload}` serde expects is presented field by field
/// ([`TaggedEvent`]) rather than built as a copy of the payload.
pub fn decode<E: DomainEvent>(
    event_type: &str,
    payload: &serde_json::Value,
) -> Result<E, CodecError> {
    let error = match E::deserialize(TaggedEvent::new(event_type, Some(payload))) {
        Ok(event) => return Ok(event),
        Err(error) => error,
    };
    // A unit variant is stored with an empty object payload (see `encode`); serde reads it untagged.
    let is_empty_object = payload.as_object().is_some_and(|fields| fields.is_empty());
    if is_empty_object {
        if let Ok(event) = E::deserialize(TaggedEvent::new(event_type, None)) {
            return Ok(event);
        }
    }
    Err(CodecError {
        event_type: event_type.to_owned(),
        reason: error.to_string(),
    })
}

/// An event's type and payload seen as the adjacently tagged map `{event_type, payload}`, the tag
/// first so serde decodes the payload straight into its variant.
struct TaggedEvent<'a> {
    event_type: &'a str,
    payload: Option<&'a serde_json::Value>,
    entries_read: u8,
}

impl<'a> TaggedEvent<'a> {
    fn new(event_type: &'a str, payload: Option<&'a serde_json::Value>) -> TaggedEvent<'a> {
        TaggedEvent {
            event_type,
            payload,
            entries_read: 0,
        }
    }
}

impl<'de> serde::Deserializer<'de> for TaggedEvent<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

impl<'de> MapAccess<'de> for TaggedEvent<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let key = match (self.entries_read, self.payload) {
            (0, _) => "event_type",
            (1, Some(_)) => "payload",
            _ => return Ok(None),
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.entries_read += 1;
        match (self.entries_read, self.payload) {
            (1, _) => seed.deserialize(self.event_type.into_deserializer()),
            (2, Some(payload)) => seed.deserialize(payload),
            _ => Err(serde::de::Error::custom("no value after the last key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
    enum Sample {
        Opened { name: String },
        Closed,
    }

    impl DomainEvent for Sample {}

    #[test]
    fn events_round_trip_through_the_log_encoding() {
        for event in [Sample::Opened { name: "a".into() }, Sample::Closed] {
            let encoded = encode(&event).unwrap();
            assert_eq!(encoded.schema_version, 1);
            let decoded: Sample = decode(&encoded.event_type, &encoded.payload).unwrap();
            assert_eq!(decoded, event);
        }
    }

    #[test]
    fn a_unit_event_is_stored_with_an_empty_object_payload() {
        let encoded = encode(&Sample::Closed).unwrap();
        assert_eq!(encoded.event_type, "closed");
        assert_eq!(encoded.payload, serde_json::json!({}));
    }

    #[test]
    fn an_unknown_event_type_is_a_decode_error_not_a_panic() {
        let error = decode::<Sample>("renamed", &serde_json::json!({})).unwrap_err();
        assert_eq!(error.event_type, "renamed");
    }
}
