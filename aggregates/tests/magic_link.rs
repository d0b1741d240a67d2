//! PORTAL.md §2 — sign-in by email: a link and a code, 15 minutes, once, 5 wrong codes end it,
//! 3 links an hour per person, the newest link the only one that works.

mod support;

use aggregates::error::DomainError;
use aggregates::ids::{Email, SecretHash};
use aggregates::magic_link::{
    MagicLink, MagicLinkCommand, MagicLinkEvent, SignInMethod, MAGIC_LINK_CODE_ATTEMPTS_MAX,
};
use chrono::Duration;
use support::{at, given};

fn hash(n: u8) -> SecretHash {
    SecretHash::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

fn email() -> Email {
    Email::parse("ops@example.com").unwrap()
}

fn request(n: u8) -> MagicLinkCommand {
    MagicLinkCommand::Request {
        link_id: format!("ml_{n}"),
        email: email(),
        token_hash: hash(n),
        code_hash: hash(100 + n),
    }
}

fn issued(n: u8, seconds: i64) -> MagicLinkEvent {
    MagicLinkEvent::MagicLinkIssued {
        link_id: format!("ml_{n}"),
        email: email(),
        token_hash: hash(n),
        code_hash: hash(100 + n),
        issued_at: at(seconds),
        expires_at: at(seconds) + Duration::minutes(15),
    }
}

fn token(n: u8) -> MagicLinkCommand {
    MagicLinkCommand::ConsumeToken {
        token_hash: hash(n),
    }
}

fn code(n: u8) -> MagicLinkCommand {
    MagicLinkCommand::EnterCode {
        code_hash: hash(100 + n),
    }
}

fn consumed(n: u8, method: SignInMethod, seconds: i64) -> MagicLinkEvent {
    MagicLinkEvent::MagicLinkConsumed {
        link_id: format!("ml_{n}"),
        method,
        at: at(seconds),
    }
}

fn rejected(n: u8, attempts_left: u32, seconds: i64) -> MagicLinkEvent {
    MagicLinkEvent::MagicLinkCodeRejected {
        link_id: format!("ml_{n}"),
        attempts_left,
        at: at(seconds),
    }
}

#[test]
fn a_request_issues_a_link_that_lives_fifteen_minutes() {
    given::<MagicLink>(vec![])
        .when(request(1))
        .then(vec![issued(1, 0)]);
}

#[test]
fn the_link_signs_in_once_by_its_token() {
    given::<MagicLink>(vec![issued(1, 0)])
        .at(at(60))
        .when(token(1))
        .then(vec![consumed(1, SignInMethod::Link, 60)]);
    given::<MagicLink>(vec![issued(1, 0), consumed(1, SignInMethod::Link, 60)])
        .at(at(61))
        .when(token(1))
        .then_err(DomainError::InvalidToken);
}

#[test]
fn the_code_signs_in_instead_of_the_link_and_then_neither_works() {
    given::<MagicLink>(vec![issued(1, 0)])
        .at(at(60))
        .when(code(1))
        .then(vec![consumed(1, SignInMethod::Code, 60)]);
    given::<MagicLink>(vec![issued(1, 0), consumed(1, SignInMethod::Code, 60)])
        .at(at(61))
        .when(token(1))
        .then_err(DomainError::InvalidToken);
}

#[test]
fn an_expired_link_signs_no_one_in() {
    given::<MagicLink>(vec![issued(1, 0)])
        .at(at(15 * 60))
        .when(token(1))
        .then_err(DomainError::InvalidToken);
    given::<MagicLink>(vec![issued(1, 0)])
        .at(at(15 * 60))
        .when(code(1))
        .then_err(DomainError::InvalidToken);
}

#[test]
fn a_wrong_token_is_refused_without_a_record() {
    given::<MagicLink>(vec![issued(1, 0)])
        .when(token(9))
        .then_err(DomainError::InvalidToken);
}

#[test]
fn every_wrong_code_is_recorded_and_the_fifth_ends_the_link() {
    let mut past = vec![issued(1, 0)];
    for wrong in 0..MAGIC_LINK_CODE_ATTEMPTS_MAX {
        let left = MAGIC_LINK_CODE_ATTEMPTS_MAX - wrong - 1;
        given::<MagicLink>(past.clone())
            .at(at(i64::from(wrong) + 1))
            .when(code(9))
            .then(vec![rejected(1, left, i64::from(wrong) + 1)]);
        past.push(rejected(1, left, i64::from(wrong) + 1));
    }
    given::<MagicLink>(past.clone())
        .at(at(10))
        .when(code(1))
        .then_err(DomainError::InvalidToken);
    given::<MagicLink>(past)
        .at(at(10))
        .when(token(1))
        .then_err(DomainError::InvalidToken);
    assert_eq!(rejected(1, 0, 5).refusal(), Some(DomainError::InvalidToken));
}

#[test]
fn a_newer_link_supersedes_the_older_one() {
    given::<MagicLink>(vec![issued(1, 0), issued(2, 30)])
        .at(at(60))
        .when(token(1))
        .then_err(DomainError::InvalidToken);
    given::<MagicLink>(vec![issued(1, 0), issued(2, 30)])
        .at(at(60))
        .when(token(2))
        .then(vec![consumed(2, SignInMethod::Link, 60)]);
}

#[test]
fn a_fourth_request_within_an_hour_issues_nothing_and_an_hour_later_one_is_issued() {
    let past = vec![issued(1, 0), issued(2, 600), issued(3, 1_200)];
    given::<MagicLink>(past.clone())
        .at(at(1_800))
        .when(request(4))
        .then(vec![]);
    given::<MagicLink>(past)
        .at(at(3_600))
        .when(request(4))
        .then(vec![issued(4, 3_600)]);
}

#[test]
fn a_link_id_is_bounded() {
    given::<MagicLink>(vec![])
        .when(MagicLinkCommand::Request {
            link_id: "x".repeat(65),
            email: email(),
            token_hash: hash(1),
            code_hash: hash(2),
        })
        .then_err(DomainError::invalid(
            "link_id",
            "must be 1 to 64 characters",
        ));
}
