//! Redemption of a purchase by the installation that started it (`DOMAIN.md` §6.6).
//!
//! One record per handoff, keyed by (`portal_handoff_id`, `purchase_return_jti`), bound to one
//! checkout session. `begin` follows the decision table row by row; `activated` is terminal;
//! failures keep their reason and message; nothing is ever deleted. One stream per handoff id, so
//! the record is unique on the handoff id; the session id is unique because every session belongs
//! to exactly one handoff (the service passes which one, from the handoff's `checkout_started`).

use crate::decider::{Context, Decider, DomainEvent};
use crate::error::DomainError;
use crate::handoff::checked_token_id;
use crate::ids::{bounded_text, HandoffId, LicenseId};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// A started redemption younger than this is still in progress (§6.6).
pub const REDEMPTION_IN_PROGRESS_SECONDS: i64 = 30;

/// Where a redemption is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedemptionStatus {
    /// The installation is activating.
    Started,
    /// Done; terminal.
    Activated,
    /// The last attempt failed; it may be restarted.
    Failed,
}

/// The redemption record of one handoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedemptionRecord {
    /// The handoff.
    pub handoff_id: HandoffId,
    /// The runtime's purchase-return token id.
    pub purchase_return_jti: String,
    /// The checkout session it redeems.
    pub session_id: String,
    /// Where it is.
    pub status: RedemptionStatus,
    /// When the current attempt started.
    pub started_at: DateTime<Utc>,
    /// When it was activated.
    pub redeemed_at: Option<DateTime<Utc>>,
    /// The last failure's reason code.
    pub failure_reason: Option<String>,
    /// The last failure's message.
    pub failure_message: Option<String>,
}

/// The redemption decider.
pub struct Redemption;

/// The state of a redemption stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedemptionState {
    /// The record, once begun.
    pub record: Option<RedemptionRecord>,
}

/// What can be asked of a redemption.
#[derive(Clone, Debug, PartialEq)]
pub enum RedemptionCommand {
    /// Begin (or restart) redeeming.
    Begin {
        /// The handoff (the stream's id).
        handoff_id: HandoffId,
        /// The runtime's purchase-return token id.
        purchase_return_jti: String,
        /// The checkout session being redeemed.
        session_id: String,
        /// The handoff that session belongs to, if the ledger knows the session.
        session_handoff: Option<HandoffId>,
    },
    /// The installation activated the purchased license.
    MarkActivated {
        /// The key's jti.
        purchase_return_jti: String,
        /// The license activated.
        license_id: Option<LicenseId>,
    },
    /// The attempt failed.
    MarkFailed {
        /// The key's jti.
        purchase_return_jti: String,
        /// A reason code.
        failure_reason: String,
        /// A message for a human.
        failure_message: String,
    },
}

/// What happened to a redemption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum RedemptionEvent {
    /// An attempt started (the first, or a restart after 30 s or a failure).
    RedemptionStarted {
        /// The handoff.
        handoff_id: HandoffId,
        /// The key's jti.
        purchase_return_jti: String,
        /// The session.
        session_id: String,
        /// When.
        started_at: DateTime<Utc>,
        /// True for a restart.
        restart: bool,
    },
    /// The purchase was activated.
    RedemptionActivated {
        /// When.
        redeemed_at: DateTime<Utc>,
        /// The license.
        license_id: Option<LicenseId>,
    },
    /// The attempt failed.
    RedemptionFailed {
        /// A reason code.
        failure_reason: String,
        /// A message for a human.
        failure_message: String,
        /// When.
        failed_at: DateTime<Utc>,
    },
}

impl DomainEvent for RedemptionEvent {}

fn started(
    handoff_id: &HandoffId,
    jti: &str,
    session_id: &str,
    now: DateTime<Utc>,
    restart: bool,
) -> RedemptionEvent {
    RedemptionEvent::RedemptionStarted {
        handoff_id: handoff_id.clone(),
        purchase_return_jti: jti.to_owned(),
        session_id: session_id.to_owned(),
        started_at: now,
        restart,
    }
}

/// The begin-decision table of §6.6, row by row.
fn decide_begin(
    record: Option<&RedemptionRecord>,
    handoff_id: &HandoffId,
    jti: &str,
    session_id: &str,
    session_handoff: Option<&HandoffId>,
    now: DateTime<Utc>,
) -> Result<Vec<RedemptionEvent>, DomainError> {
    let jti = checked_token_id("purchase_return_jti", jti)?;
    let session_id = checked_token_id("session_id", session_id)?;
    if session_handoff.is_some_and(|owner| owner != handoff_id) {
        return Err(DomainError::RedemptionConflict);
    }
    let Some(record) = record else {
        return Ok(vec![started(handoff_id, &jti, &session_id, now, false)]);
    };
    if record.purchase_return_jti != jti || record.session_id != session_id {
        return Err(DomainError::RedemptionConflict);
    }
    match record.status {
        RedemptionStatus::Activated => Err(DomainError::RedemptionAlreadyActivated),
        RedemptionStatus::Started
            if now - record.started_at < Duration::seconds(REDEMPTION_IN_PROGRESS_SECONDS) =>
        {
            Err(DomainError::RedemptionInProgress)
        }
        RedemptionStatus::Started | RedemptionStatus::Failed => {
            Ok(vec![started(handoff_id, &jti, &session_id, now, true)])
        }
    }
}

fn own_record<'a>(
    state: &'a RedemptionState,
    jti: &str,
) -> Result<&'a RedemptionRecord, DomainError> {
    let record = state.record.as_ref().ok_or(DomainError::NotFound {
        entity: "redemption",
    })?;
    if record.purchase_return_jti != jti {
        return Err(DomainError::RedemptionConflict);
    }
    Ok(record)
}

impl Decider for Redemption {
    const STREAM_TYPE: &'static str = "redemption";
    type State = RedemptionState;
    type Command = RedemptionCommand;
    type Event = RedemptionEvent;
    type Error = DomainError;

    fn decide(
        state: &RedemptionState,
        command: &RedemptionCommand,
        context: &Context<'_>,
    ) -> Result<Vec<RedemptionEvent>, DomainError> {
        match command {
            RedemptionCommand::Begin {
                handoff_id,
                purchase_return_jti,
                session_id,
                session_handoff,
            } => decide_begin(
                state.record.as_ref(),
                handoff_id,
                purchase_return_jti,
                session_id,
                session_handoff.as_ref(),
                context.now,
            ),
            RedemptionCommand::MarkActivated {
                purchase_return_jti,
                license_id,
            } => match own_record(state, purchase_return_jti)?.status {
                RedemptionStatus::Activated => Ok(Vec::new()),
                RedemptionStatus::Failed => Err(DomainError::InvalidTransition {
                    from: "failed",
                    to: "activated",
                }),
                RedemptionStatus::Started => Ok(vec![RedemptionEvent::RedemptionActivated {
                    redeemed_at: context.now,
                    license_id: license_id.clone(),
                }]),
            },
            RedemptionCommand::MarkFailed {
                purchase_return_jti,
                failure_reason,
                failure_message,
            } => match own_record(state, purchase_return_jti)?.status {
                RedemptionStatus::Activated => Err(DomainError::RedemptionAlreadyActivated),
                RedemptionStatus::Started | RedemptionStatus::Failed => {
                    Ok(vec![RedemptionEvent::RedemptionFailed {
                        failure_reason: checked_token_id("failure_reason", failure_reason)?,
                        failure_message: bounded_text("failure_message", failure_message, 1_000)?,
                        failed_at: context.now,
                    }])
                }
            },
        }
    }

    fn evolve(mut state: RedemptionState, event: &RedemptionEvent) -> RedemptionState {
        match (event, state.record.as_mut()) {
            (
                RedemptionEvent::RedemptionStarted {
                    handoff_id,
                    purchase_return_jti,
                    session_id,
                    started_at,
                    ..
                },
                _,
            ) => {
                state.record = Some(RedemptionRecord {
                    handoff_id: handoff_id.clone(),
                    purchase_return_jti: purchase_return_jti.clone(),
                    session_id: session_id.clone(),
                    status: RedemptionStatus::Started,
                    started_at: *started_at,
                    redeemed_at: None,
                    failure_reason: state.record.as_ref().and_then(|r| r.failure_reason.clone()),
                    failure_message: state
                        .record
                        .as_ref()
                        .and_then(|r| r.failure_message.clone()),
                });
            }
            (RedemptionEvent::RedemptionActivated { redeemed_at, .. }, Some(record)) => {
                record.status = RedemptionStatus::Activated;
                record.redeemed_at = Some(*redeemed_at);
            }
            (
                RedemptionEvent::RedemptionFailed {
                    failure_reason,
                    failure_message,
                    ..
                },
                Some(record),
            ) => {
                record.status = RedemptionStatus::Failed;
                record.failure_reason = Some(failure_reason.clone());
                record.failure_message = Some(failure_message.clone());
            }
            (_, None) => {}
        }
        state
    }
}
