//! Self-refund (`DOMAIN.md` §13, §17; `../shared/design/PORTAL.md` §4): the owner of a
//! self-hosted license gets their first payment back within a window of it (30 days unless
//! configured otherwise), once, and the license is revoked at once. One stream per license,
//! `self_refund/<license id>`.
//!
//! A refund is two steps around one call to Stripe, so that Stripe is asked once however many
//! requests race: `SelfRefundRequested` is recorded first (the first append wins; a request that
//! finds one pending is told the refund is in progress), then Stripe is asked, then
//! `SelfRefundIssued` is recorded in the same append as the license's revocation. A request that
//! finds a refund pending for longer than [`REFUND_RESUME_AFTER_SECONDS`] (the process that asked
//! Stripe died before recording the answer) takes it over and asks Stripe again under the same
//! idempotency key, which Stripe answers with the same refund.
//!
//! Whether a license may be refunded is [`eligibility`], a pure query the service asks before it
//! decides.

use crate::decider::{Context, Decider, DomainEvent};
use crate::error::DomainError;
use crate::ids::bounded_text;
use crate::license::IssuedLicense;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The window after the first payment in which its owner may refund it, unless configured.
pub const SELF_REFUND_WINDOW_DAYS_DEFAULT: u32 = 30;
/// How long a pending refund belongs to the request that started it; after that another request
/// takes it over (Stripe's answer takes seconds; its client gives up well before this).
pub const REFUND_RESUME_AFTER_SECONDS: i64 = 60;

/// Why a license cannot be refunded by its owner (`details.reason` of `refund_not_eligible`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundRefusal {
    /// The window after the first payment is over.
    WindowPassed,
    /// It was refunded already.
    AlreadyRefunded,
    /// No payment of it names a charge to refund.
    NotPaid,
    /// It is revoked (a refund or dispute through Stripe, or an erasure).
    Revoked,
}

impl RefundRefusal {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundRefusal::WindowPassed => "window_passed",
            RefundRefusal::AlreadyRefunded => "already_refunded",
            RefundRefusal::NotPaid => "not_paid",
            RefundRefusal::Revoked => "revoked",
        }
    }

    /// A sentence for people.
    pub fn explain(self) -> &'static str {
        match self {
            RefundRefusal::WindowPassed => "the refund window after the first payment is over",
            RefundRefusal::AlreadyRefunded => "it was refunded already",
            RefundRefusal::NotPaid => "no payment of it has been recorded",
            RefundRefusal::Revoked => "it is revoked",
        }
    }
}

/// The self-refund of one license.
pub struct SelfRefund;

/// A refund asked for and not yet answered by Stripe, or answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedRefund {
    /// The charge refunded.
    pub charge: String,
    /// When it was asked for (or last taken over).
    pub at: DateTime<Utc>,
    /// Stripe's refund, once recorded.
    pub refund_id: Option<String>,
}

/// A license's self-refund.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SelfRefundState {
    /// The refund, once asked for.
    pub refund: Option<RequestedRefund>,
}

/// What is asked of a license's self-refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelfRefundCommand {
    /// Start refunding `charge` (the license's first payment, found eligible).
    Request {
        /// The charge.
        charge: String,
    },
    /// Record Stripe's refund.
    RecordIssued {
        /// `re_…`.
        refund_id: String,
    },
}

/// What happened to a license's self-refund.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum SelfRefundEvent {
    /// The owner asked for a refund of `charge`; Stripe is asked next. Recorded again when a
    /// stalled request is taken over.
    SelfRefundRequested {
        /// The charge.
        charge: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Stripe made the refund.
    SelfRefundIssued {
        /// `re_…`.
        refund_id: String,
        /// The charge.
        charge: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for SelfRefundEvent {}

/// Whether the owner may refund `license` at `now`, `window_days` after its first payment: the
/// charge to refund, or why not. The first reason that applies, in this order: already refunded,
/// revoked, not paid, window passed.
pub fn eligibility(
    license: &IssuedLicense,
    refund: &SelfRefundState,
    window_days: u32,
    now: DateTime<Utc>,
) -> Result<String, DomainError> {
    let refusal = |reason| Err(DomainError::RefundNotEligible { reason });
    if refund
        .refund
        .as_ref()
        .is_some_and(|r| r.refund_id.is_some())
    {
        return refusal(RefundRefusal::AlreadyRefunded);
    }
    if license.revoked.is_some() {
        return refusal(RefundRefusal::Revoked);
    }
    let Some(payment) = &license.first_payment else {
        return refusal(RefundRefusal::NotPaid);
    };
    if now >= payment.paid_at + Duration::days(i64::from(window_days)) {
        return refusal(RefundRefusal::WindowPassed);
    }
    Ok(payment.charge.clone())
}

impl Decider for SelfRefund {
    const STREAM_TYPE: &'static str = "self_refund";
    type State = SelfRefundState;
    type Command = SelfRefundCommand;
    type Event = SelfRefundEvent;
    type Error = DomainError;

    fn decide(
        state: &SelfRefundState,
        command: &SelfRefundCommand,
        context: &Context<'_>,
    ) -> Result<Vec<SelfRefundEvent>, DomainError> {
        let now = context.now;
        match (command, &state.refund) {
            (
                _,
                Some(RequestedRefund {
                    refund_id: Some(_), ..
                }),
            ) => Err(DomainError::RefundNotEligible {
                reason: RefundRefusal::AlreadyRefunded,
            }),
            (SelfRefundCommand::Request { .. }, Some(pending))
                if now - pending.at < Duration::seconds(REFUND_RESUME_AFTER_SECONDS) =>
            {
                Err(DomainError::RefundInProgress)
            }
            (SelfRefundCommand::Request { .. }, Some(pending)) => {
                Ok(vec![SelfRefundEvent::SelfRefundRequested {
                    charge: pending.charge.clone(),
                    at: now,
                }])
            }
            (SelfRefundCommand::Request { charge }, None) => {
                Ok(vec![SelfRefundEvent::SelfRefundRequested {
                    charge: bounded_text("charge", charge, 255)?,
                    at: now,
                }])
            }
            (SelfRefundCommand::RecordIssued { refund_id }, Some(pending)) => {
                Ok(vec![SelfRefundEvent::SelfRefundIssued {
                    refund_id: bounded_text("refund_id", refund_id, 255)?,
                    charge: pending.charge.clone(),
                    at: now,
                }])
            }
            (SelfRefundCommand::RecordIssued { .. }, None) => Err(DomainError::InvalidTransition {
                from: "not requested",
                to: "refunded",
            }),
        }
    }

    fn evolve(mut state: SelfRefundState, event: &SelfRefundEvent) -> SelfRefundState {
        match event {
            SelfRefundEvent::SelfRefundRequested { charge, at } => {
                state.refund = Some(RequestedRefund {
                    charge: charge.clone(),
                    at: *at,
                    refund_id: None,
                });
            }
            SelfRefundEvent::SelfRefundIssued { refund_id, .. } => {
                if let Some(refund) = state.refund.as_mut() {
                    refund.refund_id = Some(refund_id.clone());
                }
            }
        }
        state
    }
}
