//! Requests that race on one stream, as many runtimes or a retrying client send them: every
//! loser the domain has an answer for gets that answer, never `concurrent_update`. Both stores.

use crate::helpers::{Backend, TestApp};
use aggregates::staff::StaffRole;
use serde_json::{json, Value};
use std::collections::BTreeMap;

crate::on_both_stores!(
    sixteen_concurrent_activations_leave_three_installations_and_every_loser_max_installations,
    concurrent_trial_starts_for_one_org_each_get_the_domains_answer,
    concurrent_checkout_starts_on_one_handoff_each_start_a_session,
    one_webhook_delivered_sixteen_times_at_once_is_received_once,
    concurrent_exchanges_of_one_v5_token_get_the_domains_answers,
    concurrent_lease_refreshes_and_state_reports_of_one_tenant_all_answer,
    sixteen_identical_activations_at_once_all_succeed_on_one_installation,
);

/// Whether any answer is the runner giving up.
fn contended(counts: &BTreeMap<(u16, String), usize>) -> bool {
    counts.keys().any(|(_, code)| code == "concurrent_update")
}

/// How many answers had each `(status, code)`.
fn tally(answers: &[(u16, Value, reqwest::header::HeaderMap)]) -> BTreeMap<(u16, String), usize> {
    let mut counts = BTreeMap::new();
    for (status, body, _) in answers {
        let code = body["code"].as_str().unwrap_or("ok").to_owned();
        *counts.entry((*status, code)).or_default() += 1;
    }
    counts
}

async fn sixteen_concurrent_activations_leave_three_installations_and_every_loser_max_installations(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    for round in 0..3 {
        let (_, key) = crate::licensing::issue(&app, "relay").await;
        let bodies: Vec<Value> = (0..16)
            .map(|n| json!({ "activation_key": key, "instance_name": "lab", "instance_fingerprint": format!("fp-{round}-{n}"), "client_version": "6.0.1" }))
            .collect();
        let answers = futures_util::future::join_all(
            bodies
                .iter()
                .map(|body| app.post("/v1/activate", body, &[])),
        )
        .await;
        let counts = tally(&answers);
        assert_eq!(
            counts,
            BTreeMap::from([
                ((200, String::from("ok")), 3),
                ((409, String::from("MAX_INSTALLATIONS")), 13),
            ]),
            "round {round}"
        );
    }
    app.stop().await;
}

async fn concurrent_trial_starts_for_one_org_each_get_the_domains_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (account, _) = app.open_account(41, "owner@race.example").await;
    let body = json!({ "org_id": account.as_str() });
    let answers =
        futures_util::future::join_all((0..16).map(|_| app.post("/v1/trials/start", &body, &[])))
            .await;
    let counts = tally(&answers);
    assert_eq!(
        counts.get(&(201, String::from("ok"))),
        Some(&1),
        "{counts:?}"
    );
    let domain_answers = [
        "trial_already_used",
        "trial_not_available",
        "trial_rate_limited",
    ];
    assert!(
        counts
            .keys()
            .all(|(_, code)| code == "ok" || domain_answers.contains(&code.as_str())),
        "{counts:?}"
    );
    app.stop().await;
}

async fn concurrent_checkout_starts_on_one_handoff_each_start_a_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let request = json!({ "feature": "relay", "success_url": "https://p.example/auth/license-purchase-activate", "cancel_url": "https://p.example/", "purchase_return_jti": "jti-race" });
    let (_, handoff, _) = app.post("/v1/checkout/portal-handoff", &request, &[]).await;
    let start = json!({ "portal_handoff_id": handoff["portal_handoff_id"], "plan_key": "relay", "tier": "relay", "billing_cycle": "monthly" });
    let answers = futures_util::future::join_all(
        (0..16).map(|_| app.post("/v1/checkout/session", &start, &[])),
    )
    .await;
    let counts = tally(&answers);
    assert_eq!(
        counts,
        BTreeMap::from([((200, String::from("ok")), 16)]),
        "{counts:?}"
    );
    let started = app
        .all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "checkout_started")
        .count();
    assert_eq!(started, 16, "each start recorded its session");
    app.stop().await;
}

async fn one_webhook_delivered_sixteen_times_at_once_is_received_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (account_id, _) = crate::hosted::bought_msp(&app).await;
    let event = json!({ "id": "evt_race_sub", "object": "event", "created": 5_000, "livemode": false, "pending_webhooks": 1,
        "type": "invoice.payment_failed", "data": { "object": { "object": "invoice", "subscription": "sub_test_fake0001" } } });
    let answers =
        futures_util::future::join_all((0..16).map(|_| app.send_webhook(&event, false))).await;
    let outcomes: BTreeMap<String, usize> =
        answers
            .iter()
            .fold(BTreeMap::new(), |mut counts, (status, body)| {
                assert_eq!(*status, 200, "{body}");
                *counts
                    .entry(body["outcome"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
                counts
            });
    assert_eq!(outcomes.values().sum::<usize>(), 16);
    assert_eq!(
        outcomes.get("already_processed"),
        Some(&15),
        "{outcomes:?} for {account_id}"
    );
    app.stop().await;
}

async fn concurrent_exchanges_of_one_v5_token_get_the_domains_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = crate::legacy_exchange::token(crate::legacy_exchange::claims("v5-race"));
    let bodies: Vec<Value> = (0..16)
        .map(|n| crate::legacy_exchange::body(&token, &format!("fp-race-{n}")))
        .collect();
    let answers = futures_util::future::join_all(
        bodies
            .iter()
            .map(|body| app.post("/v1/licenses/exchange", body, &[])),
    )
    .await;
    let counts = tally(&answers);
    assert!(!contended(&counts), "{counts:?}");
    assert_eq!(
        counts.get(&(200, String::from("ok"))),
        Some(&3),
        "{counts:?}"
    );
    let domain_answers = ["MAX_INSTALLATIONS", "exchange_rate_limited"];
    assert!(
        counts
            .keys()
            .all(|(_, code)| code == "ok" || domain_answers.contains(&code.as_str())),
        "{counts:?}"
    );
    let issued = app
        .all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "license_issued")
        .count();
    assert_eq!(issued, 1, "one license for one legacy license");
    app.stop().await;
}

async fn concurrent_lease_refreshes_and_state_reports_of_one_tenant_all_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (account_id, tenant_id) = crate::hosted::bought_msp(&app).await;
    let provisioner = format!("Bearer {}", app.staff_token(StaffRole::Provisioner).await);
    let report = json!({ "state": "active", "reason": "booted" });
    let path = format!("/v1/provisioner/accounts/{account_id}/tenants/{tenant_id}/state");
    let headers = [("authorization", provisioner.as_str())];
    let reports =
        futures_util::future::join_all((0..16).map(|_| app.post(&path, &report, &headers))).await;
    let counts = tally(&reports);
    assert!(!contended(&counts), "{counts:?}");
    assert_eq!(
        counts.get(&(200, String::from("ok"))),
        Some(&16),
        "{counts:?}"
    );

    let token = pulse_account::flows::hosted::lease_refresh_token(&app.state.keys, &tenant_id);
    let refresh = json!({ "org_id": account_id, "instance_host": "acme.cloud.example", "entitlement_refresh_token": token.expose() });
    let leases = futures_util::future::join_all(
        (0..16).map(|_| app.post("/api/entitlements/refresh", &refresh, &[])),
    )
    .await;
    let counts = tally(&leases);
    assert_eq!(
        counts,
        BTreeMap::from([((200, String::from("ok")), 16)]),
        "{counts:?}"
    );
    app.stop().await;
}

async fn sixteen_identical_activations_at_once_all_succeed_on_one_installation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, key) = crate::licensing::issue(&app, "relay").await;
    let body = json!({ "activation_key": key, "instance_name": "lab", "instance_fingerprint": "fp-same", "client_version": "6.0.1" });
    let answers =
        futures_util::future::join_all((0..16).map(|_| app.post("/v1/activate", &body, &[]))).await;
    let counts = tally(&answers);
    assert_eq!(
        counts,
        BTreeMap::from([((200, String::from("ok")), 16)]),
        "the same fingerprint activating again reuses its installation"
    );
    let installations: std::collections::BTreeSet<&str> = answers
        .iter()
        .map(|(_, body, _)| body["installation"]["installation_id"].as_str().unwrap())
        .collect();
    assert_eq!(installations.len(), 1, "{installations:?}");
    app.stop().await;
}
