//! DOMAIN.md §4 — the subscription lifecycle tables, row by row.

use aggregates::subscription::{grace_ends_at, is_stale, SubscriptionState, SubscriptionState::*};
use chrono::{Duration, TimeZone, Utc};

#[test]
fn the_valid_transition_table_is_exactly_the_documented_one() {
    let valid = [
        (Trial, Active),
        (Trial, Expired),
        (Active, Grace),
        (Active, Suspended),
        (Active, Canceled),
        (Grace, Active),
        (Grace, Expired),
        (Grace, Canceled),
        (Expired, Active),
        (Suspended, Active),
        (Suspended, Expired),
    ];
    for from in SubscriptionState::ALL {
        for to in SubscriptionState::ALL {
            let expected = valid.contains(&(from, to));
            assert_eq!(
                from.can_become(to),
                expected,
                "{} -> {}",
                from.as_str(),
                to.as_str()
            );
        }
    }
}

#[test]
fn canceled_is_final_for_a_subscription() {
    assert!(SubscriptionState::ALL
        .iter()
        .all(|to| !Canceled.can_become(*to)));
}

#[test]
fn stripe_statuses_map_to_states() {
    let table = [
        ("active", Active),
        ("trialing", Trial),
        ("past_due", Grace),
        ("unpaid", Grace),
        ("canceled", Canceled),
        ("paused", Suspended),
        ("incomplete", Expired),
        ("incomplete_expired", Expired),
        ("something_new", Expired),
    ];
    for (status, state) in table {
        assert_eq!(
            SubscriptionState::from_stripe_status(status),
            state,
            "{status}"
        );
    }
}

#[test]
fn trial_active_and_grace_grant_paid_capabilities_and_the_rest_do_not() {
    let granting: Vec<_> = SubscriptionState::ALL
        .into_iter()
        .filter(|s| s.grants_paid())
        .collect();
    assert_eq!(granting, [Trial, Active, Grace]);
}

#[test]
fn the_grant_status_claim_is_active_grace_or_suspended() {
    let table = [
        (Active, "active"),
        (Grace, "grace"),
        (Trial, "suspended"),
        (Expired, "suspended"),
        (Canceled, "suspended"),
        (Suspended, "suspended"),
    ];
    for (state, st) in table {
        assert_eq!(state.grant_status(), st);
    }
}

#[test]
fn grace_lasts_the_given_days_from_its_start() {
    let start = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
    assert_eq!(grace_ends_at(start, 7), start + Duration::days(7));
}

#[test]
fn an_older_stripe_snapshot_is_stale_and_an_equal_or_newer_one_is_not() {
    let newest = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 10).unwrap();
    assert!(is_stale(newest - Duration::seconds(1), Some(newest)));
    assert!(!is_stale(newest, Some(newest)));
    assert!(!is_stale(newest + Duration::seconds(1), Some(newest)));
    assert!(!is_stale(newest, None));
}
