//! "Manage billing" from outside (`../shared/design/PORTAL.md` §3, issue 14): an Owner gets a
//! Stripe Billing Portal session for the account's Stripe customer, returning to the portal (the
//! fake Stripe's request asserted field by field); a Tech is refused and Stripe is not asked; in
//! local checkout mode the answer is the portal's own stand-in page.

use crate::helpers::{call, Backend, TestApp};
use crate::on_both_stores;
use crate::sign_in::signed_in;
use serde_json::json;

on_both_stores!(
    an_owner_opens_stripes_billing_portal_for_the_accounts_customer_and_a_tech_is_refused,
    local_checkout_mode_answers_the_portals_stand_in_page,
);

/// Buys MSP Growth with Stripe customer `cus_msp_9`; returns the account id.
pub(crate) async fn bought_msp_with_customer(app: &TestApp) -> String {
    let request = json!({ "feature": "multi_tenant", "success_url": "https://p.example/auth/license-purchase-activate", "cancel_url": "https://p.example/", "purchase_return_jti": "jti-9" });
    let (_, handoff, _) = app.post("/v1/checkout/portal-handoff", &request, &[]).await;
    let start = json!({ "portal_handoff_id": handoff["portal_handoff_id"], "plan_key": "msp_growth", "tier": "msp", "billing_cycle": "monthly" });
    let (status, _, _) = app.post("/v1/checkout/session", &start, &[]).await;
    assert_eq!(status, 200);
    let event = json!({ "id": "evt_msp_9", "object": "event", "created": 1_000, "livemode": false, "pending_webhooks": 1, "type": "checkout.session.completed",
        "data": { "object": { "id": "cs_test_fake0001", "object": "checkout.session", "customer": "cus_msp_9", "subscription": "sub_msp_9", "customer_details": { "email": crate::sign_in::OWNER } } } });
    let (status, answer) = app.send_webhook(&event, false).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("applied")),
        "{answer}"
    );
    let events = app.all_events().await;
    events
        .iter()
        .find(|e| e.event_type == "account_opened")
        .expect("the account is opened")
        .payload["account_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn an_owner_opens_stripes_billing_portal_for_the_accounts_customer_and_a_tech_is_refused(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let account = bought_msp_with_customer(&app).await;
    let owner = signed_in(&app, crate::sign_in::OWNER).await;
    let (status, _) = app
        .client
        .post(format!("{}/api/accounts/{account}/members", app.base))
        .header("cookie", format!("__Host-pulse_cp_session={owner}"))
        .json(&json!({ "email": "tech@msp.example", "role": "tech" }))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 202);
    let tech = signed_in(&app, "tech@msp.example").await;
    crate::staff::caught_up(&app).await;

    let billing = format!("/api/portal/billing?account_id={account}");
    let (status, view) = call(&app, reqwest::Method::GET, &billing, Some(&tech), None).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["plan_version"], "msp_growth");
    assert_eq!(view["state"], "active");
    assert_eq!(view["has_billing"], true);

    let (status, body) = call(&app, reqwest::Method::POST, &billing, Some(&tech), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "a Tech manages no billing"
    );
    assert!(app
        .stripe
        .requests()
        .iter()
        .all(|r| r.path != "/v1/billing_portal/sessions"));

    let (status, opened) = call(&app, reqwest::Method::POST, &billing, Some(&owner), None).await;
    assert_eq!(status, 200, "{opened}");
    assert_eq!(opened["local"], false);
    assert!(
        opened["url"].as_str().unwrap().contains("/p/session/"),
        "{opened}"
    );
    let asked: Vec<_> = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/billing_portal/sessions")
        .collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].form.get("customer").map(String::as_str),
        Some("cus_msp_9")
    );
    assert_eq!(
        asked[0].form.get("return_url").map(String::as_str),
        Some(format!("https://account.pulse.test/portal/accounts/{account}/billing").as_str())
    );
    assert_eq!(
        asked[0].form.len(),
        2,
        "nothing else is sent: {:?}",
        asked[0].form
    );
    assert_eq!(
        asked[0].authorization.as_deref(),
        Some("Bearer sk_test_fake")
    );

    let (status, body) = call(
        &app,
        reqwest::Method::GET,
        "/api/portal/billing?account_id=a_%00",
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    app.stop().await;
}

async fn local_checkout_mode_answers_the_portals_stand_in_page(backend: Backend) {
    let app = TestApp::spawn_local(backend).await;
    let account = crate::workspaces::cloud_account(&app).await;
    let owner = signed_in(&app, crate::workspaces::OWNER).await;
    let (status, opened) = call(
        &app,
        reqwest::Method::POST,
        &format!("/api/portal/billing?account_id={account}"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(status, 200, "{opened}");
    assert_eq!(opened["local"], true);
    assert_eq!(
        opened["url"],
        format!("https://account.pulse.test/portal/accounts/{account}/billing/local")
    );
    assert!(
        app.stripe.requests().is_empty(),
        "no Stripe is asked in local mode"
    );
    let page = app
        .client
        .get(format!(
            "{}/portal/accounts/{account}/billing/local",
            app.base
        ))
        .header("cookie", format!("__Host-pulse_cp_session={owner}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("offline stand-in"), "{page}");
    app.stop().await;
}
