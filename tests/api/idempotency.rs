//! `Idempotency-Key` on every keyed route, tried as a client whose first request timed out
//! would: the same key (255 characters, the most the edge takes) and the same body, sent again
//! after the service restarted, answers exactly what the first request did and writes nothing;
//! a concurrent duplicate of a handoff answers the one handoff; the key with another body is
//! 409 `idempotency_key_reused`. Both stores.

use crate::helpers::{Backend, TestApp};
use aggregates::staff::StaffRole;
use serde_json::{json, Value};

crate::on_both_stores!(
    every_keyed_route_answers_a_retry_after_a_restart_exactly_as_the_first_time,
    hosted_keyed_routes_answer_a_retry_after_a_restart,
    concurrent_handoffs_under_one_key_create_one_handoff,
);

/// A key of the longest length the edge accepts, distinct per use.
fn long_key(name: &str) -> String {
    format!("{name}-{}", "k".repeat(255 - name.len() - 1))
}

/// A keyed request and the answer it got the first time.
struct Sent {
    path: String,
    body: Value,
    headers: Vec<(String, String)>,
    status: u16,
    answer: Value,
}

async fn send_keyed(app: &TestApp, path: &str, body: Value, headers: &[(&str, &str)]) -> Sent {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    let borrowed: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let (status, answer, _) = app.post(path, &body, &borrowed).await;
    assert!(status < 500, "{path}: {status} {answer}");
    Sent {
        path: path.to_owned(),
        body,
        headers,
        status,
        answer,
    }
}

/// Sends each request again and asserts it answers exactly what it did the first time.
async fn resend_all(app: &TestApp, sent: &[Sent]) {
    for first in sent {
        let headers: Vec<(&str, &str)> = first
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let (status, answer, _) = app.post(&first.path, &first.body, &headers).await;
        assert_eq!(
            (status, outcome(answer)),
            (first.status, outcome(first.answer.clone())),
            "a retry of {} after a restart",
            first.path
        );
    }
}

/// The answer without the request id, which names the request, not the outcome.
fn outcome(mut answer: Value) -> Value {
    if let Some(fields) = answer.as_object_mut() {
        fields.remove("request_id");
    }
    answer
}

async fn every_keyed_route_answers_a_retry_after_a_restart_exactly_as_the_first_time(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let mut sent = Vec::new();
    let key = |name: &str| long_key(name);

    let handoff_key = key("handoff");
    let handoff = send_keyed(
        &app,
        "/v1/checkout/portal-handoff",
        json!({ "feature": "max_monitored_systems", "success_url": "https://p.example/auth/license-purchase-activate", "cancel_url": "https://p.example/", "purchase_return_jti": "jti-1" }),
        &[("idempotency-key", &handoff_key)],
    )
    .await;
    assert_eq!(handoff.status, 201, "{}", handoff.answer);
    let handoff_id = handoff.answer["portal_handoff_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sent.push(handoff);

    let session_key = key("session");
    let session = send_keyed(
        &app,
        "/v1/checkout/session",
        json!({ "portal_handoff_id": handoff_id, "plan_key": "pro", "tier": "pro", "billing_cycle": "monthly" }),
        &[("idempotency-key", &session_key)],
    )
    .await;
    assert_eq!(session.status, 200, "{}", session.answer);
    sent.push(session);
    let stripe_keys: Vec<String> = app
        .stripe
        .requests()
        .iter()
        .filter_map(|r| r.idempotency_key.clone())
        .collect();
    assert_eq!(stripe_keys.len(), 1);
    assert!(stripe_keys[0].len() <= 255, "Stripe's key limit");

    let event = json!({ "id": "evt_idem", "object": "event", "created": 1_000, "livemode": false, "pending_webhooks": 1, "type": "checkout.session.completed",
        "data": { "object": { "id": "cs_test_fake0001", "object": "checkout.session", "customer_details": { "email": "buyer@example.com" } } } });
    let (status, _) = app.send_webhook(&event, false).await;
    assert_eq!(status, 200);
    let (_, result) = app
        .get("/v1/checkout/session?session_id=cs_test_fake0001")
        .await;
    let activation_key = result["activation_key"].as_str().unwrap().to_owned();
    let license_id = result["license_id"].as_str().unwrap().to_owned();

    let begin_key = key("begin");
    sent.push(
        send_keyed(
            &app,
            "/v1/checkout/redemptions/begin",
            json!({ "portal_handoff_id": handoff_id, "purchase_return_jti": "jti-1", "session_id": "cs_test_fake0001" }),
            &[("idempotency-key", &begin_key)],
        )
        .await,
    );
    let activated_key = key("activated");
    sent.push(
        send_keyed(
            &app,
            "/v1/checkout/redemptions/activated",
            json!({ "portal_handoff_id": handoff_id, "purchase_return_jti": "jti-1", "license_id": license_id }),
            &[("idempotency-key", &activated_key)],
        )
        .await,
    );
    let failed_key = key("failed");
    sent.push(
        send_keyed(
            &app,
            "/v1/checkout/redemptions/failed",
            json!({ "portal_handoff_id": handoff_id, "purchase_return_jti": "jti-1", "failure_reason": "x", "failure_message": "y" }),
            &[("idempotency-key", &failed_key)],
        )
        .await,
    );

    let activate_key = key("activate");
    let activation = send_keyed(
        &app,
        "/v1/activate",
        json!({ "activation_key": activation_key, "instance_name": "box", "instance_fingerprint": "fp-1", "client_version": "6.0.0" }),
        &[("idempotency-key", &activate_key)],
    )
    .await;
    assert_eq!(activation.status, 200, "{}", activation.answer);
    let token = activation.answer["installation"]["installation_token"]
        .as_str()
        .unwrap()
        .to_owned();
    sent.push(activation);
    let bearer = format!("Bearer {token}");
    let refresh_key = key("refresh");
    sent.push(
        send_keyed(
            &app,
            "/v1/grants/refresh",
            json!({}),
            &[
                ("idempotency-key", &refresh_key),
                ("authorization", &bearer),
            ],
        )
        .await,
    );

    let exchange_key = key("exchange");
    let legacy = crate::legacy_exchange::token(crate::legacy_exchange::claims("v5-lic-idem"));
    let exchanged = send_keyed(
        &app,
        "/v1/licenses/exchange",
        crate::legacy_exchange::body(&legacy, "fp-v5"),
        &[("idempotency-key", &exchange_key)],
    )
    .await;
    assert_eq!(exchanged.status, 200, "{}", exchanged.answer);
    let migrated = format!(
        "Bearer {}",
        exchanged.answer["installation"]["installation_token"]
            .as_str()
            .unwrap()
    );
    sent.push(exchanged);
    let capture_key = key("capture");
    sent.push(
        send_keyed(
            &app,
            "/v1/continuity/capture",
            json!({ "monitored_systems": 20 }),
            &[
                ("idempotency-key", &capture_key),
                ("authorization", &migrated),
            ],
        )
        .await,
    );

    let trial_key = key("trial");
    sent.push(
        send_keyed(
            &app,
            "/v1/trials/start",
            json!({ "org_id": "org-idem" }),
            &[("idempotency-key", &trial_key)],
        )
        .await,
    );

    let app = app.restart().await;
    let head = app.db.max_position().await;
    resend_all(&app, &sent).await;
    assert_eq!(
        app.db.max_position().await,
        head,
        "the retries wrote nothing"
    );

    let (status, body, _) = app
        .post(
            "/v1/trials/start",
            &json!({ "org_id": "org-other" }),
            &[("idempotency-key", &trial_key)],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    app.stop().await;
}

/// The hosted routes: a provisioner's state report and a tenant runtime's lease refresh.
async fn hosted_keyed_routes_answer_a_retry_after_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (account_id, tenant_id) = crate::hosted::bought_msp(&app).await;
    let provisioner = format!("Bearer {}", app.staff_token(StaffRole::Provisioner).await);
    let state_key = long_key("state");
    let report = send_keyed(
        &app,
        &format!("/v1/provisioner/accounts/{account_id}/tenants/{tenant_id}/state"),
        json!({ "state": "active", "reason": "booted" }),
        &[
            ("idempotency-key", &state_key),
            ("authorization", &provisioner),
        ],
    )
    .await;
    assert_eq!(report.status, 200, "{}", report.answer);
    let refresh_token =
        pulse_account::flows::hosted::lease_refresh_token(&app.state.keys, &tenant_id);
    let lease_key = long_key("lease");
    let lease = send_keyed(
        &app,
        "/api/entitlements/refresh",
        json!({ "org_id": account_id, "instance_host": "acme.cloud.example", "entitlement_refresh_token": refresh_token.expose() }),
        &[("idempotency-key", &lease_key)],
    )
    .await;
    assert_eq!(lease.status, 200, "{}", lease.answer);
    let app = app.restart().await;
    let written = ledger_events(&app).await;
    resend_all(&app, &[report, lease]).await;
    assert_eq!(
        ledger_events(&app).await,
        written,
        "the retries wrote nothing but the records of the staff requests"
    );
    app.stop().await;
}

/// How many events the log holds besides the records of staff requests (each request made with
/// a staff token is recorded, a retry included).
async fn ledger_events(app: &TestApp) -> usize {
    app.all_events()
        .await
        .iter()
        .filter(|e| e.event_type != "staff_access_recorded")
        .count()
}

async fn concurrent_handoffs_under_one_key_create_one_handoff(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = long_key("race");
    let body = json!({ "feature": "relay", "success_url": "https://p.example/auth/license-purchase-activate", "cancel_url": "https://p.example/", "purchase_return_jti": "jti-r" });
    let headers = [("idempotency-key", key.as_str())];
    let answers = futures_util::future::join_all(
        (0..8).map(|_| app.post("/v1/checkout/portal-handoff", &body, &headers)),
    )
    .await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, body, _)| {
            assert_eq!(*status, 201, "{body}");
            body["portal_handoff_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one handoff for one key: {ids:?}");
    let created = app
        .all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "handoff_created")
        .count();
    assert_eq!(created, 1);
    app.stop().await;
}
