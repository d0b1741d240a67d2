//! DOMAIN.md §6.6 — redemption: the begin-decision table row by row, the terminal state, failures.

mod support;

use aggregates::error::DomainError;
use aggregates::ids::HandoffId;
use aggregates::redemption::{Redemption, RedemptionCommand, RedemptionEvent, RedemptionStatus};
use support::{at, given};

fn handoff(n: u64) -> HandoffId {
    HandoffId::from_entropy(n)
}

fn begin(jti: &str, session: &str, session_handoff: Option<HandoffId>) -> RedemptionCommand {
    RedemptionCommand::Begin {
        handoff_id: handoff(1),
        purchase_return_jti: jti.to_owned(),
        session_id: session.to_owned(),
        session_handoff,
    }
}

fn started(at_seconds: i64, restart: bool) -> RedemptionEvent {
    RedemptionEvent::RedemptionStarted {
        handoff_id: handoff(1),
        purchase_return_jti: String::from("jti-1"),
        session_id: String::from("cs_1"),
        started_at: at(at_seconds),
        restart,
    }
}

fn activated() -> RedemptionEvent {
    RedemptionEvent::RedemptionActivated {
        redeemed_at: at(5),
        license_id: None,
    }
}

fn failed() -> RedemptionEvent {
    RedemptionEvent::RedemptionFailed {
        failure_reason: String::from("activation_failed"),
        failure_message: String::from("the key was refused"),
        failed_at: at(5),
    }
}

#[test]
fn row_none_starts() {
    given::<Redemption>(vec![])
        .when(begin("jti-1", "cs_1", Some(handoff(1))))
        .then(vec![started(0, false)]);
}

#[test]
fn row_same_key_different_session_is_a_conflict() {
    given::<Redemption>(vec![started(0, false)])
        .at(at(60))
        .when(begin("jti-1", "cs_2", None))
        .then_err(DomainError::RedemptionConflict);
}

#[test]
fn row_same_key_activated_is_already_activated() {
    given::<Redemption>(vec![started(0, false), activated()])
        .at(at(60))
        .when(begin("jti-1", "cs_1", None))
        .then_err(DomainError::RedemptionAlreadyActivated);
}

#[test]
fn row_same_key_started_under_thirty_seconds_ago_is_in_progress() {
    given::<Redemption>(vec![started(0, false)])
        .at(at(29))
        .when(begin("jti-1", "cs_1", None))
        .then_err(DomainError::RedemptionInProgress);
}

#[test]
fn row_same_key_started_thirty_seconds_ago_or_more_restarts() {
    given::<Redemption>(vec![started(0, false)])
        .at(at(30))
        .when(begin("jti-1", "cs_1", None))
        .then(vec![started(30, true)]);
}

#[test]
fn row_same_key_failed_restarts() {
    let state = given::<Redemption>(vec![started(0, false), failed()])
        .at(at(6))
        .when(begin("jti-1", "cs_1", None))
        .then(vec![started(6, true)]);
    let record = state.record.unwrap();
    assert_eq!(record.status, RedemptionStatus::Started);
    assert_eq!(
        record.failure_reason.as_deref(),
        Some("activation_failed"),
        "nothing is deleted"
    );
}

#[test]
fn row_same_handoff_with_another_jti_is_a_conflict() {
    given::<Redemption>(vec![started(0, false)])
        .at(at(60))
        .when(begin("jti-2", "cs_1", None))
        .then_err(DomainError::RedemptionConflict);
}

#[test]
fn row_same_session_under_another_key_is_a_conflict() {
    given::<Redemption>(vec![])
        .when(begin("jti-1", "cs_1", Some(handoff(2))))
        .then_err(DomainError::RedemptionConflict);
}

#[test]
fn activated_is_terminal() {
    let history = vec![started(0, false), activated()];
    given::<Redemption>(history.clone())
        .when(RedemptionCommand::MarkFailed {
            purchase_return_jti: String::from("jti-1"),
            failure_reason: String::from("late"),
            failure_message: String::from("too late"),
        })
        .then_err(DomainError::RedemptionAlreadyActivated);
    given::<Redemption>(history)
        .when(RedemptionCommand::MarkActivated {
            purchase_return_jti: String::from("jti-1"),
            license_id: None,
        })
        .then(vec![]);
}

#[test]
fn a_failure_records_its_reason_message_and_time() {
    let state = given::<Redemption>(vec![started(0, false)])
        .at(at(5))
        .when(RedemptionCommand::MarkFailed {
            purchase_return_jti: String::from("jti-1"),
            failure_reason: String::from("activation_failed"),
            failure_message: String::from("the key was refused"),
        })
        .then(vec![failed()]);
    let record = state.record.unwrap();
    assert_eq!(record.status, RedemptionStatus::Failed);
    assert_eq!(
        record.failure_message.as_deref(),
        Some("the key was refused")
    );
}

#[test]
fn activation_stamps_redeemed_at() {
    let state = given::<Redemption>(vec![started(0, false)])
        .at(at(5))
        .when(RedemptionCommand::MarkActivated {
            purchase_return_jti: String::from("jti-1"),
            license_id: None,
        })
        .then(vec![activated()]);
    assert_eq!(state.record.unwrap().redeemed_at, Some(at(5)));
}
