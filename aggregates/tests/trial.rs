//! DOMAIN.md §8 — trials: once per org, 14 days, the sliding-window limiter, the denial codes.

mod support;

use aggregates::error::DomainError;
use aggregates::trial::{StartTrial, Trial, TrialEvent, TRIAL_DAYS};
use chrono::Duration;
use support::{at, given, t0};

fn start(license_active: bool, subscription_active: bool, signed_up: bool) -> StartTrial {
    StartTrial {
        license_active,
        subscription_active,
        signed_up,
        signup_url: String::from("https://account.pulse.example/signup"),
    }
}

fn eligible() -> StartTrial {
    start(false, false, true)
}

fn denied(code: &str, reason: Option<&str>, action_url: Option<&str>, seconds: i64) -> TrialEvent {
    TrialEvent::TrialDenied {
        code: code.to_owned(),
        reason: reason.map(str::to_owned),
        action_url: action_url.map(str::to_owned),
        at: at(seconds),
    }
}

fn started(seconds: i64) -> TrialEvent {
    TrialEvent::TrialStarted {
        started_at: at(seconds),
        ends_at: at(seconds) + Duration::days(TRIAL_DAYS),
        plan_version: String::from("trial"),
        max_monitored_systems: 15,
    }
}

#[test]
fn a_signed_up_org_without_license_or_subscription_gets_fourteen_days_with_fifteen_systems() {
    let state = given::<Trial>(vec![])
        .when(eligible())
        .then(vec![started(0)]);
    assert_eq!(state.trial_ends_at, Some(t0() + Duration::days(14)));
}

#[test]
fn a_trial_is_once_per_org() {
    let events = given::<Trial>(vec![started(0)])
        .at(at(60))
        .when(eligible())
        .then(vec![denied("trial_already_used", None, None, 60)]);
    assert_eq!(
        events.trial_started_at,
        Some(t0()),
        "the first trial's start is kept"
    );
}

#[test]
fn an_active_license_or_subscription_makes_the_trial_not_available() {
    given::<Trial>(vec![])
        .when(start(true, false, true))
        .then(vec![denied(
            "trial_not_available",
            Some("license_active"),
            None,
            0,
        )]);
    given::<Trial>(vec![])
        .when(start(false, true, true))
        .then(vec![denied(
            "trial_not_available",
            Some("subscription_active"),
            None,
            0,
        )]);
}

#[test]
fn an_eligible_org_that_has_not_signed_up_is_sent_to_sign_up() {
    let events = given::<Trial>(vec![])
        .when(start(false, false, false))
        .result()
        .unwrap();
    assert_eq!(
        events,
        vec![denied(
            "trial_signup_required",
            None,
            Some("https://account.pulse.example/signup"),
            0
        )]
    );
    assert_eq!(
        events[0].denial(),
        Some(DomainError::TrialSignupRequired {
            action_url: String::from("https://account.pulse.example/signup")
        })
    );
}

#[test]
fn each_denial_maps_to_its_code() {
    let codes: Vec<_> = [
        denied("trial_already_used", None, None, 0),
        denied("trial_not_available", Some("license_active"), None, 0),
        denied("trial_not_available", Some("subscription_active"), None, 0),
        denied("trial_signup_required", None, Some("u"), 0),
    ]
    .iter()
    .map(|e| e.denial().unwrap().code())
    .collect();
    assert_eq!(
        codes,
        [
            "trial_already_used",
            "trial_not_available",
            "trial_not_available",
            "trial_signup_required"
        ]
    );
    assert_eq!(started(0).denial(), None);
}

#[test]
fn a_seventh_attempt_within_fifteen_minutes_is_rate_limited_until_the_oldest_leaves() {
    let attempts: Vec<_> = (0..6)
        .map(|n| denied("trial_signup_required", None, Some("u"), n * 60))
        .collect();
    given::<Trial>(attempts.clone())
        .at(at(400))
        .when(eligible())
        .then_err(DomainError::TrialRateLimited {
            retry_after_seconds: 500,
        });
    given::<Trial>(attempts.clone())
        .at(at(899))
        .when(eligible())
        .then_err(DomainError::TrialRateLimited {
            retry_after_seconds: 1,
        });
    assert!(
        given::<Trial>(attempts)
            .at(at(900))
            .when(eligible())
            .result()
            .is_ok(),
        "the oldest attempt left the window"
    );
}

#[test]
fn the_retry_after_rounds_a_partial_second_up() {
    let attempts: Vec<_> = (0..6)
        .map(|n| denied("trial_signup_required", None, Some("u"), n))
        .collect();
    let half_second_later = at(10) + Duration::milliseconds(500);
    given::<Trial>(attempts)
        .at(half_second_later)
        .when(eligible())
        .then_err(DomainError::TrialRateLimited {
            retry_after_seconds: 890,
        });
}
