//! Stripe driving billing over the webhook (`DOMAIN.md` §4, §9): subscription snapshots with the
//! out-of-order guard, failed and paid invoices, refunds and disputes revoking the license.

use crate::helpers::{Backend, TestApp};
use aggregates::license::{License, LicenseState};
use aggregates::log::StreamName;
use aggregates::subscription::SubscriptionState;
use pulse_account::engine::command::load;
use serde_json::{json, Value};

crate::on_both_stores!(
    an_older_subscription_update_arriving_after_a_newer_one_changes_nothing,
    a_failed_payment_opens_grace_a_paid_invoice_closes_it_and_a_refund_revokes,
    a_dispute_revokes_the_license_it_was_charged_for,
    a_new_price_on_the_subscription_changes_the_plan,
);

pub(crate) fn stripe_event(id: &str, event_type: &str, created: i64, object: Value) -> Value {
    json!({ "id": id, "object": "event", "created": created, "livemode": false, "pending_webhooks": 1, "type": event_type, "data": { "object": object } })
}

/// Buys Pro through the whole flow; returns the license id.
pub(crate) async fn purchase(app: &TestApp) -> String {
    let request = json!({
        "feature": "max_monitored_systems",
        "success_url": "https://pulse.example/auth/license-purchase-activate",
        "cancel_url": "https://pulse.example/",
        "purchase_return_jti": "jti-1",
    });
    let (_, handoff, _) = app.post("/v1/checkout/portal-handoff", &request, &[]).await;
    let handoff = handoff["portal_handoff_id"].as_str().unwrap().to_owned();
    let start = json!({ "portal_handoff_id": handoff, "plan_key": "pro", "tier": "pro", "billing_cycle": "monthly" });
    let (status, _, _) = app.post("/v1/checkout/session", &start, &[]).await;
    assert_eq!(status, 200);
    let session = json!({
        "id": "cs_test_fake0001", "object": "checkout.session", "subscription": "sub_test_1", "customer": "cus_test_1",
        "customer_details": { "email": "buyer@example.com" },
    });
    let (status, answer) = app
        .send_webhook(
            &stripe_event("evt_checkout", "checkout.session.completed", 1_000, session),
            false,
        )
        .await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("applied")),
        "{answer}"
    );
    let (_, result) = app
        .get("/v1/checkout/session?session_id=cs_test_fake0001")
        .await;
    result["license_id"].as_str().unwrap().to_owned()
}

async fn license(app: &TestApp, license_id: &str) -> aggregates::license::IssuedLicense {
    let stream = StreamName::parse("license", license_id).unwrap();
    let (state, _): (LicenseState, _) = load::<License>(app.state.store.as_ref(), &stream)
        .await
        .unwrap();
    state.issued.unwrap()
}

pub(crate) fn subscription(status: &str, price: &str) -> Value {
    json!({
        "id": "sub_test_1", "object": "subscription", "status": status, "customer": "cus_test_1", "metadata": {},
        "items": { "data": [{ "current_period_end": 1_900_000_000, "price": { "id": price, "recurring": { "interval": "month" } } }] },
    })
}

const PRO_PRICE: &str = "price_1TPmE6BrHBocJIGHHaPwluoM";

async fn an_older_subscription_update_arriving_after_a_newer_one_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let license_id = purchase(&app).await;
    let newer = stripe_event(
        "evt_newer",
        "customer.subscription.updated",
        2_000,
        subscription("past_due", PRO_PRICE),
    );
    assert_eq!(app.send_webhook(&newer, false).await.0, 200);
    assert_eq!(
        license(&app, &license_id).await.state,
        SubscriptionState::Grace
    );
    let older = stripe_event(
        "evt_older",
        "customer.subscription.updated",
        1_500,
        subscription("active", PRO_PRICE),
    );
    let (status, answer) = app.send_webhook(&older, false).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("ignored")),
        "the answer says what the log says: {answer}"
    );
    let receipt: Vec<String> = app
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.stream.stream_id() == "evt_older")
        .map(|e| e.event_type)
        .collect();
    assert!(
        receipt.contains(&String::from("stripe_event_ignored")),
        "{receipt:?}"
    );
    let after = license(&app, &license_id).await;
    assert_eq!(
        after.state,
        SubscriptionState::Grace,
        "the older snapshot did not overwrite the newer one"
    );
    assert_eq!(
        after.current_period_end.map(|t| t.timestamp()),
        Some(1_900_000_000)
    );
    app.stop().await;
}

async fn a_failed_payment_opens_grace_a_paid_invoice_closes_it_and_a_refund_revokes(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let license_id = purchase(&app).await;
    let invoice = |charge: &str| json!({ "id": "in_1", "object": "invoice", "subscription": "sub_test_1", "charge": charge, "lines": { "data": [{ "period": { "end": 1_950_000_000 } }] } });
    app.send_webhook(
        &stripe_event(
            "evt_failed",
            "invoice.payment_failed",
            2_000,
            invoice("ch_failed"),
        ),
        false,
    )
    .await;
    let in_grace = license(&app, &license_id).await;
    assert_eq!(in_grace.state, SubscriptionState::Grace);
    assert!(in_grace.grace_started_at.is_some());
    app.send_webhook(
        &stripe_event("evt_paid", "invoice.paid", 2_100, invoice("ch_paid")),
        false,
    )
    .await;
    let paid = license(&app, &license_id).await;
    assert_eq!(
        (paid.state, paid.grace_started_at),
        (SubscriptionState::Active, None)
    );
    assert_eq!(
        paid.current_period_end.map(|t| t.timestamp()),
        Some(1_950_000_000)
    );
    let refund = json!({ "id": "ch_paid", "object": "charge", "refunded": true });
    let (status, answer) = app
        .send_webhook(
            &stripe_event("evt_refund", "charge.refunded", 2_200, refund),
            false,
        )
        .await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("applied")));
    assert!(
        license(&app, &license_id).await.revoked.is_some(),
        "a refund revokes at once"
    );
    app.stop().await;
}

async fn a_dispute_revokes_the_license_it_was_charged_for(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let license_id = purchase(&app).await;
    let invoice = json!({ "id": "in_1", "object": "invoice", "subscription": "sub_test_1", "charge": "ch_1" });
    app.send_webhook(
        &stripe_event("evt_paid", "invoice.paid", 2_000, invoice),
        false,
    )
    .await;
    let dispute = json!({ "id": "dp_1", "object": "dispute", "charge": "ch_1" });
    app.send_webhook(
        &stripe_event("evt_dispute", "charge.dispute.created", 2_100, dispute),
        false,
    )
    .await;
    assert!(license(&app, &license_id).await.revoked.is_some());
    let stray = json!({ "id": "dp_2", "object": "dispute", "charge": "ch_unknown" });
    let (status, answer) = app
        .send_webhook(
            &stripe_event("evt_stray", "charge.dispute.created", 2_200, stray),
            false,
        )
        .await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("ignored")),
        "a charge of no license is recorded as ignored"
    );
    app.stop().await;
}

async fn a_new_price_on_the_subscription_changes_the_plan(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let license_id = purchase(&app).await;
    let relay = stripe_event(
        "evt_relay",
        "customer.subscription.updated",
        2_000,
        subscription("active", "price_1TPmE5BrHBocJIGHdwLp4tTA"),
    );
    app.send_webhook(&relay, false).await;
    let changed = license(&app, &license_id).await;
    assert_eq!(changed.plan_version, "relay");
    assert_eq!(
        changed.license_version, 2,
        "every change bumps license_version"
    );
    app.stop().await;
}
