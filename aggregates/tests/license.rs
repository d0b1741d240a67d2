//! DOMAIN.md §4, §5.1–5.3 and §7 — the self-hosted license, one rule per test.

mod support;

use aggregates::catalog::{BillingCycle, StripePlanSource};
use aggregates::error::DomainError;
use aggregates::ids::{Email, InstallationId, LicenseId, SecretHash};
use aggregates::license::{
    ActivateInstallation, ChangeSource, ChangeTiming, IssueLicense, License, LicenseCommand,
    LicenseEvent, LicenseOrigin, RevocationReason, ScheduledChange, StripeSnapshot,
    GRANT_LIFETIME_HOURS, MAX_INSTALLATIONS,
};
use aggregates::subscription::SubscriptionState;
use chrono::{DateTime, Duration, Utc};
use support::{at, given, t0, CATALOG};

const DAY: i64 = 86_400;

fn license_id() -> LicenseId {
    LicenseId::parse("lic_0000000001").unwrap()
}

fn hash(n: u8) -> SecretHash {
    SecretHash::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

fn inst(n: u64) -> InstallationId {
    InstallationId::from_entropy(n)
}

fn period_end() -> DateTime<Utc> {
    at(30 * DAY)
}

fn issued_as(plan: &str, cycle: BillingCycle, origin: LicenseOrigin) -> LicenseEvent {
    let grandfathered = CATALOG.plan(plan).unwrap().grandfathered;
    LicenseEvent::LicenseIssued {
        license_id: license_id(),
        owner_email: Email::parse("owner@example.com").unwrap(),
        plan_version: plan.to_owned(),
        billing_cycle: Some(cycle),
        state: SubscriptionState::Active,
        current_period_end: Some(period_end()),
        legacy_migration: matches!(origin, LicenseOrigin::LegacyExchange { .. }),
        grandfathered_continuity: grandfathered,
        origin,
        stripe_price_id: None,
        catalog_version: 1,
    }
}

fn issued(plan: &str, cycle: BillingCycle) -> LicenseEvent {
    issued_as(
        plan,
        cycle,
        LicenseOrigin::Checkout {
            session_id: String::from("cs_test_1"),
        },
    )
}

fn migrated() -> LicenseEvent {
    issued_as(
        "v5_pro_monthly_grandfathered",
        BillingCycle::Monthly,
        LicenseOrigin::LegacyExchange {
            legacy_license_id: String::from("v5-123"),
        },
    )
}

fn activated(n: u64, fingerprint: &str, token: u8) -> LicenseEvent {
    LicenseEvent::InstallationActivated {
        installation_id: inst(n),
        fingerprint: fingerprint.to_owned(),
        instance_name: format!("pulse-{n}"),
        token_hash: hash(token),
        client_version: String::from("6.0.0"),
        reactivation: false,
    }
}

fn activate(n: u64, fingerprint: &str, token: u8) -> LicenseCommand {
    LicenseCommand::ActivateInstallation(Box::new(ActivateInstallation {
        installation_id: inst(n),
        fingerprint: fingerprint.to_owned(),
        instance_name: format!("pulse-{n}"),
        token_hash: hash(token),
        client_version: String::from("6.0.0"),
    }))
}

fn change(plan: &str, cycle: BillingCycle) -> LicenseCommand {
    LicenseCommand::ChangePlan {
        plan_version: plan.to_owned(),
        billing_cycle: Some(cycle),
        reason: String::from("customer asked"),
        source: ChangeSource::Customer,
    }
}

fn state_changed(
    from: SubscriptionState,
    to: SubscriptionState,
    reason: &str,
    version: u64,
) -> LicenseEvent {
    LicenseEvent::SubscriptionStateChanged {
        from,
        to,
        reason: reason.to_owned(),
        license_version: version,
    }
}

fn snapshot(id: &str, created: DateTime<Utc>, status: &str) -> LicenseCommand {
    LicenseCommand::ApplyStripeSnapshot(Box::new(StripeSnapshot {
        stripe_event_id: id.to_owned(),
        created,
        status: status.to_owned(),
        current_period_end: Some(period_end()),
        plan_source: StripePlanSource::default(),
        billing_cycle: None,
    }))
}

fn grant(n: u64, token: u8) -> LicenseCommand {
    LicenseCommand::IssueGrant {
        installation_id: inst(n),
        token_hash: hash(token),
        jti: String::from("jti-1"),
    }
}

#[test]
fn issuing_a_license_records_it_and_its_activation_key() {
    let command = LicenseCommand::Issue(Box::new(IssueLicense {
        license_id: license_id(),
        owner_email: Email::parse("Owner@Example.com").unwrap(),
        plan_version: String::from(" Pro "),
        billing_cycle: Some(BillingCycle::Monthly),
        state: SubscriptionState::Active,
        current_period_end: Some(period_end()),
        origin: LicenseOrigin::Checkout {
            session_id: String::from("cs_test_1"),
        },
        stripe_price_id: None,
        activation_key_prefix: String::from("ppk_live_ABCD"),
        activation_key_hash: hash(9),
    }));
    let state = given::<License>(vec![]).when(command).then(vec![
        issued("pro", BillingCycle::Monthly),
        LicenseEvent::ActivationKeyIssued {
            key_prefix: String::from("ppk_live_ABCD"),
            key_hash: hash(9),
        },
    ]);
    let license = state.issued.unwrap();
    assert_eq!(
        (license.license_version, license.state),
        (1, SubscriptionState::Active)
    );
}

#[test]
fn a_license_is_issued_only_once() {
    let command = LicenseCommand::Issue(Box::new(IssueLicense {
        license_id: license_id(),
        owner_email: Email::parse("owner@example.com").unwrap(),
        plan_version: String::from("pro"),
        billing_cycle: None,
        state: SubscriptionState::Active,
        current_period_end: None,
        origin: LicenseOrigin::Checkout {
            session_id: String::from("cs_test_1"),
        },
        stripe_price_id: None,
        activation_key_prefix: String::from("ppk_live_ABCD"),
        activation_key_hash: hash(9),
    }));
    given::<License>(vec![issued("pro", BillingCycle::Monthly)])
        .when(command.clone())
        .then_err(DomainError::AlreadyExists { entity: "license" });
    let LicenseCommand::Issue(mut unknown) = command else {
        unreachable!()
    };
    unknown.plan_version = String::from("platinum");
    given::<License>(vec![])
        .when(LicenseCommand::Issue(unknown))
        .then_err(DomainError::UnknownPlan {
            plan: String::from("platinum"),
        });
}

#[test]
fn a_v5_exchange_license_is_a_legacy_migration_holding_its_grandfathered_price() {
    let license = given::<License>(vec![migrated()]).state().issued.unwrap();
    assert!(license.legacy_migration);
    assert!(license.grandfathered_continuity);
    assert!(license.continuity(&CATALOG).capture_pending);
}

#[test]
fn relay_to_pro_applies_at_once_and_bumps_the_license_version() {
    let state = given::<License>(vec![issued("relay", BillingCycle::Monthly)])
        .when(change("pro", BillingCycle::Monthly))
        .then(vec![LicenseEvent::PlanChanged {
            from_plan: String::from("relay"),
            to_plan: String::from("pro"),
            billing_cycle: Some(BillingCycle::Monthly),
            timing: ChangeTiming::Immediate,
            reason: String::from("customer asked"),
            source: ChangeSource::Customer,
            license_version: 2,
            catalog_version: 1,
        }]);
    assert_eq!(state.issued.unwrap().plan_version, "pro");
}

#[test]
fn monthly_to_annual_applies_at_once() {
    let events = given::<License>(vec![issued("cloud_power", BillingCycle::Monthly)])
        .when(change("cloud_power", BillingCycle::Annual))
        .result()
        .unwrap();
    assert!(matches!(
        &events[..],
        [LicenseEvent::PlanChanged {
            timing: ChangeTiming::Immediate,
            ..
        }]
    ));
}

fn scheduled(plan: &str, cycle: BillingCycle) -> LicenseEvent {
    LicenseEvent::ChangeScheduled {
        change: ScheduledChange::Plan {
            plan_version: plan.to_owned(),
            billing_cycle: Some(cycle),
            effective_at: period_end(),
        },
        reason: String::from("customer asked"),
        source: ChangeSource::Customer,
    }
}

#[test]
fn pro_to_relay_waits_for_the_period_end() {
    given::<License>(vec![issued("pro", BillingCycle::Monthly)])
        .when(change("relay", BillingCycle::Monthly))
        .then(vec![scheduled("relay", BillingCycle::Monthly)]);
}

#[test]
fn annual_to_monthly_waits_for_the_period_end() {
    given::<License>(vec![issued("cloud_max", BillingCycle::Annual)])
        .when(change("cloud_max", BillingCycle::Monthly))
        .then(vec![scheduled("cloud_max", BillingCycle::Monthly)]);
}

#[test]
fn an_upgrade_combined_with_annual_to_monthly_takes_the_most_restrictive_rule() {
    given::<License>(vec![issued("cloud_starter", BillingCycle::Annual)])
        .when(change("cloud_max", BillingCycle::Monthly))
        .then(vec![scheduled("cloud_max", BillingCycle::Monthly)]);
}

#[test]
fn a_scheduled_change_takes_effect_at_the_period_end_and_not_before() {
    let past = vec![
        issued("pro", BillingCycle::Monthly),
        scheduled("relay", BillingCycle::Monthly),
    ];
    given::<License>(past.clone())
        .at(period_end() - Duration::seconds(1))
        .when(LicenseCommand::ApplyScheduledChange)
        .then(vec![]);
    let state = given::<License>(past)
        .at(period_end())
        .when(LicenseCommand::ApplyScheduledChange)
        .then(vec![LicenseEvent::PlanChanged {
            from_plan: String::from("pro"),
            to_plan: String::from("relay"),
            billing_cycle: Some(BillingCycle::Monthly),
            timing: ChangeTiming::PeriodEnd,
            reason: String::from("scheduled change fell due"),
            source: ChangeSource::Schedule,
            license_version: 2,
            catalog_version: 1,
        }]);
    assert_eq!(state.issued.unwrap().scheduled_change, None);
}

#[test]
fn cancellation_applies_at_the_period_end() {
    let cancel = LicenseCommand::Cancel {
        source: ChangeSource::Customer,
    };
    let past = given::<License>(vec![issued("pro", BillingCycle::Monthly)])
        .when(cancel)
        .result()
        .unwrap();
    assert_eq!(
        past,
        vec![LicenseEvent::ChangeScheduled {
            change: ScheduledChange::Cancellation {
                effective_at: period_end()
            },
            reason: String::from("canceled at period end"),
            source: ChangeSource::Customer,
        }]
    );
    let mut history = vec![issued("pro", BillingCycle::Monthly)];
    history.extend(past);
    let state = given::<License>(history)
        .at(period_end())
        .when(LicenseCommand::ApplyScheduledChange)
        .then(vec![state_changed(
            SubscriptionState::Active,
            SubscriptionState::Canceled,
            "canceled at period end",
            2,
        )]);
    assert!(!state.issued.unwrap().state.grants_paid());
}

#[test]
fn cancelling_ends_grandfathered_continuity_for_good() {
    let events = given::<License>(vec![migrated()])
        .when(LicenseCommand::Cancel {
            source: ChangeSource::Customer,
        })
        .result()
        .unwrap();
    assert_eq!(
        events[0],
        LicenseEvent::GrandfatheredContinuityEnded {
            reason: String::from("subscription canceled")
        }
    );
}

#[test]
fn any_tier_or_cadence_change_ends_grandfathered_continuity_for_good() {
    let state = given::<License>(vec![migrated()])
        .when(change("pro", BillingCycle::Monthly))
        .then(vec![
            LicenseEvent::GrandfatheredContinuityEnded {
                reason: String::from("plan or cadence changed"),
            },
            LicenseEvent::PlanChanged {
                from_plan: String::from("v5_pro_monthly_grandfathered"),
                to_plan: String::from("pro"),
                billing_cycle: Some(BillingCycle::Monthly),
                timing: ChangeTiming::Immediate,
                reason: String::from("customer asked"),
                source: ChangeSource::Customer,
                license_version: 2,
                catalog_version: 1,
            },
        ]);
    assert!(!state.issued.unwrap().grandfathered_continuity);
}

#[test]
fn a_grandfathered_plan_cannot_be_chosen_again() {
    given::<License>(vec![issued("pro", BillingCycle::Monthly)])
        .when(change(
            "v5_pro_monthly_grandfathered",
            BillingCycle::Monthly,
        ))
        .then_err(DomainError::PlanNotPurchasable {
            plan: String::from("v5_pro_monthly_grandfathered"),
        });
}

#[test]
fn a_past_due_snapshot_moves_active_to_grace_and_starts_grace() {
    let events = given::<License>(vec![issued("pro", BillingCycle::Monthly)])
        .at(at(100))
        .when(snapshot("evt_1", at(90), "past_due"))
        .result()
        .unwrap();
    assert!(
        matches!(&events[0], LicenseEvent::StripeSnapshotApplied { stripe_event_id, .. } if stripe_event_id == "evt_1")
    );
    assert_eq!(
        events[1],
        state_changed(
            SubscriptionState::Active,
            SubscriptionState::Grace,
            "stripe subscription status",
            2
        )
    );
    assert_eq!(events[2], LicenseEvent::GraceStarted { at: at(100) });
}

#[test]
fn an_older_snapshot_after_a_newer_one_changes_nothing() {
    let newer = given::<License>(vec![issued("pro", BillingCycle::Monthly)])
        .when(snapshot("evt_new", at(200), "past_due"))
        .result()
        .unwrap();
    let mut history = vec![issued("pro", BillingCycle::Monthly)];
    history.extend(newer);
    given::<License>(history)
        .when(snapshot("evt_old", at(100), "active"))
        .then(vec![LicenseEvent::StripeEventIgnored {
            stripe_event_id: String::from("evt_old"),
            reason: String::from("older than the newest snapshot applied"),
        }]);
}

#[test]
fn a_snapshot_that_would_break_the_transition_table_is_recorded_as_ignored() {
    let history = vec![
        issued("pro", BillingCycle::Monthly),
        state_changed(
            SubscriptionState::Active,
            SubscriptionState::Canceled,
            "canceled",
            2,
        ),
    ];
    given::<License>(history)
        .when(snapshot("evt_2", at(10), "active"))
        .then(vec![LicenseEvent::StripeEventIgnored {
            stripe_event_id: String::from("evt_2"),
            reason: String::from("canceled cannot become active"),
        }]);
}

#[test]
fn a_snapshot_with_a_new_price_changes_the_plan_and_ends_continuity() {
    let command = LicenseCommand::ApplyStripeSnapshot(Box::new(StripeSnapshot {
        stripe_event_id: String::from("evt_3"),
        created: at(10),
        status: String::from("active"),
        current_period_end: Some(period_end()),
        plan_source: StripePlanSource {
            price_id: Some(String::from("price_1TPmE6BrHBocJIGHHaPwluoM")),
            ..Default::default()
        },
        billing_cycle: Some(BillingCycle::Monthly),
    }));
    let state = given::<License>(vec![migrated()])
        .when(command)
        .result()
        .unwrap()
        .into_iter()
        .fold(
            given::<License>(vec![migrated()]).state(),
            |state, event| <License as aggregates::decider::Decider>::evolve(state, &event),
        );
    let license = state.issued.unwrap();
    assert_eq!(license.plan_version, "pro");
    assert!(!license.grandfathered_continuity);
    assert_eq!(license.license_version, 2);
}

#[test]
fn a_failed_payment_moves_active_to_grace() {
    given::<License>(vec![issued("pro", BillingCycle::Monthly)])
        .at(at(50))
        .when(LicenseCommand::RecordPaymentFailed {
            stripe_event_id: String::from("evt_f"),
        })
        .then(vec![
            LicenseEvent::PaymentFailed {
                stripe_event_id: String::from("evt_f"),
            },
            state_changed(
                SubscriptionState::Active,
                SubscriptionState::Grace,
                "payment failed",
                2,
            ),
            LicenseEvent::GraceStarted { at: at(50) },
        ]);
}

#[test]
fn self_hosted_grace_lasts_seven_days_then_expires() {
    let history = vec![
        issued("pro", BillingCycle::Monthly),
        state_changed(
            SubscriptionState::Active,
            SubscriptionState::Grace,
            "payment failed",
            2,
        ),
        LicenseEvent::GraceStarted { at: t0() },
    ];
    given::<License>(history.clone())
        .at(at(7 * DAY - 1))
        .when(LicenseCommand::ExpireGrace)
        .then(vec![]);
    let state = given::<License>(history)
        .at(at(7 * DAY))
        .when(LicenseCommand::ExpireGrace)
        .then(vec![
            state_changed(
                SubscriptionState::Grace,
                SubscriptionState::Expired,
                "grace ended unpaid",
                3,
            ),
            LicenseEvent::GraceEnded { at: at(7 * DAY) },
        ]);
    assert_eq!(
        state.issued.unwrap().grace_started_at,
        None,
        "grace_started_at is cleared on leaving grace"
    );
}

#[test]
fn a_payment_in_grace_returns_to_active_and_ends_grace() {
    let history = vec![
        issued("pro", BillingCycle::Monthly),
        state_changed(
            SubscriptionState::Active,
            SubscriptionState::Grace,
            "payment failed",
            2,
        ),
        LicenseEvent::GraceStarted { at: t0() },
    ];
    given::<License>(history)
        .at(at(60))
        .when(LicenseCommand::RecordPaymentSucceeded {
            stripe_event_id: String::from("evt_p"),
            current_period_end: Some(at(60 * DAY)),
            payment: None,
        })
        .then(vec![
            LicenseEvent::PaymentSucceeded {
                stripe_event_id: String::from("evt_p"),
                current_period_end: Some(at(60 * DAY)),
                payment: None,
            },
            state_changed(
                SubscriptionState::Grace,
                SubscriptionState::Active,
                "payment succeeded",
                3,
            ),
            LicenseEvent::GraceEnded { at: at(60) },
        ]);
}

#[test]
fn a_refund_or_dispute_revokes_the_license_at_once() {
    for reason in [RevocationReason::Refund, RevocationReason::Dispute] {
        given::<License>(vec![issued("pro", BillingCycle::Monthly)])
            .when(LicenseCommand::Revoke {
                reason,
                reference: String::from("ch_1"),
            })
            .then(vec![LicenseEvent::LicenseRevoked {
                reason,
                reference: String::from("ch_1"),
                license_version: 2,
            }]);
    }
}

fn revoked() -> Vec<LicenseEvent> {
    vec![
        issued("pro", BillingCycle::Monthly),
        activated(1, "fp-a", 1),
        LicenseEvent::LicenseRevoked {
            reason: RevocationReason::Refund,
            reference: String::from("re_1"),
            license_version: 2,
        },
    ]
}

#[test]
fn a_revoked_license_refuses_grants_activations_and_changes() {
    given::<License>(revoked())
        .when(grant(1, 1))
        .then_err(DomainError::LicenseRevoked);
    given::<License>(revoked())
        .when(activate(2, "fp-b", 2))
        .then_err(DomainError::LicenseRevoked);
    given::<License>(revoked())
        .when(change("relay", BillingCycle::Monthly))
        .then_err(DomainError::LicenseRevoked);
}

#[test]
fn stripe_events_about_a_revoked_license_are_recorded_as_ignored() {
    given::<License>(revoked())
        .when(LicenseCommand::RecordPaymentFailed {
            stripe_event_id: String::from("evt_x"),
        })
        .then(vec![LicenseEvent::StripeEventIgnored {
            stripe_event_id: String::from("evt_x"),
            reason: String::from("the license is revoked"),
        }]);
}

fn three_installations() -> Vec<LicenseEvent> {
    vec![
        issued("pro", BillingCycle::Monthly),
        activated(1, "fp-a", 1),
        activated(2, "fp-b", 2),
        activated(3, "fp-c", 3),
    ]
}

#[test]
fn a_fourth_fingerprint_gets_max_installations() {
    assert_eq!(MAX_INSTALLATIONS, 3);
    given::<License>(three_installations())
        .when(activate(4, "fp-d", 4))
        .then_err(DomainError::MaxInstallations {
            current: 3,
            limit: 3,
        });
}

#[test]
fn the_same_fingerprint_reactivates_its_installation_with_a_new_token() {
    let state = given::<License>(three_installations())
        .when(activate(9, "fp-b", 7))
        .then(vec![LicenseEvent::InstallationActivated {
            installation_id: inst(2),
            fingerprint: String::from("fp-b"),
            instance_name: String::from("pulse-9"),
            token_hash: hash(7),
            client_version: String::from("6.0.0"),
            reactivation: true,
        }]);
    assert_eq!(state.issued.unwrap().active_installations(), 3);
}

#[test]
fn the_old_token_of_a_reactivated_installation_is_revoked() {
    let mut history = three_installations();
    history.push(LicenseEvent::InstallationActivated {
        installation_id: inst(2),
        fingerprint: String::from("fp-b"),
        instance_name: String::from("pulse-2"),
        token_hash: hash(7),
        client_version: String::from("6.0.0"),
        reactivation: true,
    });
    given::<License>(history.clone())
        .when(grant(2, 2))
        .then_err(DomainError::TokenRevoked);
    assert!(given::<License>(history).when(grant(2, 7)).result().is_ok());
}

#[test]
fn a_deactivated_installation_is_revoked_and_frees_its_place() {
    let mut history = three_installations();
    history.push(LicenseEvent::InstallationDeactivated {
        installation_id: inst(1),
    });
    given::<License>(history.clone())
        .when(grant(1, 1))
        .then_err(DomainError::InstallationRevoked);
    given::<License>(history.clone())
        .when(grant(8, 1))
        .then_err(DomainError::InstallationRevoked);
    assert!(given::<License>(history)
        .when(activate(4, "fp-d", 4))
        .result()
        .is_ok());
}

#[test]
fn a_suspended_license_answers_license_suspended() {
    let history = vec![
        issued("pro", BillingCycle::Monthly),
        activated(1, "fp-a", 1),
        state_changed(
            SubscriptionState::Active,
            SubscriptionState::Suspended,
            "paused",
            2,
        ),
    ];
    given::<License>(history.clone())
        .when(grant(1, 1))
        .then_err(DomainError::LicenseSuspended);
    given::<License>(history)
        .when(activate(2, "fp-b", 2))
        .then_err(DomainError::LicenseSuspended);
}

#[test]
fn a_grant_carries_the_claims_computed_from_the_license() {
    let history = vec![
        migrated(),
        activated(1, "fp-a", 1),
        LicenseEvent::ContinuityCaptured {
            reported_monitored_systems: 24,
            plan_limit: 10,
            grandfathered_floor: Some(24),
            captured_at: t0(),
        },
        state_changed(
            SubscriptionState::Active,
            SubscriptionState::Grace,
            "payment failed",
            2,
        ),
        LicenseEvent::GraceStarted { at: t0() },
    ];
    let events = given::<License>(history)
        .at(at(60))
        .when(grant(1, 1))
        .result()
        .unwrap();
    let [LicenseEvent::GrantIssued { claims }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(claims.lid, "lic_0000000001");
    assert_eq!(claims.iid, inst(1).to_string());
    assert_eq!(claims.lv, 2);
    assert_eq!(claims.st, "grace");
    assert_eq!(
        (claims.tier.as_str(), claims.plan.as_str()),
        ("pro", "v5_pro_monthly_grandfathered")
    );
    assert!(claims.feat.contains(&String::from("rbac")));
    assert_eq!(
        claims.max_monitored_systems, 24,
        "the effective limit, after the floor"
    );
    assert_eq!(
        claims.exp,
        (at(60) + Duration::hours(GRANT_LIFETIME_HOURS)).timestamp()
    );
    assert_eq!(
        claims.grace_until,
        Some((t0() + Duration::days(7)).timestamp())
    );
    assert_eq!(claims.current_period_end, Some(period_end().timestamp()));
    assert_eq!(
        (claims.jti.as_str(), claims.email.as_str()),
        ("jti-1", "owner@example.com")
    );
}

#[test]
fn an_expired_license_still_gets_a_grant_saying_suspended_with_no_capabilities() {
    let history = vec![
        issued("pro", BillingCycle::Monthly),
        activated(1, "fp-a", 1),
        state_changed(
            SubscriptionState::Active,
            SubscriptionState::Canceled,
            "canceled",
            2,
        ),
    ];
    let events = given::<License>(history)
        .when(grant(1, 1))
        .result()
        .unwrap();
    let [LicenseEvent::GrantIssued { claims }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(claims.st, "suspended");
    assert!(claims.feat.is_empty());
}

fn floor(reported: u32) -> LicenseCommand {
    LicenseCommand::CaptureFloor {
        monitored_systems: reported,
    }
}

#[test]
fn the_floor_applies_only_to_licenses_migrated_from_v5() {
    given::<License>(vec![issued("pro", BillingCycle::Monthly)])
        .when(floor(40))
        .then_err(DomainError::FloorNotApplicable);
}

#[test]
fn a_count_above_the_plan_limit_is_captured_as_the_floor_and_raises_the_limit() {
    let state = given::<License>(vec![migrated()])
        .at(at(5))
        .when(floor(24))
        .then(vec![LicenseEvent::ContinuityCaptured {
            reported_monitored_systems: 24,
            plan_limit: 10,
            grandfathered_floor: Some(24),
            captured_at: at(5),
        }]);
    let report = state.issued.unwrap().continuity(&CATALOG);
    assert_eq!(
        (
            report.plan_limit,
            report.grandfathered_floor,
            report.effective_limit
        ),
        (10, Some(24), 24)
    );
    assert!(!report.capture_pending);
    assert_eq!(report.captured_at, Some(at(5)));
}

#[test]
fn a_count_at_or_below_the_plan_limit_captures_no_floor() {
    let state = given::<License>(vec![migrated()])
        .when(floor(10))
        .then(vec![LicenseEvent::ContinuityCaptured {
            reported_monitored_systems: 10,
            plan_limit: 10,
            grandfathered_floor: None,
            captured_at: t0(),
        }]);
    let report = state.issued.unwrap().continuity(&CATALOG);
    assert_eq!(
        (
            report.grandfathered_floor,
            report.effective_limit,
            report.capture_pending
        ),
        (None, 10, false)
    );
}

#[test]
fn a_later_report_never_changes_a_captured_floor() {
    let history = vec![
        migrated(),
        LicenseEvent::ContinuityCaptured {
            reported_monitored_systems: 24,
            plan_limit: 10,
            grandfathered_floor: Some(24),
            captured_at: t0(),
        },
    ];
    given::<License>(history.clone())
        .when(floor(80))
        .then(vec![]);
    given::<License>(history).when(floor(3)).then(vec![]);
}

#[test]
fn the_floor_never_lowers_a_higher_plan_limit() {
    let history = vec![
        migrated(),
        LicenseEvent::ContinuityCaptured {
            reported_monitored_systems: 12,
            plan_limit: 10,
            grandfathered_floor: Some(12),
            captured_at: t0(),
        },
        LicenseEvent::PlanChanged {
            from_plan: String::from("v5_pro_monthly_grandfathered"),
            to_plan: String::from("msp_starter"),
            billing_cycle: Some(BillingCycle::Monthly),
            timing: ChangeTiming::Immediate,
            reason: String::from("support"),
            source: ChangeSource::Support,
            license_version: 2,
            catalog_version: 1,
        },
    ];
    let report = given::<License>(history)
        .state()
        .issued
        .unwrap()
        .continuity(&CATALOG);
    assert_eq!((report.plan_limit, report.effective_limit), (50, 50));
}

#[test]
fn paid_state_persists_the_catalog_limit_and_revoked_or_lapsed_state_clears_it() {
    let active = given::<License>(vec![issued("cloud_power", BillingCycle::Monthly)])
        .state()
        .issued
        .unwrap();
    assert_eq!(active.paid_limit(&CATALOG), Some(30));
    let revoked = given::<License>(revoked()).state().issued.unwrap();
    assert_eq!(revoked.paid_limit(&CATALOG), None);
    let lapsed = given::<License>(vec![
        issued("pro", BillingCycle::Monthly),
        state_changed(
            SubscriptionState::Active,
            SubscriptionState::Canceled,
            "canceled",
            2,
        ),
    ])
    .state()
    .issued
    .unwrap();
    assert_eq!(lapsed.paid_limit(&CATALOG), None);
}
