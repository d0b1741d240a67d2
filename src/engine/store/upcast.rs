//! Upcasting: turning a stored payload of an older schema version into the current shape on read.
//!
//! The log is never rewritten, so a payload written under schema version 1 is read forever. Each
//! registered step lifts one `(event_type, schema_version)` to `schema_version + 1`; the store
//! applies steps until none matches, on every read path (stream reads and global reads alike).

use aggregates::log::RecordedEvent;
use std::collections::HashMap;

/// One step: the payload of `(event_type, version)` in, the payload of `version + 1` out.
pub type UpcastStep = fn(serde_json::Value) -> Result<serde_json::Value, String>;

/// Most steps one event may go through: a guard against a registry that loops.
pub const UPCAST_STEPS_MAX: usize = 64;

/// A registered step failed on a stored payload.
#[derive(Debug, thiserror::Error)]
#[error("cannot upcast {event_type} v{schema_version} at position {position}: {reason}")]
pub struct UpcastError {
    /// The event type.
    pub event_type: String,
    /// The version the failing step started from.
    pub schema_version: i32,
    /// The event's global position.
    pub position: i64,
    /// What the step said.
    pub reason: String,
}

/// The registry of upcast steps, keyed by event type and then by the schema version a step lifts
/// from (two levels, so a read looks a type up by `&str` without allocating).
#[derive(Default)]
pub struct Upcasters {
    steps: HashMap<String, HashMap<i32, UpcastStep>>,
}

impl Upcasters {
    /// The registry of the domain's upcasters: each payload change registers its step here.
    pub fn domain() -> Upcasters {
        Upcasters::default()
            .register("checkout_completed", 1, checkout_completed_v1)
            .register("member_invited", 1, with_unknown_time)
            .register("member_joined", 1, with_unknown_time)
            .register("tenant_provisioned", 1, without_a_name)
    }

    /// Registers the step that lifts `event_type` from `from_version` to `from_version + 1`.
    pub fn register(mut self, event_type: &str, from_version: i32, step: UpcastStep) -> Upcasters {
        self.steps
            .entry(event_type.to_owned())
            .or_default()
            .insert(from_version, step);
        self
    }

    /// Lifts an event's payload to the newest version the registry knows.
    pub fn upcast(&self, mut event: RecordedEvent) -> Result<RecordedEvent, UpcastError> {
        let Some(steps) = self.steps.get(event.event_type.as_str()) else {
            return Ok(event);
        };
        for _ in 0..UPCAST_STEPS_MAX {
            let Some(step) = steps.get(&event.schema_version) else {
                return Ok(event);
            };
            let payload = std::mem::take(&mut event.payload);
            event.payload = step(payload).map_err(|reason| UpcastError {
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                position: event.global_position.0,
                reason,
            })?;
            event.schema_version += 1;
        }
        Err(UpcastError {
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            position: event.global_position.0,
            reason: format!("more than {UPCAST_STEPS_MAX} upcast steps"),
        })
    }
}

/// `checkout_completed` 1 → 2: schema 2 names the hosted account a purchase opened; schema 1 did
/// not record it, so it is null.
fn checkout_completed_v1(mut payload: serde_json::Value) -> Result<serde_json::Value, String> {
    let object = payload
        .as_object_mut()
        .ok_or_else(|| String::from("the payload is not an object"))?;
    object
        .entry("account_id")
        .or_insert(serde_json::Value::Null);
    Ok(payload)
}

/// Schema 2 of `member_invited` and `member_joined` records when (`at`); earlier ones did not say.
fn with_unknown_time(mut payload: serde_json::Value) -> Result<serde_json::Value, String> {
    payload
        .as_object_mut()
        .ok_or_else(|| String::from("the payload is not an object"))?
        .entry("at")
        .or_insert(serde_json::Value::Null);
    Ok(payload)
}

/// Schema 2 of `tenant_provisioned` may name the workspace; earlier ones had no name.
fn without_a_name(mut payload: serde_json::Value) -> Result<serde_json::Value, String> {
    payload
        .as_object_mut()
        .ok_or_else(|| String::from("the payload is not an object"))?
        .entry("display_name")
        .or_insert(serde_json::Value::Null);
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::Upcasters;
    use aggregates::decider::decode;
    use aggregates::handoff::HandoffEvent;
    use aggregates::log::{EventMetadata, Position, RecordedEvent, StreamName, StreamVersion};
    use chrono::Utc;
    use serde_json::json;

    fn stored(payload: serde_json::Value) -> RecordedEvent {
        RecordedEvent {
            global_position: Position(1),
            stream: StreamName::parse("handoff", "cph_0000000001").unwrap(),
            stream_version: StreamVersion(4),
            event_id: String::from("e1"),
            event_type: String::from("checkout_completed"),
            schema_version: 1,
            payload,
            metadata: EventMetadata {
                actor: String::from("stripe"),
                causation_id: None,
                correlation_id: None,
                request_id: None,
                effective_at: Utc::now(),
            },
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn a_schema_1_checkout_completion_reads_as_schema_2_with_no_account() {
        let v1 = json!({ "session_id": "cs_1", "license_id": "lic_0000000001", "completed_at": "2026-04-01T12:00:00Z" });
        assert!(
            decode::<HandoffEvent>("checkout_completed", &v1).is_err(),
            "schema 2 cannot read a schema 1 payload unaided"
        );
        let lifted = Upcasters::domain().upcast(stored(v1)).unwrap();
        assert_eq!(lifted.schema_version, 2);
        assert_eq!(lifted.payload["account_id"], serde_json::Value::Null);
        assert_eq!(lifted.payload["license_id"], "lic_0000000001");
        let HandoffEvent::CheckoutCompleted { account_id, .. } =
            decode::<HandoffEvent>(&lifted.event_type, &lifted.payload).unwrap()
        else {
            panic!("not a completion");
        };
        assert_eq!(account_id, None);
    }

    #[test]
    fn a_schema_1_membership_or_invitation_reads_as_schema_2_with_no_time() {
        for event_type in ["member_joined", "member_invited"] {
            let mut event = stored(json!({ "role": "tech" }));
            event.event_type = String::from(event_type);
            let lifted = Upcasters::domain().upcast(event).unwrap();
            assert_eq!(lifted.schema_version, 2);
            assert_eq!(lifted.payload, json!({ "role": "tech", "at": null }));
        }
    }
}
