//! DOMAIN.md §13, PORTAL.md §4 — email codes of the recovery jobs: 6 digits bound to one job, 15
//! minutes, once, five wrong codes end it, one resend a minute.

mod support;

use aggregates::email_code::{
    EmailCode, EmailCodeCommand, EmailCodeEvent, RecoveryJob, EMAIL_CODE_ATTEMPTS_MAX,
};
use aggregates::error::DomainError;
use aggregates::ids::{Email, SecretHash};
use chrono::Duration;
use support::{at, given};

fn hash(n: u8) -> SecretHash {
    SecretHash::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

fn email() -> Email {
    Email::parse("owner@example.com").unwrap()
}

fn request(job: RecoveryJob, n: u8) -> EmailCodeCommand {
    EmailCodeCommand::Request {
        job,
        code_id: format!("ec_{n}"),
        email: email(),
        code_hash: hash(n),
    }
}

fn issued(job: RecoveryJob, n: u8, seconds: i64) -> EmailCodeEvent {
    EmailCodeEvent::EmailCodeIssued {
        code_id: format!("ec_{n}"),
        job,
        email: email(),
        code_hash: hash(n),
        issued_at: at(seconds),
        expires_at: at(seconds) + Duration::minutes(15),
    }
}

fn confirm(job: RecoveryJob, n: u8) -> EmailCodeCommand {
    EmailCodeCommand::Confirm {
        job,
        code_hash: hash(n),
    }
}

#[test]
fn a_request_issues_a_code_for_its_job_that_lives_fifteen_minutes() {
    given::<EmailCode>(vec![])
        .when(request(RecoveryJob::Retrieve, 1))
        .then(vec![issued(RecoveryJob::Retrieve, 1, 0)]);
}

#[test]
fn the_code_confirms_its_job_once() {
    given::<EmailCode>(vec![issued(RecoveryJob::Retrieve, 1, 0)])
        .at(at(60))
        .when(confirm(RecoveryJob::Retrieve, 1))
        .then(vec![EmailCodeEvent::EmailCodeUsed {
            code_id: String::from("ec_1"),
            at: at(60),
        }]);
    given::<EmailCode>(vec![
        issued(RecoveryJob::Retrieve, 1, 0),
        EmailCodeEvent::EmailCodeUsed {
            code_id: String::from("ec_1"),
            at: at(60),
        },
    ])
    .at(at(61))
    .when(confirm(RecoveryJob::Retrieve, 1))
    .then_err(DomainError::InvalidToken);
}

#[test]
fn a_code_for_one_job_does_not_confirm_another() {
    given::<EmailCode>(vec![issued(RecoveryJob::Retrieve, 1, 0)])
        .when(confirm(RecoveryJob::Delete, 1))
        .then_err(DomainError::InvalidToken);
}

#[test]
fn a_code_expires_after_fifteen_minutes() {
    given::<EmailCode>(vec![issued(RecoveryJob::Export, 1, 0)])
        .at(at(0) + Duration::minutes(15))
        .when(confirm(RecoveryJob::Export, 1))
        .then_err(DomainError::InvalidToken);
}

#[test]
fn five_wrong_codes_end_it() {
    let mut history = vec![issued(RecoveryJob::Manage, 1, 0)];
    for left in (0..EMAIL_CODE_ATTEMPTS_MAX).rev() {
        let decided = given::<EmailCode>(history.clone())
            .when(confirm(RecoveryJob::Manage, 9))
            .result()
            .unwrap();
        assert_eq!(
            decided,
            vec![EmailCodeEvent::EmailCodeRejected {
                code_id: String::from("ec_1"),
                attempts_left: left,
                at: at(0),
            }]
        );
        assert_eq!(decided[0].refusal(), Some(DomainError::InvalidToken));
        history.extend(decided);
    }
    given::<EmailCode>(history)
        .when(confirm(RecoveryJob::Manage, 1))
        .then_err(DomainError::InvalidToken);
}

#[test]
fn one_code_a_minute_per_job_and_a_new_one_replaces_the_old() {
    given::<EmailCode>(vec![issued(RecoveryJob::Retrieve, 1, 0)])
        .at(at(59))
        .when(request(RecoveryJob::Retrieve, 2))
        .then(vec![]);
    given::<EmailCode>(vec![issued(RecoveryJob::Retrieve, 1, 0)])
        .at(at(59))
        .when(request(RecoveryJob::Export, 2))
        .then(vec![issued(RecoveryJob::Export, 2, 59)]);
    given::<EmailCode>(vec![
        issued(RecoveryJob::Retrieve, 1, 0),
        issued(RecoveryJob::Retrieve, 2, 60),
    ])
    .at(at(61))
    .when(confirm(RecoveryJob::Retrieve, 1))
    .then(vec![EmailCodeEvent::EmailCodeRejected {
        code_id: String::from("ec_2"),
        attempts_left: EMAIL_CODE_ATTEMPTS_MAX - 1,
        at: at(61),
    }]);
}
