//! DOMAIN.md §6.1–6.5 — the purchase handoff and its checkout intent.

mod support;

use aggregates::catalog::BillingCycle;
use aggregates::error::DomainError;
use aggregates::handoff::{
    CheckoutIntent, HandoffCommand, HandoffEvent, HandoffStatus, PurchaseHandoff, StartedCheckout,
    HANDOFF_TTL_SECONDS,
};
use aggregates::ids::{HandoffId, IntentId, LicenseId};
use support::{at, given, t0};

fn handoff_id() -> HandoffId {
    HandoffId::parse("cph_0000000001").unwrap()
}

fn create(feature: &str, success_url: &str) -> HandoffCommand {
    HandoffCommand::Create {
        handoff_id: handoff_id(),
        intent_id: IntentId::parse("cki_0000000001").unwrap(),
        feature: feature.to_owned(),
        success_url: success_url.to_owned(),
        cancel_url: String::from("https://pulse.example.com/settings"),
        purchase_return_jti: String::from("jti-abc"),
    }
}

const SUCCESS: &str = "https://pulse.example.com/auth/license-purchase-activate";

fn created() -> HandoffEvent {
    HandoffEvent::HandoffCreated {
        handoff_id: handoff_id(),
        intent: CheckoutIntent {
            intent_id: IntentId::parse("cki_0000000001").unwrap(),
            feature: String::from("self_hosted_plan"),
            success_url: String::from(SUCCESS),
            cancel_url: String::from("https://pulse.example.com/settings"),
            purchase_return_jti: String::from("jti-abc"),
        },
        created_at: t0(),
        expires_at: at(HANDOFF_TTL_SECONDS),
    }
}

fn checkout(plan: &str, tier: &str, cycle: BillingCycle, session: &str) -> StartedCheckout {
    StartedCheckout {
        session_id: session.to_owned(),
        plan_key: plan.to_owned(),
        tier: tier.to_owned(),
        billing_cycle: cycle,
        price_id: String::new(),
        trial: false,
        url: None,
    }
}

fn started(session: &str) -> HandoffEvent {
    HandoffEvent::CheckoutStarted(StartedCheckout {
        session_id: session.to_owned(),
        plan_key: String::from("pro"),
        tier: String::from("pro"),
        billing_cycle: BillingCycle::Monthly,
        price_id: String::from("price_1TPmE6BrHBocJIGHHaPwluoM"),
        trial: false,
        url: None,
    })
}

#[test]
fn max_monitored_systems_normalises_to_self_hosted_plan_and_the_handoff_lives_one_hour() {
    given::<PurchaseHandoff>(vec![])
        .when(create("max_monitored_systems", SUCCESS))
        .then(vec![created()]);
}

#[test]
fn a_capability_is_a_valid_feature_and_anything_else_is_refused() {
    assert!(given::<PurchaseHandoff>(vec![])
        .when(create("relay", SUCCESS))
        .result()
        .is_ok());
    let refused = given::<PurchaseHandoff>(vec![])
        .when(create("demo_fixtures", SUCCESS))
        .result()
        .unwrap_err();
    assert_eq!(refused.code(), "invalid_request");
}

#[test]
fn the_success_url_must_be_absolute_https_with_the_activation_path() {
    let refused = [
        "/auth/license-purchase-activate",
        "http://pulse.example.com/auth/license-purchase-activate",
        "https://pulse.example.com/auth/other",
        "https://user:pw@pulse.example.com/auth/license-purchase-activate",
        "ftp://pulse.example.com/auth/license-purchase-activate",
    ];
    for url in refused {
        let error = given::<PurchaseHandoff>(vec![])
            .when(create("relay", url))
            .result()
            .unwrap_err();
        assert!(
            matches!(
                error,
                DomainError::InvalidInput {
                    field: "success_url",
                    ..
                }
            ),
            "{url}: {error:?}"
        );
    }
}

#[test]
fn http_is_accepted_only_for_a_loopback_host() {
    for url in [
        "http://localhost:7655/auth/license-purchase-activate",
        "http://127.0.0.1:7655/auth/license-purchase-activate",
        "http://[::1]:7655/auth/license-purchase-activate",
    ] {
        assert!(
            given::<PurchaseHandoff>(vec![])
                .when(create("relay", url))
                .result()
                .is_ok(),
            "{url}"
        );
    }
    assert!(given::<PurchaseHandoff>(vec![])
        .when(create(
            "relay",
            "http://10.0.0.1/auth/license-purchase-activate"
        ))
        .result()
        .is_err());
}

#[test]
fn the_first_lookup_stamps_resolved_at_once() {
    let state = given::<PurchaseHandoff>(vec![created()])
        .at(at(10))
        .when(HandoffCommand::Resolve)
        .then(vec![HandoffEvent::HandoffResolved {
            resolved_at: at(10),
        }]);
    assert_eq!(
        state.handoff.unwrap().status(at(11)),
        HandoffStatus::Resolved
    );
    given::<PurchaseHandoff>(vec![
        created(),
        HandoffEvent::HandoffResolved {
            resolved_at: at(10),
        },
    ])
    .at(at(20))
    .when(HandoffCommand::Resolve)
    .then(vec![]);
}

#[test]
fn the_browser_view_never_reveals_the_intent_id_the_jti_or_the_urls() {
    let state = given::<PurchaseHandoff>(vec![created()]).state();
    let view = serde_json::to_value(state.handoff.unwrap().browser_view(at(5))).unwrap();
    assert_eq!(
        view.as_object().unwrap().keys().collect::<Vec<_>>(),
        [
            "expires_at",
            "feature",
            "portal_handoff_id",
            "resolved_at",
            "status"
        ]
    );
    let text = view.to_string();
    for secret in ["cki_0000000001", "jti-abc", "pulse.example.com"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

#[test]
fn a_handoff_expires_after_its_hour() {
    let handoff = given::<PurchaseHandoff>(vec![created()])
        .state()
        .handoff
        .unwrap();
    assert_eq!(
        handoff.status(at(HANDOFF_TTL_SECONDS - 1)),
        HandoffStatus::Created
    );
    assert_eq!(
        handoff.status(at(HANDOFF_TTL_SECONDS)),
        HandoffStatus::Expired
    );
    given::<PurchaseHandoff>(vec![created()])
        .at(at(HANDOFF_TTL_SECONDS))
        .when(HandoffCommand::Resolve)
        .then(vec![]);
}

#[test]
fn starting_checkout_resolves_the_price_and_moves_to_checkout_started() {
    let state = given::<PurchaseHandoff>(vec![created()])
        .when(HandoffCommand::StartCheckout(checkout(
            " PRO ",
            "pro",
            BillingCycle::Monthly,
            "cs_test_1",
        )))
        .then(vec![started("cs_test_1")]);
    assert_eq!(
        state.handoff.unwrap().status(at(1)),
        HandoffStatus::CheckoutStarted
    );
}

#[test]
fn an_expired_handoff_cannot_start_checkout() {
    given::<PurchaseHandoff>(vec![created()])
        .at(at(HANDOFF_TTL_SECONDS))
        .when(HandoffCommand::StartCheckout(checkout(
            "pro",
            "pro",
            BillingCycle::Monthly,
            "cs_test_1",
        )))
        .then_err(DomainError::HandoffExpired);
}

fn completed() -> HandoffEvent {
    HandoffEvent::CheckoutCompleted {
        session_id: String::from("cs_test_1"),
        license_id: Some(LicenseId::parse("lic_0000000001").unwrap()),
        account_id: None,
        completed_at: at(100),
    }
}

#[test]
fn a_completed_handoff_cannot_start_checkout() {
    given::<PurchaseHandoff>(vec![created(), started("cs_test_1"), completed()])
        .when(HandoffCommand::StartCheckout(checkout(
            "pro",
            "pro",
            BillingCycle::Monthly,
            "cs_test_2",
        )))
        .then_err(DomainError::HandoffCompleted);
}

#[test]
fn checkout_refuses_grandfathered_and_continuity_only_plans() {
    for (plan, tier) in [
        ("v5_pro_monthly_grandfathered", "pro"),
        ("pro_plus", "pro_plus"),
    ] {
        given::<PurchaseHandoff>(vec![created()])
            .when(HandoffCommand::StartCheckout(checkout(
                plan,
                tier,
                BillingCycle::Monthly,
                "cs_test_1",
            )))
            .then_err(DomainError::PlanNotPurchasable {
                plan: plan.to_owned(),
            });
    }
}

#[test]
fn checkout_refuses_an_unknown_plan_a_wrong_tier_and_a_missing_price() {
    let start = |plan: &str, tier: &str, cycle| {
        given::<PurchaseHandoff>(vec![created()])
            .when(HandoffCommand::StartCheckout(checkout(
                plan, tier, cycle, "cs_1",
            )))
            .result()
    };
    assert_eq!(
        start("platinum", "pro", BillingCycle::Monthly).unwrap_err(),
        DomainError::UnknownPlan {
            plan: String::from("platinum")
        }
    );
    assert!(matches!(
        start("pro", "relay", BillingCycle::Monthly).unwrap_err(),
        DomainError::InvalidInput { field: "tier", .. }
    ));
    assert!(matches!(
        start("pro", "pro", BillingCycle::Annual).unwrap_err(),
        DomainError::InvalidInput {
            field: "billing_cycle",
            ..
        }
    ));
}

#[test]
fn stripe_completion_completes_the_handoff_once() {
    let state = given::<PurchaseHandoff>(vec![created(), started("cs_test_1")])
        .at(at(100))
        .when(HandoffCommand::Complete {
            session_id: String::from("cs_test_1"),
            license_id: Some(LicenseId::parse("lic_0000000001").unwrap()),
            account_id: None,
        })
        .then(vec![completed()]);
    assert_eq!(
        state.handoff.unwrap().status(at(HANDOFF_TTL_SECONDS * 5)),
        HandoffStatus::Completed
    );
    given::<PurchaseHandoff>(vec![created(), started("cs_test_1"), completed()])
        .when(HandoffCommand::Complete {
            session_id: String::from("cs_test_1"),
            license_id: None,
            account_id: None,
        })
        .then(vec![]);
}

#[test]
fn a_payment_completing_after_the_hour_still_completes_the_handoff() {
    assert!(
        given::<PurchaseHandoff>(vec![created(), started("cs_test_1")])
            .at(at(HANDOFF_TTL_SECONDS * 3))
            .when(HandoffCommand::Complete {
                session_id: String::from("cs_test_1"),
                license_id: None,
                account_id: None,
            })
            .result()
            .is_ok()
    );
}

#[test]
fn completion_by_a_session_this_handoff_never_started_is_refused() {
    given::<PurchaseHandoff>(vec![created(), started("cs_test_1")])
        .when(HandoffCommand::Complete {
            session_id: String::from("cs_other"),
            license_id: None,
            account_id: None,
        })
        .then_err(DomainError::UnknownCheckoutSession);
}

#[test]
fn a_handoff_offers_the_self_hosted_plans_checkout_sells_at_each_priced_cadence_cheapest_first() {
    let catalog = aggregates::catalog::Catalog::v1();
    let offered: Vec<(String, BillingCycle, i64)> = aggregates::handoff::offers(&catalog)
        .into_iter()
        .map(|o| (o.plan_key, o.billing_cycle, o.price.amount_minor))
        .collect();
    assert_eq!(
        offered,
        vec![
            (String::from("relay"), BillingCycle::Monthly, 499),
            (String::from("pro"), BillingCycle::Monthly, 899),
        ],
        "no hosted plan, no grandfathered or continuity-only plan, no plan without a price"
    );
}
