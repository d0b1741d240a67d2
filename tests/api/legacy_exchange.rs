//! The legacy v5 exchange over HTTP (`DOMAIN.md` §5.4): success creates a migrated license and
//! activates the installation; each failure answers its status and code.

use crate::helpers::{Backend, TestApp, LEGACY_SEED};
use pulse_account::crypto::signing::Signer;
use serde_json::{json, Value};

crate::on_both_stores!(
    a_valid_v5_token_becomes_a_migrated_license_and_an_activation,
    each_exchange_failure_answers_its_code,
    too_many_exchanges_of_one_legacy_license_are_rate_limited,
    a_retried_exchange_answers_the_same_activation,
);

pub(crate) fn token(claims: Value) -> String {
    Signer::from_seed("v5", LEGACY_SEED)
        .unwrap()
        .sign(&claims)
        .unwrap()
}

pub(crate) fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "email": "v5@example.com", "billing_cycle": "annual", "exp": chrono::Utc::now().timestamp() + 3_600 })
}

pub(crate) fn body(token: &str, fingerprint: &str) -> Value {
    json!({ "legacy_license_token": token, "instance_name": "v5-box", "instance_fingerprint": fingerprint, "client_version": "6.0.0" })
}

async fn a_valid_v5_token_becomes_a_migrated_license_and_an_activation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let legacy = token(claims("v5-100"));
    let (status, first, _) = app
        .post("/v1/licenses/exchange", &body(&legacy, "fp-1"), &[])
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["license"]["state"], "active");
    assert!(first["installation"]["installation_token"]
        .as_str()
        .unwrap()
        .starts_with("pit_live_"));
    let token_value = first["installation"]["installation_token"]
        .as_str()
        .unwrap();
    let response = app
        .client
        .get(format!("{}/v1/entitlements", app.base))
        .bearer_auth(token_value)
        .send()
        .await
        .unwrap();
    let entitlements: Value = response.json().await.unwrap();
    assert_eq!(entitlements["plan_version"], "v5_pro_annual_grandfathered");
    assert_eq!(
        entitlements["continuity"]["capture_pending"], true,
        "a migrated license awaits its floor"
    );
    let alias = json!({ "legacy_license_key": legacy, "instance_name": "v5-box-2", "instance_fingerprint": "fp-2", "client_version": "6.0.0" });
    let (status, second, _) = app.post("/v1/licenses/exchange", &alias, &[]).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second["license"]["license_id"], first["license"]["license_id"],
        "a repeated exchange lands on the same license"
    );
    app.stop().await;
}

async fn each_exchange_failure_answers_its_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let now = chrono::Utc::now().timestamp();
    let foreign = Signer::from_seed("other", [9; 32])
        .unwrap()
        .sign(&claims("v5-200"))
        .unwrap();
    let cases = [
        (String::from("not-a-jwt"), 400, "exchange_malformed"),
        (String::from("a.b.c"), 400, "exchange_malformed"),
        (foreign, 401, "exchange_invalid"),
        (
            token(json!({ "sub": "v5-201", "email": "v5@example.com", "exp": now - 3_600 })),
            401,
            "exchange_invalid",
        ),
        (
            token(
                json!({ "sub": "v5-202", "email": "v5@example.com", "exp": now + 60, "superseded": true }),
            ),
            401,
            "RENEWED_KEY_AVAILABLE",
        ),
        (
            token(
                json!({ "sub": "v5-203", "email": "v5@example.com", "exp": now + 60, "revoked": true }),
            ),
            403,
            "exchange_revoked",
        ),
        (
            token(
                json!({ "sub": "v5-204", "email": "v5@example.com", "exp": now + 60, "migratable": false }),
            ),
            410,
            "exchange_not_migratable",
        ),
    ];
    for (legacy, status, code) in cases {
        let (got, answer, _) = app
            .post("/v1/licenses/exchange", &body(&legacy, "fp-1"), &[])
            .await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
    }
    let events = app.all_events().await;
    let failed = events
        .iter()
        .filter(|e| e.event_type == "legacy_exchange_failed")
        .count();
    assert_eq!(failed, 3, "verified tokens' failures are recorded");
    let legacy = token(claims("v5-300"));
    for fingerprint in ["fp-1", "fp-2", "fp-3"] {
        assert_eq!(
            app.post("/v1/licenses/exchange", &body(&legacy, fingerprint), &[])
                .await
                .0,
            200
        );
    }
    let (status, answer, _) = app
        .post("/v1/licenses/exchange", &body(&legacy, "fp-4"), &[])
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("MAX_INSTALLATIONS"))
    );
    app.stop().await;
}

async fn too_many_exchanges_of_one_legacy_license_are_rate_limited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let legacy = token(
        json!({ "sub": "v5-400", "email": "v5@example.com", "exp": chrono::Utc::now().timestamp() + 600, "revoked": true }),
    );
    for _ in 0..10 {
        assert_eq!(
            app.post("/v1/licenses/exchange", &body(&legacy, "fp"), &[])
                .await
                .0,
            403
        );
    }
    let (status, answer, headers) = app
        .post("/v1/licenses/exchange", &body(&legacy, "fp"), &[])
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (429, Some("exchange_rate_limited"))
    );
    assert_eq!(
        json!(headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()),
        answer["details"]["retry_after_seconds"]
    );
    app.stop().await;
}

async fn a_retried_exchange_answers_the_same_activation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let legacy = token(claims("v5-500"));
    let key = [("idempotency-key", "exchange-1")];
    let (status, first, _) = app
        .post("/v1/licenses/exchange", &body(&legacy, "fp-1"), &key)
        .await;
    assert_eq!(status, 200, "{first}");
    let (status, again, _) = app
        .post("/v1/licenses/exchange", &body(&legacy, "fp-1"), &key)
        .await;
    assert_eq!(
        (status, &again),
        (200, &first),
        "same token, installation and grant"
    );
    let (status, refused, _) = app
        .post("/v1/licenses/exchange", &body(&legacy, "fp-2"), &key)
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    app.stop().await;
}
