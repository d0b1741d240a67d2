//! Sign-in by email (`../shared/design/PORTAL.md` §2): the magic links of one person, in the
//! stream `magic_link/<person id>` (a keyed hash of the email, so the stream names no one).
//!
//! A request issues a link that carries a token and a 6-digit code; only their keyed hashes reach
//! the log (the service derives the token and the code from the link id under its secret, so the
//! outbox can send them without the log ever holding them). At most
//! [`MAGIC_LINK_REQUESTS_PER_HOUR_MAX`] links an hour are issued per person: a request over that
//! decides nothing (the service answers the same, and nothing is sent). The newest link is the only
//! one that works; it lives [`MAGIC_LINK_TTL_MINUTES`] minutes and signs in once, by its token or
//! by its code; every wrong code is recorded, and the
//! [`MAGIC_LINK_CODE_ATTEMPTS_MAX`]th ends the link. A wrong token is refused without a record:
//! tokens are 32 random bytes, so counting guesses at them protects nothing, while recording
//! unauthenticated input would let anyone grow the log.

use crate::decider::{Context, Decider, DomainEvent, SnapshotCodec};
use crate::error::DomainError;
use crate::ids::{Email, SecretHash};
use crate::limiter::SlidingWindow;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How long a link (and its code) can sign in.
pub const MAGIC_LINK_TTL_MINUTES: i64 = 15;
/// Links issued per person in any hour; requests past it are answered alike and send nothing.
pub const MAGIC_LINK_REQUESTS_PER_HOUR_MAX: usize = 3;
/// Wrong codes a link survives; the last one ends it.
pub const MAGIC_LINK_CODE_ATTEMPTS_MAX: u32 = 5;
/// Longest link id (`ml_` and a random suffix, chosen by the service).
const LINK_ID_LEN_MAX: usize = 64;

/// The magic links of one person.
pub struct MagicLink;

/// How a link signed someone in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignInMethod {
    /// The link's confirmation page was submitted.
    Link,
    /// The 6-digit code was typed.
    Code,
}

/// What a person's sign-in asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MagicLinkCommand {
    /// Issue a new link (it supersedes any earlier one).
    Request {
        /// A fresh id, from which the service derives the token and the code.
        link_id: String,
        /// Where the link is sent (the person's email).
        email: Email,
        /// The keyed hash of the link's token.
        token_hash: SecretHash,
        /// The keyed hash of the link's code.
        code_hash: SecretHash,
    },
    /// Sign in with the link's token (the confirmation page's POST).
    ConsumeToken {
        /// The keyed hash of the token presented.
        token_hash: SecretHash,
    },
    /// Sign in with the link's code.
    EnterCode {
        /// The keyed hash of the code typed.
        code_hash: SecretHash,
    },
}

/// Events of a person's magic-link stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum MagicLinkEvent {
    /// A link was issued; the outbox sends it.
    MagicLinkIssued {
        /// Its id.
        link_id: String,
        /// Where it is sent (sealed in the log, like every email).
        email: Email,
        /// The keyed hash of its token.
        token_hash: SecretHash,
        /// The keyed hash of its code.
        code_hash: SecretHash,
        /// When.
        issued_at: DateTime<Utc>,
        /// Until when it can sign in.
        expires_at: DateTime<Utc>,
    },
    /// The link signed its person in; it cannot again.
    MagicLinkConsumed {
        /// Which link.
        link_id: String,
        /// By its token or its code.
        method: SignInMethod,
        /// When.
        at: DateTime<Utc>,
    },
    /// A wrong code was typed for the link.
    MagicLinkCodeRejected {
        /// Which link.
        link_id: String,
        /// How many more wrong codes it survives (0: it is ended).
        attempts_left: u32,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for MagicLinkEvent {}

impl MagicLinkEvent {
    /// The refusal a decision records and then answers (a wrong code).
    pub fn refusal(&self) -> Option<DomainError> {
        matches!(self, MagicLinkEvent::MagicLinkCodeRejected { .. })
            .then_some(DomainError::InvalidToken)
    }
}

/// The newest link of a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Its id.
    pub link_id: String,
    /// Whom it signs in.
    pub email: Email,
    /// The keyed hash of its token.
    pub token_hash: SecretHash,
    /// The keyed hash of its code.
    pub code_hash: SecretHash,
    /// Until when it can sign in.
    pub expires_at: DateTime<Utc>,
    /// Wrong codes it survives still.
    pub attempts_left: u32,
    /// Whether it signed someone in.
    pub consumed: bool,
}

impl Link {
    /// Whether it can still sign in at `now`.
    pub fn usable(&self, now: DateTime<Utc>) -> bool {
        !self.consumed && self.attempts_left > 0 && now < self.expires_at
    }
}

/// A person's sign-in state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MagicLinkState {
    /// The newest link, if any was issued.
    pub link: Option<Link>,
    /// When links were issued recently (for the hourly limit).
    pub issued: SlidingWindow,
}

impl Decider for MagicLink {
    const STREAM_TYPE: &'static str = "magic_link";
    type State = MagicLinkState;
    // Anyone may ask for links to any email (each request folds this stream), so a long one
    // loads from its snapshot.
    const SNAPSHOTS: Option<SnapshotCodec<MagicLinkState>> = Some(SnapshotCodec::serde(1));
    type Command = MagicLinkCommand;
    type Event = MagicLinkEvent;
    type Error = DomainError;

    fn decide(
        state: &MagicLinkState,
        command: &MagicLinkCommand,
        context: &Context<'_>,
    ) -> Result<Vec<MagicLinkEvent>, DomainError> {
        let now = context.now;
        match command {
            MagicLinkCommand::Request {
                link_id,
                email,
                token_hash,
                code_hash,
            } => {
                if link_id.is_empty() || link_id.len() > LINK_ID_LEN_MAX {
                    return Err(DomainError::invalid(
                        "link_id",
                        "must be 1 to 64 characters",
                    ));
                }
                let limited = state
                    .issued
                    .retry_after_seconds(now, MAGIC_LINK_REQUESTS_PER_HOUR_MAX, Duration::hours(1))
                    .is_some();
                if limited {
                    return Ok(Vec::new());
                }
                Ok(vec![MagicLinkEvent::MagicLinkIssued {
                    link_id: link_id.clone(),
                    email: email.clone(),
                    token_hash: token_hash.clone(),
                    code_hash: code_hash.clone(),
                    issued_at: now,
                    expires_at: now + Duration::minutes(MAGIC_LINK_TTL_MINUTES),
                }])
            }
            MagicLinkCommand::ConsumeToken { token_hash } => {
                let link = usable_link(state, now)?;
                if &link.token_hash != token_hash {
                    return Err(DomainError::InvalidToken);
                }
                Ok(vec![consumed(link, SignInMethod::Link, now)])
            }
            MagicLinkCommand::EnterCode { code_hash } => {
                let link = usable_link(state, now)?;
                if &link.code_hash == code_hash {
                    return Ok(vec![consumed(link, SignInMethod::Code, now)]);
                }
                Ok(vec![MagicLinkEvent::MagicLinkCodeRejected {
                    link_id: link.link_id.clone(),
                    attempts_left: link.attempts_left - 1,
                    at: now,
                }])
            }
        }
    }

    fn evolve(mut state: MagicLinkState, event: &MagicLinkEvent) -> MagicLinkState {
        match event {
            MagicLinkEvent::MagicLinkIssued {
                link_id,
                email,
                token_hash,
                code_hash,
                issued_at,
                expires_at,
            } => {
                state
                    .issued
                    .record(*issued_at, MAGIC_LINK_REQUESTS_PER_HOUR_MAX);
                state.link = Some(Link {
                    link_id: link_id.clone(),
                    email: email.clone(),
                    token_hash: token_hash.clone(),
                    code_hash: code_hash.clone(),
                    expires_at: *expires_at,
                    attempts_left: MAGIC_LINK_CODE_ATTEMPTS_MAX,
                    consumed: false,
                });
            }
            MagicLinkEvent::MagicLinkConsumed { link_id, .. } => {
                if let Some(link) = state.link.as_mut().filter(|l| &l.link_id == link_id) {
                    link.consumed = true;
                }
            }
            MagicLinkEvent::MagicLinkCodeRejected {
                link_id,
                attempts_left,
                ..
            } => {
                if let Some(link) = state.link.as_mut().filter(|l| &l.link_id == link_id) {
                    link.attempts_left = *attempts_left;
                }
            }
        }
        state
    }
}

/// The newest link, if it can still sign in now.
fn usable_link(state: &MagicLinkState, now: DateTime<Utc>) -> Result<&Link, DomainError> {
    state
        .link
        .as_ref()
        .filter(|link| link.usable(now))
        .ok_or(DomainError::InvalidToken)
}

fn consumed(link: &Link, method: SignInMethod, at: DateTime<Utc>) -> MagicLinkEvent {
    MagicLinkEvent::MagicLinkConsumed {
        link_id: link.link_id.clone(),
        method,
        at,
    }
}
