//! What an installation does after buying (`DOMAIN.md` §6.6, §7, §8, §14): redeem the purchase,
//! read its entitlements, report its monitored systems once for the grandfather floor, start a
//! trial under the rate limit.

use crate::helpers::{metadata, Backend, TestApp};
use aggregates::catalog::BillingCycle;
use aggregates::ids::Email;
use aggregates::license::LicenseOrigin;
use pulse_account::flows::licensing::{Licensing, NewLicense};
use serde_json::{json, Value};
use std::time::Instant;

crate::on_both_stores!(
    a_purchase_is_redeemed_by_the_decision_table,
    an_installation_reads_its_entitlements,
    the_grandfather_floor_is_captured_once_and_raises_the_limit,
    trial_starts_are_denied_with_their_codes_and_rate_limited_with_the_exact_retry_after,
    a_retried_trial_start_answers_what_the_first_did,
    retried_redemptions_under_an_idempotency_key_answer_what_the_first_did,
);

pub(crate) async fn bought(app: &TestApp) -> (String, Value) {
    let request = json!({ "feature": "max_monitored_systems", "success_url": "https://p.example/auth/license-purchase-activate", "cancel_url": "https://p.example/", "purchase_return_jti": "jti-1" });
    let (_, handoff, _) = app.post("/v1/checkout/portal-handoff", &request, &[]).await;
    let handoff = handoff["portal_handoff_id"].as_str().unwrap().to_owned();
    let start = json!({ "portal_handoff_id": handoff, "plan_key": "pro", "tier": "pro", "billing_cycle": "monthly" });
    app.post("/v1/checkout/session", &start, &[]).await;
    let event = json!({ "id": "evt_1", "object": "event", "created": 1_000, "livemode": false, "pending_webhooks": 1, "type": "checkout.session.completed",
        "data": { "object": { "id": "cs_test_fake0001", "object": "checkout.session", "customer_details": { "email": "buyer@example.com" } } } });
    app.send_webhook(&event, false).await;
    let (_, result) = app
        .get("/v1/checkout/session?session_id=cs_test_fake0001")
        .await;
    (handoff, result)
}

async fn a_purchase_is_redeemed_by_the_decision_table(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (handoff, _) = bought(&app).await;
    let begin = |jti: &str| json!({ "portal_handoff_id": handoff, "purchase_return_jti": jti, "session_id": "cs_test_fake0001" });
    let (status, started, _) = app
        .post("/v1/checkout/redemptions/begin", &begin("jti-1"), &[])
        .await;
    assert_eq!(
        (status, started["status"].as_str()),
        (200, Some("started")),
        "{started}"
    );
    let (status, body, _) = app
        .post("/v1/checkout/redemptions/begin", &begin("jti-1"), &[])
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("in_progress")),
        "a replay within 30 s is in progress"
    );
    let (status, body, _) = app
        .post("/v1/checkout/redemptions/begin", &begin("jti-2"), &[])
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("conflict")),
        "another jti on the same handoff"
    );
    let end = json!({ "portal_handoff_id": handoff, "purchase_return_jti": "jti-1" });
    let (status, activated, _) = app
        .post("/v1/checkout/redemptions/activated", &end, &[])
        .await;
    assert_eq!(
        (status, activated["status"].as_str()),
        (200, Some("activated"))
    );
    assert!(activated["redeemed_at"].is_string());
    let (status, body, _) = app
        .post("/v1/checkout/redemptions/begin", &begin("jti-1"), &[])
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_activated")),
        "activated is terminal"
    );
    let failed = json!({ "portal_handoff_id": handoff, "purchase_return_jti": "jti-1", "failure_reason": "late", "failure_message": "too late" });
    let (status, body, _) = app
        .post("/v1/checkout/redemptions/failed", &failed, &[])
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_activated"))
    );
    app.stop().await;
}

async fn retried_redemptions_under_an_idempotency_key_answer_what_the_first_did(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (handoff, _) = bought(&app).await;
    let begin = json!({ "portal_handoff_id": handoff, "purchase_return_jti": "jti-1", "session_id": "cs_test_fake0001" });
    let key = [("idempotency-key", "begin-1")];
    let (status, started, _) = app
        .post("/v1/checkout/redemptions/begin", &begin, &key)
        .await;
    assert_eq!((status, started["status"].as_str()), (200, Some("started")));
    let end = json!({ "portal_handoff_id": handoff, "purchase_return_jti": "jti-1" });
    let end_key = [("idempotency-key", "end-1")];
    let (status, activated, _) = app
        .post("/v1/checkout/redemptions/activated", &end, &end_key)
        .await;
    assert_eq!(
        (status, activated["status"].as_str()),
        (200, Some("activated"))
    );
    let events_before = app.all_events().await.len();

    let (status, replayed, _) = app
        .post("/v1/checkout/redemptions/begin", &begin, &key)
        .await;
    assert_eq!(
        (status, &replayed),
        (200, &started),
        "the retried begin answers the record as it first left it, not `already_activated`"
    );
    let (status, replayed, _) = app
        .post("/v1/checkout/redemptions/activated", &end, &end_key)
        .await;
    assert_eq!((status, &replayed), (200, &activated));
    let other = json!({ "portal_handoff_id": handoff, "purchase_return_jti": "jti-2", "session_id": "cs_test_fake0001" });
    let (status, body, _) = app
        .post("/v1/checkout/redemptions/begin", &other, &key)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    let (status, body, _) = app
        .post("/v1/checkout/redemptions/begin", &begin, &[])
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_activated")),
        "without the key the table decides afresh"
    );
    assert_eq!(
        app.all_events().await.len(),
        events_before,
        "retries wrote nothing"
    );
    app.stop().await;
}

async fn activate(app: &TestApp, key: &str) -> String {
    activate_as(app, key, "lab").await
}

/// Activates an installation named `instance_name` with `key`; returns its token.
pub(crate) async fn activate_as(app: &TestApp, key: &str, instance_name: &str) -> String {
    let body = json!({ "activation_key": key, "instance_name": instance_name, "instance_fingerprint": "fp-1", "client_version": "6.0.1" });
    let (status, activated, _) = app.post("/v1/activate", &body, &[]).await;
    assert_eq!(status, 200, "{activated}");
    activated["installation"]["installation_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) async fn get_with_token(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn an_installation_reads_its_entitlements(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, result) = bought(&app).await;
    let token = activate(&app, result["activation_key"].as_str().unwrap()).await;
    let (status, entitlements) = get_with_token(&app, "/v1/entitlements", &token).await;
    assert_eq!(status, 200, "{entitlements}");
    assert_eq!(entitlements["plan_version"], "pro");
    assert_eq!(entitlements["tier"], "pro");
    assert_eq!(entitlements["subscription_state"], "active");
    assert_eq!(entitlements["valid"], true);
    assert_eq!(entitlements["licensed_email"], "buyer@example.com");
    assert_eq!(entitlements["max_history_days"], 90);
    assert!(entitlements["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("ai_autofix")));
    assert_eq!(
        entitlements["limits"],
        json!([{ "key": "max_monitored_systems", "limit": 15, "current": null, "state": "ok" }])
    );
    assert_eq!(
        entitlements["continuity"]["capture_pending"], false,
        "a purchase is no v5 migration"
    );
    assert_eq!(entitlements["license_id"], result["license_id"]);
    let (status, body) = get_with_token(&app, "/v1/entitlements", "pit_live_nope").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("TOKEN_REVOKED"))
    );
    app.stop().await;
}

async fn the_grandfather_floor_is_captured_once_and_raises_the_limit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let licensing = Licensing {
        store: app.state.store.as_ref(),
        bindings: &app.state.token_bindings,
        cache: None,
        keys: &app.state.keys,
        catalog: &app.state.catalog,
    };
    let migrated = NewLicense {
        owner_email: Email::parse("v5@example.com").unwrap(),
        plan_version: String::from("v5_pro_monthly_grandfathered"),
        billing_cycle: Some(BillingCycle::Monthly),
        current_period_end: None,
        origin: LicenseOrigin::LegacyExchange {
            legacy_license_id: String::from("v5-1"),
        },
        stripe_price_id: None,
    };
    let issued = licensing
        .issue(migrated.clone(), metadata(), None)
        .await
        .unwrap();
    let token = activate(&app, issued.activation_key.expose()).await;
    let (_, before) = get_with_token(&app, "/v1/entitlements", &token).await;
    assert_eq!(before["continuity"]["capture_pending"], true);
    let capture = |count: u32, key: &'static str| {
        let (app, token) = (&app, token.clone());
        async move {
            let mut headers = vec![("authorization", format!("Bearer {token}"))];
            if !key.is_empty() {
                headers.push(("idempotency-key", key.to_owned()));
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            app.post(
                "/v1/continuity/capture",
                &json!({ "monitored_systems": count }),
                &headers,
            )
            .await
        }
    };
    let (status, report, _) = capture(24, "capture-1").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            report["plan_limit"].as_u64(),
            report["grandfathered_floor"].as_u64(),
            report["effective_limit"].as_u64()
        ),
        (Some(10), Some(24), Some(24))
    );
    assert_eq!(report["capture_pending"], false);
    let (status, retried, _) = capture(24, "capture-1").await;
    assert_eq!(
        (status, &retried),
        (200, &report),
        "a keyed retry answers the first report"
    );
    let (status, body, _) = capture(25, "capture-1").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("idempotency_key_reused")),
        "the same key with another count is refused"
    );
    let (_, again, _) = capture(80, "").await;
    assert_eq!(
        again, report,
        "a later report never changes the captured floor"
    );
    let (_, after) = get_with_token(&app, "/v1/entitlements", &token).await;
    assert_eq!(
        after["limits"][0]["limit"], 24,
        "the floor raised the limit"
    );

    let bought_new = licensing
        .issue(
            NewLicense {
                origin: LicenseOrigin::Checkout {
                    session_id: String::from("cs_x"),
                },
                plan_version: String::from("pro"),
                ..migrated
            },
            metadata(),
            None,
        )
        .await
        .unwrap();
    let other = activate(&app, bought_new.activation_key.expose()).await;
    let (status, body, _) = app
        .post(
            "/v1/continuity/capture",
            &json!({ "monitored_systems": 40 }),
            &[("authorization", &format!("Bearer {other}"))],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("floor_not_applicable"))
    );
    app.stop().await;
}

async fn trial_starts_are_denied_with_their_codes_and_rate_limited_with_the_exact_retry_after(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (status, body, _) = app
        .post("/v1/trials/start", &json!({ "org_id": "bad org" }), &[])
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );

    let (account, _) = app.open_account(77, "owner@example.com").await;
    let (status, trial, _) = app
        .post(
            "/v1/trials/start",
            &json!({ "org_id": account.as_str() }),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{trial}");
    assert_eq!(
        (
            trial["plan_version"].as_str(),
            trial["max_monitored_systems"].as_u64()
        ),
        (Some("trial"), Some(15))
    );
    let (status, body, _) = app
        .post(
            "/v1/trials/start",
            &json!({ "org_id": account.as_str() }),
            &[],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("trial_already_used"))
    );

    let first_attempt = Instant::now();
    for attempt in 0..6 {
        let (status, body, _) = app
            .post("/v1/trials/start", &json!({ "org_id": "org-unknown" }), &[])
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("trial_signup_required")),
            "attempt {attempt}"
        );
        assert_eq!(
            body["details"]["action_url"],
            "https://account.pulse.test/portal/signup?org_id=org-unknown"
        );
    }
    let (status, body, headers) = app
        .post("/v1/trials/start", &json!({ "org_id": "org-unknown" }), &[])
        .await;
    let elapsed = first_attempt.elapsed().as_secs();
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("trial_rate_limited"))
    );
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(
        json!(retry_after),
        body["details"]["retry_after_seconds"],
        "the header and the details agree"
    );
    assert!(
        (900 - elapsed - 1..=900).contains(&retry_after),
        "seconds until the oldest attempt leaves the window: {retry_after}"
    );
    app.stop().await;
}

async fn a_retried_trial_start_answers_what_the_first_did(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (account, _) = app.open_account(88, "owner@example.com").await;
    let body = json!({ "org_id": account.as_str() });
    let (status, first, _) = app
        .post("/v1/trials/start", &body, &[("idempotency-key", "trial-1")])
        .await;
    assert_eq!(status, 201, "{first}");
    let (status, again, _) = app
        .post("/v1/trials/start", &body, &[("idempotency-key", "trial-1")])
        .await;
    assert_eq!(
        (status, &again),
        (201, &first),
        "the retry answers the first start"
    );
    let (status, other, _) = app
        .post("/v1/trials/start", &body, &[("idempotency-key", "trial-2")])
        .await;
    assert_eq!(
        (status, other["code"].as_str()),
        (409, Some("trial_already_used"))
    );
    for _ in 0..10 {
        let (status, denied, _) = app
            .post(
                "/v1/trials/start",
                &json!({ "org_id": "org-retry" }),
                &[("idempotency-key", "same")],
            )
            .await;
        assert_eq!(
            (status, denied["code"].as_str()),
            (409, Some("trial_signup_required")),
            "a replayed denial is not a new attempt"
        );
    }
    app.stop().await;
}
