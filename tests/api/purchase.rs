//! The purchase flow over HTTP (`DOMAIN.md` §6, §9): handoff → browser resolve → Checkout Session
//! (the fake Stripe sees the right request) → signed `checkout.session.completed` → session lookup
//! → activation → a grant that verifies against the JWKS; and the webhook's guarantees.

use crate::helpers::{Backend, TestApp};
use aggregates::license::GrantClaims;
use jsonwebtoken::{Algorithm, Validation};
use pulse_account::crypto::signing::verify_with_jwks;
use serde_json::{json, Value};

crate::on_both_stores!(
    the_full_purchase_from_handoff_to_a_verified_grant,
    a_webhook_sent_several_times_at_once_takes_effect_once,
    a_webhook_with_a_bad_signature_gets_400_and_changes_nothing,
    an_unhandled_stripe_event_is_acknowledged_and_recorded_as_ignored,
    checkout_refuses_what_the_rules_refuse,
    an_expired_handoff_shows_expired_and_cannot_start_checkout,
    a_retried_checkout_start_answers_the_same_session,
);

const SUCCESS: &str = "http://127.0.0.1:7655/auth/license-purchase-activate";

async fn create_handoff(app: &TestApp) -> String {
    let request = json!({
        "feature": "max_monitored_systems",
        "success_url": SUCCESS,
        "cancel_url": "http://127.0.0.1:7655/settings",
        "purchase_return_jti": "jti-abc",
    });
    let (status, body, _) = app.post("/v1/checkout/portal-handoff", &request, &[]).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["feature"], "self_hosted_plan");
    body["portal_handoff_id"].as_str().unwrap().to_owned()
}

async fn start_checkout(app: &TestApp, handoff: &str, plan: &str, tier: &str) -> (u16, Value) {
    let request = json!({ "portal_handoff_id": handoff, "plan_key": plan, "tier": tier, "billing_cycle": "monthly" });
    let (status, body, _) = app.post("/v1/checkout/session", &request, &[]).await;
    (status, body)
}

fn completed_event(event_id: &str, session_id: &str) -> Value {
    json!({
        "id": event_id,
        "object": "event",
        "created": chrono::Utc::now().timestamp(),
        "livemode": false,
        "pending_webhooks": 1,
        "type": "checkout.session.completed",
        "data": { "object": {
            "id": session_id,
            "object": "checkout.session",
            "mode": "subscription",
            "payment_status": "paid",
            "status": "complete",
            "subscription": "sub_test_1",
            "customer_details": { "email": "Buyer@Example.com" },
        }},
    })
}

async fn the_full_purchase_from_handoff_to_a_verified_grant(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let handoff = create_handoff(&app).await;

    let (status, view) = app
        .get(&format!(
            "/v1/checkout/portal-handoff?portal_handoff_id={handoff}"
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(view["status"], "resolved");
    assert!(view["resolved_at"].is_string());
    let keys: Vec<_> = view.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "expires_at",
            "feature",
            "portal_handoff_id",
            "resolved_at",
            "status"
        ]
    );
    assert!(!view.to_string().contains("jti-abc") && !view.to_string().contains("cki_"));

    let (status, started) = start_checkout(&app, &handoff, "pro", "pro").await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["plan_key"], "pro");
    assert_eq!(started["billing_cycle"], "monthly");
    assert!(started["url"]
        .as_str()
        .unwrap()
        .starts_with("https://checkout.stripe.test/c/pay/cs_test_"));
    let requests = app.stripe.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.path, "/v1/checkout/sessions");
    assert_eq!(sent.authorization.as_deref(), Some("Bearer sk_test_fake"));
    assert!(
        sent.idempotency_key.is_some(),
        "checkout creation is idempotent at Stripe"
    );
    for (field, value) in [
        ("mode", "subscription"),
        ("line_items[0][price]", "price_1TPmE6BrHBocJIGHHaPwluoM"),
        ("line_items[0][quantity]", "1"),
        (
            "success_url",
            "http://127.0.0.1:7655/auth/license-purchase-activate?session_id={CHECKOUT_SESSION_ID}",
        ),
        ("cancel_url", "http://127.0.0.1:7655/settings"),
        ("client_reference_id", handoff.as_str()),
        ("metadata[portal_handoff_id]", handoff.as_str()),
        ("metadata[plan_version]", "pro"),
        (
            "subscription_data[metadata][portal_handoff_id]",
            handoff.as_str(),
        ),
    ] {
        assert_eq!(
            sent.form.get(field).map(String::as_str),
            Some(value),
            "{field} in {:?}",
            sent.form
        );
    }
    let session_id = "cs_test_fake0001";
    let (status, pending) = app
        .get(&format!("/v1/checkout/session?session_id={session_id}"))
        .await;
    assert_eq!((status, pending["status"].as_str()), (200, Some("pending")));

    let (status, answer) = app
        .send_webhook(&completed_event("evt_completed_1", session_id), false)
        .await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("applied")),
        "{answer}"
    );

    let (status, result) = app
        .get(&format!("/v1/checkout/session?session_id={session_id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(result["status"], "fulfilled");
    assert_eq!(result["portal_handoff_id"], handoff.as_str());
    assert_eq!(result["purchase_return_jti"], "jti-abc");
    assert_eq!(
        (result["tier"].as_str(), result["plan_key"].as_str()),
        (Some("pro"), Some("pro"))
    );
    assert_eq!(result["owner_email"], "buyer@example.com");
    let key = result["activation_key"].as_str().unwrap();
    assert!(key.starts_with("ppk_live_"));
    assert!(key.starts_with(result["activation_key_prefix"].as_str().unwrap()));
    let (_, view) = app
        .get(&format!(
            "/v1/checkout/portal-handoff?portal_handoff_id={handoff}"
        ))
        .await;
    assert_eq!(view["status"], "completed");

    let activation = json!({ "activation_key": key, "instance_name": "lab", "instance_fingerprint": "fp-1", "client_version": "6.0.1" });
    let (status, activated, _) = app.post("/v1/activate", &activation, &[]).await;
    assert_eq!(status, 200, "{activated}");
    assert_eq!(activated["license"]["license_id"], result["license_id"]);
    let (_, jwks) = app.get("/.well-known/jwks.json").await;
    let claims: GrantClaims = verify_with_jwks(
        activated["grant"]["jwt"].as_str().unwrap(),
        &jwks,
        &Validation::new(Algorithm::EdDSA),
    )
    .unwrap();
    assert_eq!(
        (
            claims.plan.as_str(),
            claims.tier.as_str(),
            claims.st.as_str()
        ),
        ("pro", "pro", "active")
    );
    assert_eq!(claims.max_monitored_systems, 15);
    assert!(claims.feat.contains(&String::from("audit_logging")));
    assert_eq!(claims.email, "buyer@example.com");
    app.stop().await;
}

async fn count_of(app: &TestApp, event_type: &str) -> usize {
    let events = app.all_events().await;
    events.iter().filter(|e| e.event_type == event_type).count()
}

async fn a_webhook_sent_several_times_at_once_takes_effect_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let handoff = create_handoff(&app).await;
    start_checkout(&app, &handoff, "relay", "relay").await;
    let event = completed_event("evt_dup_1", "cs_test_fake0001");
    let sends = (0..4).map(|_| app.send_webhook(&event, false));
    let answers = futures_join(sends).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let applied = answers
        .iter()
        .filter(|(_, body)| body["outcome"] == "applied")
        .count();
    assert_eq!(applied, 1, "{answers:?}");
    assert_eq!(
        count_of(&app, "license_issued").await,
        1,
        "exactly one license"
    );
    assert_eq!(count_of(&app, "stripe_event_received").await, 1);
    let (status, later) = app.send_webhook(&event, false).await;
    assert_eq!(
        (status, later["outcome"].as_str()),
        (200, Some("already_processed"))
    );
    assert_eq!(count_of(&app, "license_issued").await, 1);
    app.stop().await;
}

async fn futures_join<F: std::future::Future<Output = (u16, Value)>>(
    futures: impl Iterator<Item = F>,
) -> Vec<(u16, Value)> {
    let pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut results = Vec::new();
    let mut pending = pinned;
    // Poll all futures concurrently on this task.
    let outcome = std::future::poll_fn(move |cx| {
        let mut index = 0;
        while index < pending.len() {
            if let std::task::Poll::Ready(value) = pending[index].as_mut().poll(cx) {
                results.push(value);
                drop(pending.swap_remove(index));
            } else {
                index += 1;
            }
        }
        if pending.is_empty() {
            std::task::Poll::Ready(std::mem::take(&mut results))
        } else {
            std::task::Poll::Pending
        }
    });
    outcome.await
}

async fn a_webhook_with_a_bad_signature_gets_400_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let handoff = create_handoff(&app).await;
    start_checkout(&app, &handoff, "pro", "pro").await;
    let head = app.db.max_position().await;
    let (status, body) = app
        .send_webhook(&completed_event("evt_forged", "cs_test_fake0001"), true)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_signature"))
    );
    let response = app
        .client
        .post(format!("{}/v1/webhooks/stripe", app.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        400,
        "an unsigned webhook is refused"
    );
    assert_eq!(app.db.max_position().await, head, "nothing was written");
    app.stop().await;
}

async fn an_unhandled_stripe_event_is_acknowledged_and_recorded_as_ignored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let event = json!({
        "id": "evt_other_1", "object": "event", "created": 1_700_000_000, "livemode": false, "pending_webhooks": 1,
        "type": "customer.created", "data": { "object": { "id": "cus_1", "object": "customer" } },
    });
    let (status, body) = app.send_webhook(&event, false).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("ignored")));
    let events = app.all_events().await;
    let ignored = events
        .iter()
        .find(|e| e.event_type == "stripe_event_ignored")
        .expect("the reason is recorded");
    assert_eq!(ignored.stream.to_string(), "stripe_event/evt_other_1");
    assert!(ignored.payload["reason"]
        .as_str()
        .unwrap()
        .contains("customer.created"));
    app.stop().await;
}

async fn checkout_refuses_what_the_rules_refuse(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let handoff = create_handoff(&app).await;
    let (status, body) =
        start_checkout(&app, &handoff, "v5_pro_monthly_grandfathered", "pro").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("plan_not_purchasable"))
    );
    let (status, body) = start_checkout(&app, "cph_0000000000", "pro", "pro").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = app
        .get("/v1/checkout/portal-handoff?portal_handoff_id=not%20valid")
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = app.get("/v1/checkout/session?session_id=cs_unknown").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    start_checkout(&app, &handoff, "pro", "pro").await;
    app.send_webhook(&completed_event("evt_done", "cs_test_fake0001"), false)
        .await;
    let (status, body) = start_checkout(&app, &handoff, "pro", "pro").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("handoff_completed")),
        "{body}"
    );
    let bad = json!({ "feature": "max_monitored_systems", "success_url": "https://x.example/other", "cancel_url": "https://x.example/", "purchase_return_jti": "j" });
    let (status, body, _) = app.post("/v1/checkout/portal-handoff", &bad, &[]).await;
    assert_eq!(
        (status, body["details"]["field"].as_str()),
        (400, Some("success_url"))
    );
    app.stop().await;
}

async fn an_expired_handoff_shows_expired_and_cannot_start_checkout(backend: Backend) {
    use aggregates::catalog::Catalog;
    use aggregates::decider::Context;
    use aggregates::handoff::{HandoffCommand, PurchaseHandoff};
    use aggregates::ids::{HandoffId, IntentId};
    use pulse_account::engine::command::{handle, Command};
    let app = TestApp::spawn(backend).await;
    let catalog = Catalog::v1();
    let handoff = HandoffId::from_entropy(4242);
    let create = HandoffCommand::Create {
        handoff_id: handoff.clone(),
        intent_id: IntentId::from_entropy(4242),
        feature: String::from("max_monitored_systems"),
        success_url: String::from(SUCCESS),
        cancel_url: String::from("http://127.0.0.1:7655/settings"),
        purchase_return_jti: String::from("jti-old"),
    };
    let two_hours_ago = chrono::Utc::now() - chrono::Duration::hours(2);
    let command = Command {
        stream_id: handoff.as_str(),
        command: &create,
        context: Context::new(two_hours_ago, &catalog),
        metadata: crate::helpers::metadata(),
        idempotency: None,
    };
    handle::<PurchaseHandoff>(app.state.store.as_ref(), command)
        .await
        .unwrap();
    let (status, view) = app
        .get(&format!(
            "/v1/checkout/portal-handoff?portal_handoff_id={handoff}"
        ))
        .await;
    assert_eq!((status, view["status"].as_str()), (200, Some("expired")));
    assert_eq!(
        view["resolved_at"],
        Value::Null,
        "an expired handoff is not resolved by a lookup"
    );
    let (status, body) = start_checkout(&app, handoff.as_str(), "pro", "pro").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (410, Some("handoff_expired"))
    );
    assert!(
        app.stripe.requests().is_empty(),
        "Stripe is never asked for an expired handoff"
    );
    app.stop().await;
}

async fn a_retried_checkout_start_answers_the_same_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let handoff = create_handoff(&app).await;
    let request = json!({ "portal_handoff_id": handoff, "plan_key": "pro", "tier": "pro", "billing_cycle": "monthly" });
    let key = [("idempotency-key", "checkout-click-1")];
    let (status, first, _) = app.post("/v1/checkout/session", &request, &key).await;
    assert_eq!(status, 200, "{first}");
    let (status, again, _) = app.post("/v1/checkout/session", &request, &key).await;
    assert_eq!(
        (status, &again),
        (200, &first),
        "a double submit answers the first session"
    );
    assert_eq!(app.stripe.requests().len(), 1, "Stripe was asked once");
    let started = app
        .all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "checkout_started")
        .count();
    assert_eq!(started, 1);
    let other = json!({ "portal_handoff_id": handoff, "plan_key": "relay", "tier": "relay", "billing_cycle": "monthly" });
    let (status, refused, _) = app.post("/v1/checkout/session", &other, &key).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    app.stop().await;
}
