//! Staff and service API tokens (`staff_token/<id>`): who may read the ledger on behalf of support
//! and auditors, and who provisions hosted tenants. A token is issued with one role, stored only as
//! its keyed hash, and revoked for good. Every request made with one is itself recorded
//! ([`StaffAccessEvent`], one event per request in its own stream, so recording never contends).

use crate::decider::{Context, Decider, DomainEvent};
use crate::error::DomainError;
use crate::ids::{bounded_text, SecretHash, StaffTokenId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest token name (who or what holds it).
pub const STAFF_TOKEN_NAME_LEN_MAX: usize = 120;
/// Longest recorded request path.
pub const STAFF_ACCESS_PATH_LEN_MAX: usize = 512;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    /// Support staff: replay accounts and licenses, see why they are as they are.
    Support,
    /// Auditors: export the log.
    Auditor,
    /// The hosted tenant provisioner: learns of tenants to create, fetches their credentials,
    /// reports their state.
    Provisioner,
}

impl StaffRole {
    /// The name as stored and accepted.
    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::Support => "support",
            StaffRole::Auditor => "auditor",
            StaffRole::Provisioner => "provisioner",
        }
    }

    /// Parses a role name.
    pub fn parse(raw: &str) -> Result<StaffRole, DomainError> {
        match raw {
            "support" => Ok(StaffRole::Support),
            "auditor" => Ok(StaffRole::Auditor),
            "provisioner" => Ok(StaffRole::Provisioner),
            _ => Err(DomainError::invalid(
                "role",
                "must be support, auditor or provisioner",
            )),
        }
    }
}

/// An issued token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedStaffToken {
    /// Its id (the public part of the token).
    pub token_id: StaffTokenId,
    /// Who or what holds it.
    pub name: String,
    /// What it may do.
    pub role: StaffRole,
    /// The keyed hash of the whole token.
    pub token_hash: SecretHash,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it was revoked; revocation is final.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token stream's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaffTokenState {
    /// The token, once issued.
    pub token: Option<IssuedStaffToken>,
}

impl StaffTokenState {
    /// The token's role if it is issued, not revoked, and `token_hash` is its hash.
    pub fn authorizes(&self, token_hash: &SecretHash) -> Option<StaffRole> {
        self.token
            .as_ref()
            .filter(|t| t.revoked_at.is_none() && &t.token_hash == token_hash)
            .map(|t| t.role)
    }
}

/// What is asked of a token stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StaffTokenCommand {
    /// Issue the token.
    Issue {
        /// A fresh id.
        token_id: StaffTokenId,
        /// Who or what holds it.
        name: String,
        /// What it may do.
        role: StaffRole,
        /// The keyed hash of the whole token.
        token_hash: SecretHash,
    },
    /// Revoke it.
    Revoke,
}

/// What happened to a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum StaffTokenEvent {
    /// It was issued.
    StaffTokenIssued {
        /// Its id.
        token_id: StaffTokenId,
        /// Who or what holds it.
        name: String,
        /// What it may do.
        role: StaffRole,
        /// The keyed hash of the whole token.
        token_hash: SecretHash,
        /// When.
        at: DateTime<Utc>,
    },
    /// It was revoked.
    StaffTokenRevoked {
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for StaffTokenEvent {}

/// The staff-token decider.
pub struct StaffToken;

impl Decider for StaffToken {
    const STREAM_TYPE: &'static str = "staff_token";
    type State = StaffTokenState;
    type Command = StaffTokenCommand;
    type Event = StaffTokenEvent;
    type Error = DomainError;

    fn decide(
        state: &StaffTokenState,
        command: &StaffTokenCommand,
        context: &Context<'_>,
    ) -> Result<Vec<StaffTokenEvent>, DomainError> {
        match (command, &state.token) {
            (StaffTokenCommand::Issue { .. }, Some(_)) => Err(DomainError::AlreadyExists {
                entity: "staff token",
            }),
            (
                StaffTokenCommand::Issue {
                    token_id,
                    name,
                    role,
                    token_hash,
                },
                None,
            ) => Ok(vec![StaffTokenEvent::StaffTokenIssued {
                token_id: token_id.clone(),
                name: bounded_text("name", name, STAFF_TOKEN_NAME_LEN_MAX)?,
                role: *role,
                token_hash: token_hash.clone(),
                at: context.now,
            }]),
            (StaffTokenCommand::Revoke, None) => Err(DomainError::NotFound {
                entity: "staff token",
            }),
            (StaffTokenCommand::Revoke, Some(token)) if token.revoked_at.is_some() => {
                Ok(Vec::new())
            }
            (StaffTokenCommand::Revoke, Some(_)) => {
                Ok(vec![StaffTokenEvent::StaffTokenRevoked { at: context.now }])
            }
        }
    }

    fn evolve(state: StaffTokenState, event: &StaffTokenEvent) -> StaffTokenState {
        match event {
            StaffTokenEvent::StaffTokenIssued {
                token_id,
                name,
                role,
                token_hash,
                at,
            } => StaffTokenState {
                token: state.token.or_else(|| {
                    Some(IssuedStaffToken {
                        token_id: token_id.clone(),
                        name: name.clone(),
                        role: *role,
                        token_hash: token_hash.clone(),
                        issued_at: *at,
                        revoked_at: None,
                    })
                }),
            },
            StaffTokenEvent::StaffTokenRevoked { at } => StaffTokenState {
                token: state.token.map(|mut token| {
                    token.revoked_at.get_or_insert(*at);
                    token
                }),
            },
        }
    }
}

/// One request made with a staff token: recorded in a stream of its own (`staff_access/<id>`)
/// before the answer is sent, so no staff read goes unrecorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum StaffAccessEvent {
    /// A staff token was used.
    StaffAccessRecorded {
        /// The token.
        token_id: StaffTokenId,
        /// Its role.
        role: StaffRole,
        /// The HTTP method.
        method: String,
        /// The path and query asked for.
        path: String,
    },
}

impl DomainEvent for StaffAccessEvent {}

/// Stream type of the staff-access records.
pub const STAFF_ACCESS_STREAM_TYPE: &str = "staff_access";

/// The record of staff requests: each request is a fresh stream of one event (no contention, no
/// stream that grows).
pub struct StaffAccessLog;

impl Decider for StaffAccessLog {
    const STREAM_TYPE: &'static str = STAFF_ACCESS_STREAM_TYPE;
    /// Whether the request was recorded.
    type State = bool;
    type Command = StaffAccessEvent;
    type Event = StaffAccessEvent;
    type Error = DomainError;

    fn decide(
        recorded: &bool,
        command: &StaffAccessEvent,
        _: &Context<'_>,
    ) -> Result<Vec<StaffAccessEvent>, DomainError> {
        if *recorded {
            return Err(DomainError::AlreadyExists {
                entity: "staff access record",
            });
        }
        Ok(vec![command.clone()])
    }

    fn evolve(_: bool, _: &StaffAccessEvent) -> bool {
        true
    }
}

/// The record of one staff request, its path bounded.
pub fn staff_access(
    token_id: &StaffTokenId,
    role: StaffRole,
    method: &str,
    path: &str,
) -> StaffAccessEvent {
    let mut end = path.len().min(STAFF_ACCESS_PATH_LEN_MAX);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    StaffAccessEvent::StaffAccessRecorded {
        token_id: token_id.clone(),
        role,
        method: method.to_owned(),
        path: path[..end].to_owned(),
    }
}
