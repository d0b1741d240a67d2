//! PORTAL.md §1–2 — a person of the portal: one user per email, invitations noted while the email
//! has no user, sessions of twelve hours, and signing out that ends every session at once.

mod support;

use aggregates::error::DomainError;
use aggregates::ids::{AccountId, Email, InvitationId, SecretHash, UserId};
use aggregates::user::{
    SessionStatus, User, UserCommand, UserEvent, NOTED_INVITATIONS_MAX, SESSIONS_MAX,
};
use chrono::Duration;
use support::{at, given};

fn email() -> Email {
    Email::parse("ops@example.com").unwrap()
}

fn hash(n: u8) -> SecretHash {
    SecretHash::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

fn registered(user: u64, seconds: i64) -> UserEvent {
    UserEvent::UserRegistered {
        user_id: UserId::from_entropy(user),
        email: email(),
        at: at(seconds),
    }
}

fn started(n: u8, seconds: i64) -> UserEvent {
    UserEvent::SessionStarted {
        session_hash: hash(n),
        started_at: at(seconds),
        expires_at: at(seconds) + Duration::hours(12),
    }
}

fn noted(n: u64) -> UserEvent {
    UserEvent::InvitationNoted {
        account_id: AccountId::from_entropy(n),
        invitation_id: InvitationId::from_entropy(n),
    }
}

#[test]
fn an_email_becomes_a_user_once() {
    given::<User>(vec![])
        .when(UserCommand::Register {
            user_id: UserId::from_entropy(1),
            email: email(),
        })
        .then(vec![registered(1, 0)]);
    given::<User>(vec![registered(1, 0)])
        .when(UserCommand::Register {
            user_id: UserId::from_entropy(2),
            email: email(),
        })
        .then(vec![]);
}

#[test]
fn a_session_needs_a_registered_user() {
    given::<User>(vec![])
        .when(UserCommand::StartSession {
            session_hash: hash(1),
        })
        .then_err(DomainError::NotFound { entity: "user" });
}

#[test]
fn a_session_lasts_twelve_hours() {
    let state = given::<User>(vec![registered(1, 0)])
        .at(at(10))
        .when(UserCommand::StartSession {
            session_hash: hash(1),
        })
        .then(vec![started(1, 10)]);
    let live = state.session(
        &hash(1),
        at(10) + Duration::hours(12) - Duration::seconds(1),
    );
    assert!(matches!(live, SessionStatus::Live(user) if user.user_id == UserId::from_entropy(1)));
    assert_eq!(
        state.session(&hash(1), at(10) + Duration::hours(12)),
        SessionStatus::Expired
    );
    assert_eq!(state.session(&hash(2), at(11)), SessionStatus::Unknown);
}

#[test]
fn signing_out_ends_every_session_of_the_user() {
    let state = given::<User>(vec![registered(1, 0), started(1, 0), started(2, 5)])
        .at(at(60))
        .when(UserCommand::EndSessions)
        .then(vec![UserEvent::SessionsEnded { at: at(60) }]);
    assert_eq!(state.session(&hash(1), at(61)), SessionStatus::Revoked);
    assert_eq!(state.session(&hash(2), at(61)), SessionStatus::Revoked);
}

#[test]
fn a_session_after_signing_out_is_live() {
    let state = given::<User>(vec![
        registered(1, 0),
        started(1, 0),
        UserEvent::SessionsEnded { at: at(60) },
        started(2, 70),
    ])
    .state();
    assert!(matches!(
        state.session(&hash(2), at(71)),
        SessionStatus::Live(_)
    ));
    assert_eq!(state.session(&hash(1), at(71)), SessionStatus::Revoked);
}

#[test]
fn signing_out_with_no_live_session_records_nothing() {
    given::<User>(vec![registered(1, 0), started(1, 0)])
        .at(at(0) + Duration::hours(13))
        .when(UserCommand::EndSessions)
        .then(vec![]);
}

#[test]
fn only_the_newest_sessions_are_remembered() {
    let mut history = vec![registered(1, 0)];
    history.extend((0..=SESSIONS_MAX as u8).map(|n| started(n, i64::from(n))));
    let state = given::<User>(history).state();
    assert_eq!(state.sessions.len(), SESSIONS_MAX);
    assert_eq!(state.session(&hash(0), at(100)), SessionStatus::Unknown);
    assert!(matches!(
        state.session(&hash(1), at(100)),
        SessionStatus::Live(_)
    ));
}

#[test]
fn an_invitation_is_noted_once_and_settled() {
    let invitation = InvitationId::from_entropy(7);
    given::<User>(vec![noted(7)])
        .when(UserCommand::NoteInvitation {
            account_id: AccountId::from_entropy(7),
            invitation_id: invitation.clone(),
        })
        .then(vec![]);
    let state = given::<User>(vec![noted(7)])
        .when(UserCommand::SettleInvitations {
            invitation_ids: vec![invitation.clone(), InvitationId::from_entropy(8)],
        })
        .then(vec![UserEvent::InvitationsSettled {
            invitation_ids: vec![invitation],
        }]);
    assert!(state.invitations.is_empty());
}

#[test]
fn an_email_holds_a_bounded_number_of_noted_invitations() {
    let history = (0..NOTED_INVITATIONS_MAX as u64).map(noted).collect();
    let refused = given::<User>(history)
        .when(UserCommand::NoteInvitation {
            account_id: AccountId::from_entropy(999),
            invitation_id: InvitationId::from_entropy(999),
        })
        .result();
    assert!(matches!(
        refused,
        Err(DomainError::InvalidInput { field: "email", .. })
    ));
}

#[test]
fn a_forgotten_person_has_no_user_invitation_or_session() {
    let state = given::<User>(vec![registered(1, 0), noted(3), started(1, 0)])
        .at(at(90))
        .when(UserCommand::Forget)
        .then(vec![UserEvent::UserForgotten { at: at(90) }]);
    assert_eq!(state.user, None);
    assert!(state.invitations.is_empty());
    assert_eq!(state.session(&hash(1), at(91)), SessionStatus::Unknown);
    given::<User>(vec![]).when(UserCommand::Forget).then(vec![]);
}

#[test]
fn a_forgotten_person_who_signs_in_again_is_a_new_user() {
    given::<User>(vec![
        registered(1, 0),
        UserEvent::UserForgotten { at: at(90) },
    ])
    .at(at(100))
    .when(UserCommand::Register {
        user_id: UserId::from_entropy(2),
        email: email(),
    })
    .then(vec![UserEvent::UserRegistered {
        user_id: UserId::from_entropy(2),
        email: email(),
        at: at(100),
    }]);
}
