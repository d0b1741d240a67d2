//! Stripe events as the ledger received them (`DOMAIN.md` §9, §16): one stream per Stripe event id,
//! so each event takes effect exactly once, forever, and every event — handled or not — leaves a
//! record of what became of it.

use crate::decider::{Context, Decider, DomainEvent};
use crate::error::DomainError;
use crate::ids::bounded_text;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The Stripe-event decider.
pub struct StripeEventReceipt;

/// What the ledger did with one Stripe event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiptState {
    /// Set once the event was received.
    pub received: Option<String>,
}

/// Record a Stripe event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordStripeEvent {
    /// Its type, e.g. `checkout.session.completed`.
    pub event_type: String,
    /// Its `created`.
    pub created: DateTime<Utc>,
    /// Why it changes nothing, when it does not.
    pub ignored_because: Option<String>,
}

/// Events of a Stripe-event stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum StripeEventRecord {
    /// The event was received and verified.
    StripeEventReceived {
        /// Its Stripe type.
        stripe_type: String,
        /// Its `created`.
        created: DateTime<Utc>,
    },
    /// The event was received and changes nothing.
    StripeEventIgnored {
        /// Why.
        reason: String,
    },
}

impl DomainEvent for StripeEventRecord {}

impl Decider for StripeEventReceipt {
    const STREAM_TYPE: &'static str = "stripe_event";
    type State = ReceiptState;
    type Command = RecordStripeEvent;
    type Event = StripeEventRecord;
    type Error = DomainError;

    fn decide(
        state: &ReceiptState,
        command: &RecordStripeEvent,
        _: &Context<'_>,
    ) -> Result<Vec<StripeEventRecord>, DomainError> {
        if state.received.is_some() {
            return Ok(Vec::new());
        }
        let mut events = vec![StripeEventRecord::StripeEventReceived {
            stripe_type: bounded_text("type", &command.event_type, 128)?,
            created: command.created,
        }];
        if let Some(reason) = &command.ignored_because {
            events.push(StripeEventRecord::StripeEventIgnored {
                reason: bounded_text("reason", reason, 500)?,
            });
        }
        Ok(events)
    }

    fn evolve(state: ReceiptState, event: &StripeEventRecord) -> ReceiptState {
        match event {
            StripeEventRecord::StripeEventReceived { stripe_type, .. } => ReceiptState {
                received: Some(stripe_type.clone()),
            },
            StripeEventRecord::StripeEventIgnored { .. } => state,
        }
    }
}
