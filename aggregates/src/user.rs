//! A person of the portal (`../shared/design/PORTAL.md` §1–2): their user id, the invitations
//! addressed to their email while they had none, and their sign-in sessions, in the stream
//! `user/<person id>` (a keyed hash of the email, so the stream names no one and every spelling of
//! one address is one stream).
//!
//! A user (`u_…`) exists from the first of: a hosted checkout that made the email an Owner, a
//! sign-in of an email that was invited or owns a license. An invitation to an email with no user
//! is noted here, so the sign-in that registers the user can turn each into a membership.
//!
//! Sessions: only the keyed hash of a session's secret is recorded. A session lasts
//! [`SESSION_TTL_HOURS`]; signing out ends every session of the user at once. The state keeps the
//! newest [`SESSIONS_MAX`] sessions, ended and expired ones too, so a presented session is told
//! apart as live, expired or revoked rather than merely unknown.

use crate::decider::{Context, Decider, DomainEvent, SnapshotCodec};
use crate::error::DomainError;
use crate::ids::{AccountId, Email, InvitationId, SecretHash, UserId};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long a session signs its user in.
pub const SESSION_TTL_HOURS: i64 = 12;
/// Sessions remembered per user (the oldest is forgotten first): a bound on the stream's state.
pub const SESSIONS_MAX: usize = 32;
/// Invitations noted for one email that has no user yet: a bound on what others can make a
/// stranger's stream hold.
pub const NOTED_INVITATIONS_MAX: usize = 100;

/// The portal's people, one stream each.
pub struct User;

/// What can be asked of a person's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserCommand {
    /// Make the email a user, unless it is one already (then nothing happens).
    Register {
        /// A fresh id, used only if the person has none.
        user_id: UserId,
        /// The email.
        email: Email,
    },
    /// Note an invitation to an account, addressed to this email while it has no user.
    NoteInvitation {
        /// The inviting account.
        account_id: AccountId,
        /// The invitation.
        invitation_id: InvitationId,
    },
    /// Forget noted invitations: they were accepted, revoked or answered otherwise.
    SettleInvitations {
        /// Which.
        invitation_ids: Vec<InvitationId>,
    },
    /// Start a session for the registered user.
    StartSession {
        /// The keyed hash of the session's secret.
        session_hash: SecretHash,
    },
    /// End every session of the user ("sign out everywhere").
    EndSessions,
    /// Forget the person (their personal data is being erased): no user, no noted invitation, no
    /// session. A later sign-in, if the email may sign in at all, makes a new user.
    Forget,
}

/// Events of a person's stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum UserEvent {
    /// The email became a user.
    UserRegistered {
        /// Its id.
        user_id: UserId,
        /// The email.
        email: Email,
        /// When.
        at: DateTime<Utc>,
    },
    /// An account invited this email before it had a user.
    InvitationNoted {
        /// The inviting account.
        account_id: AccountId,
        /// The invitation.
        invitation_id: InvitationId,
    },
    /// Noted invitations need no more attention.
    InvitationsSettled {
        /// Which.
        invitation_ids: Vec<InvitationId>,
    },
    /// A session began.
    SessionStarted {
        /// The keyed hash of its secret.
        session_hash: SecretHash,
        /// When.
        started_at: DateTime<Utc>,
        /// Until when it signs the user in.
        expires_at: DateTime<Utc>,
    },
    /// Every session of the user ended (sign-out).
    SessionsEnded {
        /// When.
        at: DateTime<Utc>,
    },
    /// The person was forgotten (erasure).
    UserForgotten {
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for UserEvent {}

/// A registered user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredUser {
    /// Their id.
    pub user_id: UserId,
    /// Their email.
    pub email: Email,
}

/// One session, as remembered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The keyed hash of its secret.
    pub session_hash: SecretHash,
    /// Until when it signs the user in.
    pub expires_at: DateTime<Utc>,
    /// Whether a sign-out ended it.
    pub ended: bool,
}

/// What a presented session is, now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    /// It signs its user in.
    Live(RegisteredUser),
    /// Its twelve hours are over.
    Expired,
    /// A sign-out ended it.
    Revoked,
    /// This person never had it (or it is long forgotten).
    Unknown,
}

/// A person's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    /// The user, once registered.
    pub user: Option<RegisteredUser>,
    /// Invitations noted while the email had no user, by invitation.
    pub invitations: BTreeMap<InvitationId, AccountId>,
    /// The newest sessions, oldest first.
    pub sessions: Vec<Session>,
}

impl UserState {
    /// What the session with this hash is at `now` (a pure query; nothing is decided).
    pub fn session(&self, session_hash: &SecretHash, now: DateTime<Utc>) -> SessionStatus {
        match (
            self.sessions
                .iter()
                .find(|s| &s.session_hash == session_hash),
            &self.user,
        ) {
            (Some(session), _) if session.ended => SessionStatus::Revoked,
            (Some(session), _) if now >= session.expires_at => SessionStatus::Expired,
            (Some(_), Some(user)) => SessionStatus::Live(user.clone()),
            _ => SessionStatus::Unknown,
        }
    }
}

impl Decider for User {
    const STREAM_TYPE: &'static str = "user";
    type State = UserState;
    // Every portal request checks its session against this stream, so a long one loads from its
    // snapshot.
    const SNAPSHOTS: Option<SnapshotCodec<UserState>> = Some(SnapshotCodec::serde(1));
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = DomainError;

    fn decide(
        state: &UserState,
        command: &UserCommand,
        context: &Context<'_>,
    ) -> Result<Vec<UserEvent>, DomainError> {
        let now = context.now;
        match command {
            UserCommand::Register { user_id, email } => Ok(match state.user {
                Some(_) => Vec::new(),
                None => vec![UserEvent::UserRegistered {
                    user_id: user_id.clone(),
                    email: email.clone(),
                    at: now,
                }],
            }),
            UserCommand::NoteInvitation {
                account_id,
                invitation_id,
            } => decide_note(state, account_id, invitation_id),
            UserCommand::SettleInvitations { invitation_ids } => {
                Ok(decide_settle(state, invitation_ids))
            }
            UserCommand::StartSession { session_hash } => decide_start(state, session_hash, now),
            UserCommand::EndSessions => {
                let live = state
                    .sessions
                    .iter()
                    .any(|s| !s.ended && now < s.expires_at);
                Ok(when(live, UserEvent::SessionsEnded { at: now }))
            }
            UserCommand::Forget => Ok(when(
                state != &UserState::default(),
                UserEvent::UserForgotten { at: now },
            )),
        }
    }

    fn evolve(mut state: UserState, event: &UserEvent) -> UserState {
        match event {
            UserEvent::UserRegistered { user_id, email, .. } => {
                state.user.get_or_insert_with(|| RegisteredUser {
                    user_id: user_id.clone(),
                    email: email.clone(),
                });
            }
            UserEvent::InvitationNoted {
                account_id,
                invitation_id,
            } => {
                state
                    .invitations
                    .insert(invitation_id.clone(), account_id.clone());
            }
            UserEvent::InvitationsSettled { invitation_ids } => {
                for id in invitation_ids {
                    state.invitations.remove(id);
                }
            }
            UserEvent::SessionStarted {
                session_hash,
                expires_at,
                ..
            } => {
                state.sessions.push(Session {
                    session_hash: session_hash.clone(),
                    expires_at: *expires_at,
                    ended: false,
                });
                if state.sessions.len() > SESSIONS_MAX {
                    let excess = state.sessions.len() - SESSIONS_MAX;
                    state.sessions.drain(..excess);
                }
            }
            UserEvent::SessionsEnded { .. } => {
                for session in &mut state.sessions {
                    session.ended = true;
                }
            }
            UserEvent::UserForgotten { .. } => state = UserState::default(),
        }
        state
    }
}

/// `event` if `happens`, else nothing.
fn when(happens: bool, event: UserEvent) -> Vec<UserEvent> {
    happens.then_some(event).into_iter().collect()
}

fn decide_note(
    state: &UserState,
    account_id: &AccountId,
    invitation_id: &InvitationId,
) -> Result<Vec<UserEvent>, DomainError> {
    if state.invitations.contains_key(invitation_id) {
        return Ok(Vec::new());
    }
    if state.invitations.len() >= NOTED_INVITATIONS_MAX {
        return Err(DomainError::invalid(
            "email",
            format!("this email has {NOTED_INVITATIONS_MAX} pending invitations already"),
        ));
    }
    Ok(vec![UserEvent::InvitationNoted {
        account_id: account_id.clone(),
        invitation_id: invitation_id.clone(),
    }])
}

fn decide_settle(state: &UserState, invitation_ids: &[InvitationId]) -> Vec<UserEvent> {
    let noted: Vec<InvitationId> = invitation_ids
        .iter()
        .filter(|id| state.invitations.contains_key(*id))
        .cloned()
        .collect();
    when(
        !noted.is_empty(),
        UserEvent::InvitationsSettled {
            invitation_ids: noted,
        },
    )
}

fn decide_start(
    state: &UserState,
    session_hash: &SecretHash,
    now: DateTime<Utc>,
) -> Result<Vec<UserEvent>, DomainError> {
    if state.user.is_none() {
        return Err(DomainError::NotFound { entity: "user" });
    }
    if state
        .sessions
        .iter()
        .any(|s| &s.session_hash == session_hash)
    {
        return Err(DomainError::AlreadyExists { entity: "session" });
    }
    Ok(vec![UserEvent::SessionStarted {
        session_hash: session_hash.clone(),
        started_at: now,
        expires_at: now + Duration::hours(SESSION_TTL_HOURS),
    }])
}
