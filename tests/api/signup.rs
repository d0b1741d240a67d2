//! Hosted signup from outside (`../shared/design/PORTAL.md` §3, issue 14): a Cloud plan or MSP
//! Starter is paid in a Stripe Checkout (the fake Stripe's request asserted); its completion opens
//! the account under the organisation's name with the signer-up as Owner and emails them a sign-in
//! link; other plans are refused before Stripe is asked; in local checkout mode the whole signup
//! runs offline.

use crate::helpers::{Backend, TestApp};
use crate::on_both_stores;
use crate::sign_in::{bootstrap, signed_in_by_mail};
use serde_json::{json, Value};

on_both_stores!(
    a_paid_signup_opens_the_account_and_emails_its_owner_a_sign_in_link,
    only_self_serve_hosted_plans_can_be_signed_up_for,
    a_signup_runs_offline_in_local_checkout_mode,
);

const FOUNDER: &str = "founder@new.example";

async fn a_paid_signup_opens_the_account_and_emails_its_owner_a_sign_in_link(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, started, _) = app
        .post(
            "/api/public/signup",
            &json!({ "email": FOUNDER, "org_name": "New Co", "plan_key": "cloud_power" }),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{started}");
    let url = started["url"].as_str().unwrap();
    let session_id = url.rsplit('/').next().unwrap().to_owned();
    let asked = app.stripe.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].path, "/v1/checkout/sessions");
    assert_eq!(
        asked[0].form["line_items[0][price]"],
        "price_1T5kg2BrHBocJIGHmkoF0zXY"
    );
    assert_eq!(asked[0].form["mode"], "subscription");
    assert_eq!(
        asked[0].form["success_url"],
        "https://account.pulse.test/portal/signup/done"
    );
    assert_eq!(
        asked[0].form["cancel_url"],
        "https://account.pulse.test/portal/signup"
    );

    let event = json!({ "id": "evt_signup", "object": "event", "created": 1_000, "livemode": false, "pending_webhooks": 1, "type": "checkout.session.completed",
        "data": { "object": { "id": session_id, "object": "checkout.session", "customer": "cus_new", "subscription": "sub_new", "customer_details": { "email": "billing@new.example" } } } });
    let (status, answer) = app.send_webhook(&event, false).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("applied")),
        "{answer}"
    );
    let (status, again) = app.send_webhook(&event, false).await;
    assert_eq!(status, 200, "{again}");

    let welcome = app.smtp.wait_for(FOUNDER, 1).await.pop().unwrap();
    assert!(
        welcome.subject.contains("sign-in link"),
        "the completed signup emails its Owner a sign-in link"
    );
    let session = signed_in_by_mail(&app, &welcome).await;
    let (status, me) = bootstrap(&app, Some(&session)).await;
    assert_eq!(status, 200);
    let accounts = me["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{me}");
    assert_eq!(accounts[0]["name"], "New Co");
    assert_eq!(accounts[0]["kind_label"], "Cloud");
    assert_eq!(
        accounts[0]["role"], "owner",
        "the signer-up owns it, not the card holder"
    );
    assert_eq!(accounts[0]["workspaces"].as_array().unwrap().len(), 1);
    let opened = app
        .all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "account_opened")
        .count();
    assert_eq!(opened, 1, "a repeated webhook opens nothing more");
    app.stop().await;
}

async fn only_self_serve_hosted_plans_can_be_signed_up_for(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases: [(Value, u16, &str); 6] = [
        (
            json!({ "email": FOUNDER, "org_name": "X", "plan_key": "msp_growth" }),
            400,
            "plan_not_purchasable",
        ),
        (
            json!({ "email": FOUNDER, "org_name": "X", "plan_key": "pro" }),
            400,
            "plan_not_purchasable",
        ),
        (
            json!({ "email": FOUNDER, "org_name": "X", "plan_key": "v5_pro_monthly_grandfathered" }),
            400,
            "plan_not_purchasable",
        ),
        (
            json!({ "email": FOUNDER, "org_name": "X", "plan_key": "gold" }),
            400,
            "unknown_plan",
        ),
        (
            json!({ "email": "nobody", "org_name": "X", "plan_key": "cloud_starter" }),
            400,
            "invalid_request",
        ),
        (
            json!({ "email": FOUNDER, "org_name": "", "plan_key": "cloud_starter" }),
            400,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer, _) = app.post("/api/public/signup", &body, &[]).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    assert!(
        app.stripe.requests().is_empty(),
        "Stripe is asked for nothing refused"
    );
    let (status, starter, _) = app
        .post(
            "/api/public/signup",
            &json!({ "email": FOUNDER, "org_name": "MSP Co", "plan_key": "msp-starter", "billing_cycle": "annual" }),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{starter}");
    assert_eq!(
        app.stripe.requests()[0].form["line_items[0][price]"],
        "price_1T5kgUBrHBocJIGHT6PiOn6x"
    );
    app.stop().await;
}

async fn a_signup_runs_offline_in_local_checkout_mode(backend: Backend) {
    let app = TestApp::spawn_local(backend).await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let started = browser
        .post(format!("{}/api/public/signup", app.base))
        .form(&[
            ("email", FOUNDER),
            ("org_name", "Offline Co"),
            ("plan_key", "cloud_starter"),
            ("billing_cycle", "monthly"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(started.status().as_u16(), 303);
    let checkout = started.headers()["location"].to_str().unwrap().to_owned();
    let path = &checkout[checkout.find("/v1/checkout/local/").unwrap()..];
    let page = browser
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("cloud_starter"), "{page}");
    let completed = browser
        .post(format!("{}{path}/complete", app.base))
        .form(&[("email", FOUNDER)])
        .send()
        .await
        .unwrap();
    assert_eq!(completed.status().as_u16(), 303);
    assert_eq!(completed.headers()["location"], "/portal/signup/done");
    let mail = app.smtp.wait_for(FOUNDER, 1).await.pop().unwrap();
    assert!(mail.subject.contains("sign-in link"));
    let session = signed_in_by_mail(&app, &mail).await;
    let (_, me) = bootstrap(&app, Some(&session)).await;
    assert_eq!(me["accounts"][0]["name"], "Offline Co", "{me}");
    app.stop().await;
}
