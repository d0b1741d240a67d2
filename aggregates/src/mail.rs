//! Delivery of one email the ledger sends (a sign-in link, an invitation), in the stream
//! `mail/<message id>`; the message id is the id of the event that asked for it (the link id, the
//! invitation id). What to send is decided where the asking event is recorded; this stream only
//! records what became of the sending: delivered, failed (and when to try again), or abandoned.
//!
//! Failures back off exponentially from [`MAIL_RETRY_BASE_SECONDS`] up to
//! [`MAIL_RETRY_DELAY_SECONDS_MAX`]; the [`MAIL_ATTEMPTS_MAX`]th failure abandons the message. A
//! message delivered or abandoned is done: nothing recorded after changes it, so a message is
//! sent once even when two deliverers meet.

use crate::decider::{Context, Decider, DomainEvent};
use crate::error::DomainError;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Attempts before a message is abandoned (about 2 hours of retries with the delays below).
pub const MAIL_ATTEMPTS_MAX: u32 = 8;
/// The delay after the first failure; each further failure doubles it.
pub const MAIL_RETRY_BASE_SECONDS: i64 = 30;
/// The longest delay between two attempts.
pub const MAIL_RETRY_DELAY_SECONDS_MAX: i64 = 3_600;
/// Longest failure or abandonment reason recorded (an SMTP reply, say); longer ones are cut.
pub const MAIL_REASON_LEN_MAX: usize = 300;

/// The delivery of one message.
pub struct Mail;

/// What the deliverer reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailCommand {
    /// The mail server accepted the message.
    RecordDelivery,
    /// Sending failed; try again later (or give up after the last attempt).
    RecordFailure {
        /// Why, for the operator.
        reason: String,
    },
    /// The message must not be sent any more (its link expired, its recipient was erased).
    Abandon {
        /// Why.
        reason: String,
    },
}

/// Events of a message's delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum MailEvent {
    /// The mail server accepted the message.
    MailDelivered {
        /// Which attempt it was (1 for the first).
        attempt: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// An attempt failed.
    MailDeliveryFailed {
        /// Which attempt it was.
        attempt: u32,
        /// Why.
        reason: String,
        /// When to try again.
        retry_at: DateTime<Utc>,
    },
    /// The message will not be sent.
    MailAbandoned {
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for MailEvent {}

/// A message's delivery so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailState {
    /// Failed attempts.
    pub failures: u32,
    /// Delivered or abandoned: nothing more happens.
    pub done: bool,
}

/// The delay before the attempt after `failures` failures.
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    Duration::seconds((MAIL_RETRY_BASE_SECONDS << doublings).min(MAIL_RETRY_DELAY_SECONDS_MAX))
}

fn reason_text(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAIL_REASON_LEN_MAX)
        .collect()
}

impl Decider for Mail {
    const STREAM_TYPE: &'static str = "mail";
    type State = MailState;
    type Command = MailCommand;
    type Event = MailEvent;
    type Error = DomainError;

    fn decide(
        state: &MailState,
        command: &MailCommand,
        context: &Context<'_>,
    ) -> Result<Vec<MailEvent>, DomainError> {
        if state.done {
            return Ok(Vec::new());
        }
        let now = context.now;
        let attempt = state.failures + 1;
        Ok(match command {
            MailCommand::RecordDelivery => vec![MailEvent::MailDelivered { attempt, at: now }],
            MailCommand::RecordFailure { reason } => {
                let reason = reason_text(reason);
                let failed = MailEvent::MailDeliveryFailed {
                    attempt,
                    reason: reason.clone(),
                    retry_at: now + retry_delay(attempt),
                };
                if attempt < MAIL_ATTEMPTS_MAX {
                    vec![failed]
                } else {
                    let reason = format!("gave up after {attempt} attempts: {reason}");
                    vec![
                        failed,
                        MailEvent::MailAbandoned {
                            reason: reason_text(&reason),
                            at: now,
                        },
                    ]
                }
            }
            MailCommand::Abandon { reason } => vec![MailEvent::MailAbandoned {
                reason: reason_text(reason),
                at: now,
            }],
        })
    }

    fn evolve(mut state: MailState, event: &MailEvent) -> MailState {
        match event {
            MailEvent::MailDelivered { .. } | MailEvent::MailAbandoned { .. } => state.done = true,
            MailEvent::MailDeliveryFailed { attempt, .. } => {
                state.failures = state.failures.max(*attempt)
            }
        }
        state
    }
}
