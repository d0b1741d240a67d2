//! Email codes for the self-hosted recovery jobs (`DOMAIN.md` §13, `../shared/design/PORTAL.md`
//! §4): a person asks for a job (`manage`, `retrieve`, `export`, `delete`), gets a 6-digit code by
//! email, and confirms the job with it. One stream per person, `email_code/<person id>`.
//!
//! A code is bound to its job (a code for `retrieve` does not confirm `delete`), lives
//! [`EMAIL_CODE_TTL_MINUTES`] minutes, confirms once, and the [`EMAIL_CODE_ATTEMPTS_MAX`]th wrong
//! code ends it. Asking again for the same job within [`EMAIL_CODE_RESEND_SECONDS`] seconds sends
//! nothing (the answer is the same); after that a new code replaces the job's old one. Only the
//! code's keyed hash reaches the log: the service derives the code from the code id under its
//! secret, so the outbox can send it.

use crate::decider::{Context, Decider, DomainEvent};
use crate::error::DomainError;
use crate::ids::{Email, SecretHash};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long a code can confirm its job.
pub const EMAIL_CODE_TTL_MINUTES: i64 = 15;
/// Wrong codes a code survives; the last one ends it.
pub const EMAIL_CODE_ATTEMPTS_MAX: u32 = 5;
/// Shortest time between two codes for one job.
pub const EMAIL_CODE_RESEND_SECONDS: i64 = 60;
/// Longest code id (chosen by the service).
const CODE_ID_LEN_MAX: usize = 64;

/// A recovery job a code confirms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryJob {
    /// A Stripe Billing Portal session for the license's customer.
    Manage,
    /// The licenses of the email, with their activation keys.
    Retrieve,
    /// Everything the ledger holds on the email.
    Export,
    /// Revoke the licenses and erase the person.
    Delete,
}

/// The codes of one person.
pub struct EmailCode;

/// What a person asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmailCodeCommand {
    /// Send a code for `job`.
    Request {
        /// The job.
        job: RecoveryJob,
        /// A fresh id, from which the service derives the code.
        code_id: String,
        /// Where the code goes.
        email: Email,
        /// The keyed hash of the code.
        code_hash: SecretHash,
    },
    /// Confirm `job` with a code.
    Confirm {
        /// The job.
        job: RecoveryJob,
        /// The keyed hash of the code typed.
        code_hash: SecretHash,
    },
}

/// Events of a person's codes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum EmailCodeEvent {
    /// A code was issued; the outbox sends it.
    EmailCodeIssued {
        /// Its id.
        code_id: String,
        /// Its job.
        job: RecoveryJob,
        /// Where it is sent (sealed in the log, like every email).
        email: Email,
        /// The keyed hash of the code.
        code_hash: SecretHash,
        /// When.
        issued_at: DateTime<Utc>,
        /// Until when it confirms.
        expires_at: DateTime<Utc>,
    },
    /// The code confirmed its job; it cannot again.
    EmailCodeUsed {
        /// Which code.
        code_id: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A wrong code was typed for the job's code.
    EmailCodeRejected {
        /// Which code.
        code_id: String,
        /// How many more wrong codes it survives (0: it is ended).
        attempts_left: u32,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for EmailCodeEvent {}

impl EmailCodeEvent {
    /// The refusal a decision records and then answers (a wrong code).
    pub fn refusal(&self) -> Option<DomainError> {
        matches!(self, EmailCodeEvent::EmailCodeRejected { .. })
            .then_some(DomainError::InvalidToken)
    }
}

/// A job's newest code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Code {
    /// Its id.
    pub code_id: String,
    /// The keyed hash of the code.
    pub code_hash: SecretHash,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// Until when it confirms.
    pub expires_at: DateTime<Utc>,
    /// Wrong codes it survives still.
    pub attempts_left: u32,
    /// Whether it confirmed its job.
    pub used: bool,
}

impl Code {
    /// Whether it can still confirm its job at `now`.
    pub fn usable(&self, now: DateTime<Utc>) -> bool {
        !self.used && self.attempts_left > 0 && now < self.expires_at
    }
}

/// A person's codes: the newest per job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmailCodeState {
    /// The newest code of each job.
    pub codes: BTreeMap<RecoveryJob, Code>,
}

impl Decider for EmailCode {
    const STREAM_TYPE: &'static str = "email_code";
    type State = EmailCodeState;
    type Command = EmailCodeCommand;
    type Event = EmailCodeEvent;
    type Error = DomainError;

    fn decide(
        state: &EmailCodeState,
        command: &EmailCodeCommand,
        context: &Context<'_>,
    ) -> Result<Vec<EmailCodeEvent>, DomainError> {
        let now = context.now;
        match command {
            EmailCodeCommand::Request {
                job,
                code_id,
                email,
                code_hash,
            } => {
                if code_id.is_empty() || code_id.len() > CODE_ID_LEN_MAX {
                    return Err(DomainError::invalid(
                        "code_id",
                        "must be 1 to 64 characters",
                    ));
                }
                let too_soon = state.codes.get(job).is_some_and(|code| {
                    now - code.issued_at < Duration::seconds(EMAIL_CODE_RESEND_SECONDS)
                });
                if too_soon {
                    return Ok(Vec::new());
                }
                Ok(vec![EmailCodeEvent::EmailCodeIssued {
                    code_id: code_id.clone(),
                    job: *job,
                    email: email.clone(),
                    code_hash: code_hash.clone(),
                    issued_at: now,
                    expires_at: now + Duration::minutes(EMAIL_CODE_TTL_MINUTES),
                }])
            }
            EmailCodeCommand::Confirm { job, code_hash } => {
                let code = state
                    .codes
                    .get(job)
                    .filter(|code| code.usable(now))
                    .ok_or(DomainError::InvalidToken)?;
                if &code.code_hash == code_hash {
                    return Ok(vec![EmailCodeEvent::EmailCodeUsed {
                        code_id: code.code_id.clone(),
                        at: now,
                    }]);
                }
                Ok(vec![EmailCodeEvent::EmailCodeRejected {
                    code_id: code.code_id.clone(),
                    attempts_left: code.attempts_left - 1,
                    at: now,
                }])
            }
        }
    }

    fn evolve(mut state: EmailCodeState, event: &EmailCodeEvent) -> EmailCodeState {
        match event {
            EmailCodeEvent::EmailCodeIssued {
                code_id,
                job,
                code_hash,
                issued_at,
                expires_at,
                ..
            } => {
                state.codes.insert(
                    *job,
                    Code {
                        code_id: code_id.clone(),
                        code_hash: code_hash.clone(),
                        issued_at: *issued_at,
                        expires_at: *expires_at,
                        attempts_left: EMAIL_CODE_ATTEMPTS_MAX,
                        used: false,
                    },
                );
            }
            EmailCodeEvent::EmailCodeUsed { code_id, .. } => {
                if let Some(code) = state.codes.values_mut().find(|c| &c.code_id == code_id) {
                    code.used = true;
                }
            }
            EmailCodeEvent::EmailCodeRejected {
                code_id,
                attempts_left,
                ..
            } => {
                if let Some(code) = state.codes.values_mut().find(|c| &c.code_id == code_id) {
                    code.attempts_left = *attempts_left;
                }
            }
        }
        state
    }
}
