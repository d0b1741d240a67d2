//! Staff and service tokens (issue 5): a token is issued once with one role, authorizes only its
//! own hash until revoked, and revocation is final.

mod support;

use aggregates::error::DomainError;
use aggregates::ids::{SecretHash, StaffTokenId};
use aggregates::staff::{
    staff_access, StaffAccessEvent, StaffRole, StaffToken, StaffTokenCommand, StaffTokenEvent,
    STAFF_ACCESS_PATH_LEN_MAX, STAFF_TOKEN_NAME_LEN_MAX,
};
use support::{at, given, t0};

fn hash(n: u8) -> SecretHash {
    SecretHash::parse(&format!("{:064x}", n)).unwrap()
}

fn issue(role: StaffRole) -> StaffTokenCommand {
    StaffTokenCommand::Issue {
        token_id: StaffTokenId::from_entropy(1),
        name: String::from("alice (support)"),
        role,
        token_hash: hash(1),
    }
}

fn issued() -> StaffTokenEvent {
    StaffTokenEvent::StaffTokenIssued {
        token_id: StaffTokenId::from_entropy(1),
        name: String::from("alice (support)"),
        role: StaffRole::Support,
        token_hash: hash(1),
        at: t0(),
    }
}

#[test]
fn a_token_is_issued_once_with_its_role_and_authorizes_only_its_own_hash() {
    let state = given::<StaffToken>(vec![])
        .when(issue(StaffRole::Support))
        .then(vec![issued()]);
    assert_eq!(state.authorizes(&hash(1)), Some(StaffRole::Support));
    assert_eq!(state.authorizes(&hash(2)), None);
    given::<StaffToken>(vec![issued()])
        .when(issue(StaffRole::Auditor))
        .then_err(DomainError::AlreadyExists {
            entity: "staff token",
        });
}

#[test]
fn a_token_needs_a_name() {
    given::<StaffToken>(vec![])
        .when(StaffTokenCommand::Issue {
            token_id: StaffTokenId::from_entropy(1),
            name: String::from("   "),
            role: StaffRole::Auditor,
            token_hash: hash(1),
        })
        .then_err(DomainError::invalid(
            "name",
            format!("must be 1 to {STAFF_TOKEN_NAME_LEN_MAX} printable characters"),
        ));
}

#[test]
fn a_revoked_token_authorizes_nothing_and_revoking_again_changes_nothing() {
    let revoked = StaffTokenEvent::StaffTokenRevoked { at: at(60) };
    let state = given::<StaffToken>(vec![issued()])
        .at(at(60))
        .when(StaffTokenCommand::Revoke)
        .then(vec![revoked.clone()]);
    assert_eq!(state.authorizes(&hash(1)), None);
    given::<StaffToken>(vec![issued(), revoked])
        .at(at(120))
        .when(StaffTokenCommand::Revoke)
        .then(vec![]);
    given::<StaffToken>(vec![])
        .when(StaffTokenCommand::Revoke)
        .then_err(DomainError::NotFound {
            entity: "staff token",
        });
}

#[test]
fn roles_parse_by_name_and_nothing_else() {
    for role in [
        StaffRole::Support,
        StaffRole::Auditor,
        StaffRole::Provisioner,
    ] {
        assert_eq!(StaffRole::parse(role.as_str()), Ok(role));
    }
    assert!(StaffRole::parse("admin").is_err());
}

#[test]
fn an_access_record_keeps_a_bounded_path() {
    let long = "/v1/staff/".to_owned() + &"é".repeat(STAFF_ACCESS_PATH_LEN_MAX);
    let StaffAccessEvent::StaffAccessRecorded { path, .. } = staff_access(
        &StaffTokenId::from_entropy(1),
        StaffRole::Support,
        "GET",
        &long,
    );
    assert!(path.len() <= STAFF_ACCESS_PATH_LEN_MAX && long.starts_with(&path));
}
