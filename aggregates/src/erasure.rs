//! Erasure of a person's personal data: the event the data-delete job records. The job itself
//! (destroying the person's data keys, rebuilding read models) is the service's; this names the
//! fact and checks what it may carry. The event never holds the person's data: only their person
//! id (a keyed hash of the email) and why.

use crate::decider::{Context, Decider, DomainEvent};
use crate::error::DomainError;
use crate::ids::bounded_text;
use serde::{Deserialize, Serialize};

/// Longest erasure reason (a ticket reference or a sentence).
pub const ERASURE_REASON_LEN_MAX: usize = 500;

/// Stream type of erasure records: one stream per person, named by the person id.
pub const ERASURE_STREAM_TYPE: &str = "erasure";

/// What happened to a person's personal data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum ErasureEvent {
    /// The person's data keys were destroyed: every personal value sealed under them now reads as
    /// erased. Recorded before the keys are destroyed, so no erasure goes unrecorded.
    PersonalDataErased {
        /// The person (`per_` and a keyed hash of their email).
        person_id: String,
        /// Why, as the operator gave it.
        reason: String,
    },
}

impl DomainEvent for ErasureEvent {}

/// The erasure record of `person_id`, its reason checked.
pub fn personal_data_erased(person_id: &str, reason: &str) -> Result<ErasureEvent, DomainError> {
    Ok(ErasureEvent::PersonalDataErased {
        person_id: person_id.to_owned(),
        reason: bounded_text("reason", reason, ERASURE_REASON_LEN_MAX)?,
    })
}

/// A person's erasure records (`erasure/<person id>`): each run of the data-delete job adds one.
pub struct PersonErasure;

/// Erase a person's personal data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasePersonalData {
    /// The person.
    pub person_id: String,
    /// Why.
    pub reason: String,
}

impl Decider for PersonErasure {
    const STREAM_TYPE: &'static str = ERASURE_STREAM_TYPE;
    /// How many times the person's data was erased.
    type State = u64;
    type Command = ErasePersonalData;
    type Event = ErasureEvent;
    type Error = DomainError;

    fn decide(
        _: &u64,
        command: &ErasePersonalData,
        _: &Context<'_>,
    ) -> Result<Vec<ErasureEvent>, DomainError> {
        Ok(vec![personal_data_erased(
            &command.person_id,
            &command.reason,
        )?])
    }

    fn evolve(erasures: u64, _: &ErasureEvent) -> u64 {
        erasures + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_erasure_records_the_person_and_the_reason_trimmed() {
        assert_eq!(
            personal_data_erased("per_0123", "  ticket 42 ").unwrap(),
            ErasureEvent::PersonalDataErased {
                person_id: String::from("per_0123"),
                reason: String::from("ticket 42"),
            }
        );
    }

    #[test]
    fn an_erasure_needs_a_reason_of_bounded_length() {
        assert!(personal_data_erased("per_0123", "  ").is_err());
        let long = "x".repeat(ERASURE_REASON_LEN_MAX + 1);
        assert!(personal_data_erased("per_0123", &long).is_err());
    }
}
