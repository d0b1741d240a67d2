//! PORTAL.md §3 — hosted signup: only Cloud plans and MSP Starter are self-serve; a signup is
//! recorded once and completes once.

mod support;

use aggregates::catalog::BillingCycle;
use aggregates::decider::Context;
use aggregates::error::DomainError;
use aggregates::ids::{AccountId, Email};
use aggregates::signup::{price_signup, PricedSignup, Signup, SignupCommand, SignupEvent};
use support::{given, t0, CATALOG};

fn context() -> Context<'static> {
    Context::new(t0(), &CATALOG)
}

fn priced() -> PricedSignup {
    price_signup("cloud_power", BillingCycle::Monthly, &context()).unwrap()
}

#[test]
fn cloud_plans_and_msp_starter_are_self_serve() {
    let power = priced();
    assert_eq!(power.tier, "cloud");
    assert_eq!(power.price_id, "price_1T5kg2BrHBocJIGHmkoF0zXY");
    let starter = price_signup("msp-starter", BillingCycle::Annual, &context()).unwrap();
    assert_eq!(starter.plan_key, "msp_starter", "aliases are canonicalised");
    assert_eq!(starter.price_id, "price_1T5kgUBrHBocJIGHT6PiOn6x");
}

#[test]
fn larger_msp_plans_self_hosted_and_grandfathered_plans_are_not_self_serve() {
    for plan in [
        "msp_growth",
        "msp_scale",
        "pro",
        "v5_pro_monthly_grandfathered",
    ] {
        assert!(
            matches!(
                price_signup(plan, BillingCycle::Monthly, &context()),
                Err(DomainError::PlanNotPurchasable { .. })
            ),
            "{plan}"
        );
    }
    assert_eq!(
        price_signup("gold", BillingCycle::Monthly, &context()),
        Err(DomainError::UnknownPlan {
            plan: String::from("gold")
        })
    );
}

fn start() -> SignupCommand {
    SignupCommand::Start {
        email: Email::parse("founder@new.example").unwrap(),
        org_name: String::from("  New Co "),
        priced: priced(),
    }
}

fn started() -> SignupEvent {
    SignupEvent::SignupStarted {
        email: Email::parse("founder@new.example").unwrap(),
        org_name: String::from("New Co"),
        priced: priced(),
        at: t0(),
    }
}

#[test]
fn a_signup_is_recorded_once() {
    given::<Signup>(vec![]).when(start()).then(vec![started()]);
    given::<Signup>(vec![started()])
        .when(start())
        .then_err(DomainError::AlreadyExists { entity: "signup" });
}

#[test]
fn a_signup_completes_once_with_its_account() {
    let completed = SignupEvent::SignupCompleted {
        account_id: AccountId::from_entropy(1),
        at: t0(),
    };
    let complete = |n| SignupCommand::Complete {
        account_id: AccountId::from_entropy(n),
    };
    given::<Signup>(vec![started()])
        .when(complete(1))
        .then(vec![completed.clone()]);
    given::<Signup>(vec![started(), completed])
        .when(complete(2))
        .then(vec![]);
    given::<Signup>(vec![])
        .when(complete(1))
        .then_err(DomainError::NotFound { entity: "signup" });
}
