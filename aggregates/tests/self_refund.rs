//! DOMAIN.md §13, §17 — self-refund: within 30 days of the first payment, once per license; a
//! refund is asked of Stripe once however many requests race, and the license is revoked at once.

mod support;

use aggregates::catalog::BillingCycle;
use aggregates::error::DomainError;
use aggregates::ids::{Email, LicenseId};
use aggregates::license::{License, LicenseEvent, LicenseOrigin, Payment, RevocationReason};
use aggregates::self_refund::{
    eligibility, RefundRefusal, SelfRefund, SelfRefundCommand, SelfRefundEvent,
    REFUND_RESUME_AFTER_SECONDS, SELF_REFUND_WINDOW_DAYS_DEFAULT,
};
use aggregates::subscription::SubscriptionState;
use chrono::Duration;
use support::{at, given};

const DAY: i64 = 86_400;

fn issued() -> LicenseEvent {
    LicenseEvent::LicenseIssued {
        license_id: LicenseId::parse("lic_0000000001").unwrap(),
        owner_email: Email::parse("owner@example.com").unwrap(),
        plan_version: String::from("pro"),
        billing_cycle: Some(BillingCycle::Monthly),
        state: SubscriptionState::Active,
        current_period_end: Some(at(30 * DAY)),
        legacy_migration: false,
        grandfathered_continuity: false,
        origin: LicenseOrigin::Checkout {
            session_id: String::from("cs_test_1"),
        },
        stripe_price_id: None,
        catalog_version: 1,
    }
}

fn paid(event: &str, charge: Option<&str>, seconds: i64) -> LicenseEvent {
    LicenseEvent::PaymentSucceeded {
        stripe_event_id: event.to_owned(),
        current_period_end: Some(at(seconds + 30 * DAY)),
        payment: charge.map(|charge| Payment {
            charge: charge.to_owned(),
            paid_at: at(seconds),
        }),
    }
}

fn revoked() -> LicenseEvent {
    LicenseEvent::LicenseRevoked {
        reason: RevocationReason::Dispute,
        reference: String::from("dp_1"),
        license_version: 2,
    }
}

fn license(history: Vec<LicenseEvent>) -> aggregates::license::IssuedLicense {
    given::<License>(history).state().issued.unwrap()
}

fn requested(seconds: i64) -> SelfRefundEvent {
    SelfRefundEvent::SelfRefundRequested {
        charge: String::from("ch_1"),
        at: at(seconds),
    }
}

fn refunded() -> SelfRefundEvent {
    SelfRefundEvent::SelfRefundIssued {
        refund_id: String::from("re_1"),
        charge: String::from("ch_1"),
        at: at(1),
    }
}

fn eligible_at(
    history: Vec<LicenseEvent>,
    refund: Vec<SelfRefundEvent>,
    seconds: i64,
) -> Result<String, DomainError> {
    eligibility(
        &license(history),
        &given::<SelfRefund>(refund).state(),
        SELF_REFUND_WINDOW_DAYS_DEFAULT,
        at(seconds),
    )
}

fn refusal(reason: RefundRefusal) -> Result<String, DomainError> {
    Err(DomainError::RefundNotEligible { reason })
}

#[test]
fn the_first_payment_is_refundable_until_thirty_days_after_it() {
    let history = || {
        vec![
            issued(),
            paid("evt_1", Some("ch_1"), 0),
            paid("evt_2", Some("ch_2"), 29 * DAY),
        ]
    };
    assert_eq!(
        eligible_at(history(), vec![], 30 * DAY - 1),
        Ok(String::from("ch_1"))
    );
    assert_eq!(
        eligible_at(history(), vec![], 30 * DAY),
        refusal(RefundRefusal::WindowPassed)
    );
}

#[test]
fn a_license_with_no_payment_naming_its_charge_is_not_paid() {
    assert_eq!(
        eligible_at(vec![issued()], vec![], 0),
        refusal(RefundRefusal::NotPaid)
    );
    assert_eq!(
        eligible_at(vec![issued(), paid("evt_1", None, 0)], vec![], 1),
        refusal(RefundRefusal::NotPaid),
        "a payment recorded before charges were kept names nothing to refund"
    );
}

#[test]
fn a_revoked_license_is_not_refundable_and_a_refunded_one_says_so_first() {
    let history = || vec![issued(), paid("evt_1", Some("ch_1"), 0), revoked()];
    assert_eq!(
        eligible_at(history(), vec![], 1),
        refusal(RefundRefusal::Revoked)
    );
    assert_eq!(
        eligible_at(history(), vec![requested(0), refunded()], 1),
        refusal(RefundRefusal::AlreadyRefunded)
    );
}

#[test]
fn a_request_is_recorded_before_stripe_is_asked() {
    given::<SelfRefund>(vec![])
        .when(SelfRefundCommand::Request {
            charge: String::from("ch_1"),
        })
        .then(vec![requested(0)]);
}

#[test]
fn a_second_request_while_one_is_pending_is_told_it_is_in_progress() {
    given::<SelfRefund>(vec![requested(0)])
        .at(at(REFUND_RESUME_AFTER_SECONDS - 1))
        .when(SelfRefundCommand::Request {
            charge: String::from("ch_1"),
        })
        .then_err(DomainError::RefundInProgress);
}

#[test]
fn a_request_stalled_past_a_minute_is_taken_over_for_the_same_charge() {
    given::<SelfRefund>(vec![requested(0)])
        .at(at(REFUND_RESUME_AFTER_SECONDS))
        .when(SelfRefundCommand::Request {
            charge: String::from("ch_other"),
        })
        .then(vec![requested(REFUND_RESUME_AFTER_SECONDS)]);
}

#[test]
fn stripes_refund_is_recorded_once_and_nothing_is_refunded_again() {
    given::<SelfRefund>(vec![requested(0)])
        .at(at(1))
        .when(SelfRefundCommand::RecordIssued {
            refund_id: String::from("re_1"),
        })
        .then(vec![refunded()]);
    for command in [
        SelfRefundCommand::Request {
            charge: String::from("ch_1"),
        },
        SelfRefundCommand::RecordIssued {
            refund_id: String::from("re_2"),
        },
    ] {
        given::<SelfRefund>(vec![requested(0), refunded()])
            .at(at(DAY))
            .when(command)
            .then_err(DomainError::RefundNotEligible {
                reason: RefundRefusal::AlreadyRefunded,
            });
    }
}

#[test]
fn a_refund_cannot_be_recorded_that_was_never_requested() {
    let result = given::<SelfRefund>(vec![])
        .when(SelfRefundCommand::RecordIssued {
            refund_id: String::from("re_1"),
        })
        .result();
    assert!(
        matches!(result, Err(DomainError::InvalidTransition { .. })),
        "{result:?}"
    );
}

#[test]
fn the_window_is_configurable() {
    let history = vec![issued(), paid("evt_1", Some("ch_1"), 0)];
    let state = given::<SelfRefund>(vec![]).state();
    let seven_days = eligibility(
        &license(history),
        &state,
        7,
        at(7 * DAY) - Duration::seconds(1),
    );
    assert_eq!(seven_days, Ok(String::from("ch_1")));
    let history = vec![issued(), paid("evt_1", Some("ch_1"), 0)];
    assert_eq!(
        eligibility(&license(history), &state, 7, at(7 * DAY)),
        refusal(RefundRefusal::WindowPassed)
    );
}
