//! Rules that fall due with time alone, applied by the lifecycle sweep on both stores: a workspace
//! provisioning for 15 minutes fails; an unpaid hosted grace of 14 days cancels the subscription
//! and its workspaces; an unpaid self-hosted grace of 7 days expires the license; a cancellation
//! scheduled for the period end applies then. Each applies once, never early.

use crate::helpers::{metadata, Backend, TestApp};
use crate::hosted::bought_msp;
use aggregates::account::{AccountCommand, OpenAccount};
use aggregates::catalog::{BillingCycle, Catalog};
use aggregates::ids::{AccountId, Email};
use aggregates::license::{ChangeSource, IssuedLicense, License, LicenseCommand, LicenseOrigin};
use aggregates::log::Position;
use aggregates::subscription::SubscriptionState;
use chrono::{Duration, Utc};
use pulse_account::engine::projection::wait_for_position;
use pulse_account::flows::licensing::{Licensing, NewLicense};
use pulse_account::flows::lifecycle::{sweep, SweepReport};

crate::on_both_stores!(
    a_stuck_workspace_fails_and_an_unpaid_hosted_grace_cancels_the_account,
    an_unpaid_license_expires_after_its_grace_and_a_scheduled_cancellation_applies_at_period_end,
);

/// Sweeps at `now` once the read models the sweep pages through hold the whole log.
async fn swept(app: &TestApp, now: chrono::DateTime<Utc>) -> SweepReport {
    let head = Position(app.db.max_position().await);
    for projection in ["licenses", "accounts"] {
        assert!(wait_for_position(
            app.state.store.as_ref(),
            projection,
            head,
            std::time::Duration::from_secs(10)
        )
        .await
        .unwrap());
    }
    sweep(app.state.store.as_ref(), &Catalog::v1(), now)
        .await
        .unwrap()
}

async fn account(app: &TestApp, account_id: &str) -> OpenAccount {
    let stream = aggregates::log::StreamName::parse("account", account_id).unwrap();
    pulse_account::engine::command::load::<aggregates::account::Account>(
        app.state.store.as_ref(),
        &stream,
    )
    .await
    .unwrap()
    .0
    .account
    .unwrap()
}

async fn license(app: &TestApp, license_id: &str) -> IssuedLicense {
    let stream = aggregates::log::StreamName::parse("license", license_id).unwrap();
    pulse_account::engine::command::load::<License>(app.state.store.as_ref(), &stream)
        .await
        .unwrap()
        .0
        .issued
        .unwrap()
}

async fn a_stuck_workspace_fails_and_an_unpaid_hosted_grace_cancels_the_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (account_id, tenant_id) = bought_msp(&app).await;
    let now = Utc::now();

    let early = swept(&app, now + Duration::minutes(14)).await;
    assert_eq!(
        (early.applied, early.failed),
        (0, 0),
        "14 minutes is not stuck yet"
    );
    let due = swept(&app, now + Duration::minutes(16)).await;
    assert_eq!((due.applied, due.failed), (1, 0));
    assert_eq!(
        account(&app, &account_id).await.tenants[&tenant_id]
            .state
            .as_str(),
        "failed"
    );
    let again = swept(&app, now + Duration::minutes(17)).await;
    assert_eq!(again.applied, 0, "a rule applies once");

    let id = AccountId::parse(&account_id).unwrap();
    app.account_command(
        &id,
        AccountCommand::RecordBilling {
            plan_version: String::from("msp_growth"),
            state: SubscriptionState::Grace,
        },
    )
    .await;
    let in_grace = swept(&app, Utc::now() + Duration::days(13)).await;
    assert_eq!(
        in_grace.applied, 0,
        "13 days of hosted grace is still grace"
    );
    let ended = swept(&app, Utc::now() + Duration::days(14) + Duration::minutes(1)).await;
    assert_eq!(ended.applied, 1);
    let canceled = account(&app, &account_id).await;
    assert_eq!(canceled.billing.unwrap().state, SubscriptionState::Canceled);
    assert_eq!(
        canceled.tenants[&tenant_id].state.as_str(),
        "failed",
        "a failed workspace stays failed"
    );
    let actors: Vec<String> = app
        .all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "tenant_state_changed" || e.event_type == "billing_recorded")
        .map(|e| e.metadata.actor.clone())
        .collect();
    assert!(
        actors.contains(&String::from("system:lifecycle")),
        "{actors:?}"
    );
    app.stop().await;
}

async fn an_unpaid_license_expires_after_its_grace_and_a_scheduled_cancellation_applies_at_period_end(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let licensing = Licensing {
        store: app.state.store.as_ref(),
        bindings: &app.state.token_bindings,
        cache: None,
        keys: &app.state.keys,
        catalog: &app.state.catalog,
    };
    let new_license = |n: &str| NewLicense {
        owner_email: Email::parse("owner@example.com").unwrap(),
        plan_version: String::from("pro"),
        billing_cycle: Some(BillingCycle::Monthly),
        current_period_end: Some(Utc::now() + Duration::days(30)),
        origin: LicenseOrigin::Checkout {
            session_id: format!("cs_{n}"),
        },
        stripe_price_id: None,
    };
    let unpaid = licensing
        .issue(new_license("a"), metadata(), None)
        .await
        .unwrap();
    let canceling = licensing
        .issue(new_license("b"), metadata(), None)
        .await
        .unwrap();
    let unpaid_id = unpaid.license_id.to_string();
    let canceling_id = canceling.license_id.to_string();
    app.command::<License>(
        &unpaid_id,
        LicenseCommand::RecordPaymentFailed {
            stripe_event_id: String::from("evt_failed"),
        },
    )
    .await;
    app.command::<License>(
        &canceling_id,
        LicenseCommand::Cancel {
            source: ChangeSource::Customer,
        },
    )
    .await;

    let week = swept(&app, Utc::now() + Duration::days(6)).await;
    assert_eq!(week.applied, 0);
    let graced = swept(&app, Utc::now() + Duration::days(7) + Duration::minutes(1)).await;
    assert_eq!(graced.applied, 1, "the unpaid grace ended");
    assert_eq!(
        license(&app, &unpaid_id).await.state,
        SubscriptionState::Expired
    );
    assert_eq!(
        license(&app, &canceling_id).await.state,
        SubscriptionState::Active
    );

    let period_end = swept(&app, Utc::now() + Duration::days(31)).await;
    assert_eq!(period_end.applied, 1, "the cancellation fell due");
    let ended = license(&app, &canceling_id).await;
    assert_ne!(ended.state, SubscriptionState::Active, "{ended:?}");
    assert!(ended.scheduled_change.is_none());
    app.stop().await;
}
