//! Self-hosted licensing over HTTP (`DOMAIN.md` §5.2, §5.3): activation, installations, grants that
//! verify against the JWKS alone, refresh and status, revocation, idempotent retries, bad input.

use crate::helpers::{metadata, Backend, TestApp, TestDatabase};
use aggregates::catalog::{BillingCycle, Catalog};
use aggregates::decider::Context;
use aggregates::ids::Email;
use aggregates::license::{GrantClaims, License, LicenseCommand, LicenseOrigin, RevocationReason};
use jsonwebtoken::{Algorithm, Validation};
use pulse_account::crypto::signing::verify_with_jwks;
use pulse_account::crypto::{KeyConfig, KeyMaterial};
use pulse_account::engine::command::{handle, Command};
use pulse_account::engine::projection::registry;
use pulse_account::engine::projection::runner::{Runner, RunnerConfig};
use pulse_account::flows::licensing::{ActivateRequest, Licensing, NewLicense, TokenBindings};
use pulse_account::metrics::Metrics;
use serde_json::{json, Value};
use std::sync::Arc;

crate::on_both_stores!(
    an_activation_answers_with_the_license_the_installation_and_a_grant_that_verifies_against_the_jwks,
    a_fourth_installation_is_refused_and_the_same_fingerprint_rotates_its_token,
    refresh_and_status_follow_the_license_and_revocation_answers_license_revoked,
    a_retried_activation_answers_the_same_and_a_reused_key_is_refused,
    bad_input_gets_a_clear_error_and_changes_nothing,
    entitlements_come_from_the_read_model_only_while_it_has_folded_the_whole_license,
);

pub(crate) async fn issue(app: &TestApp, plan: &str) -> (String, String) {
    let licensing = Licensing {
        store: app.state.store.as_ref(),
        bindings: &app.state.token_bindings,
        cache: None,
        keys: &app.state.keys,
        catalog: &app.state.catalog,
    };
    let issued = licensing
        .issue(
            NewLicense {
                owner_email: Email::parse("owner@example.com").unwrap(),
                plan_version: plan.to_owned(),
                billing_cycle: Some(BillingCycle::Monthly),
                current_period_end: Some(chrono::Utc::now() + chrono::Duration::days(30)),
                origin: LicenseOrigin::Checkout {
                    session_id: String::from("cs_test_1"),
                },
                stripe_price_id: None,
            },
            metadata(),
            None,
        )
        .await
        .unwrap();
    (
        issued.license_id.to_string(),
        issued.activation_key.expose().to_owned(),
    )
}

fn activation(key: &str, fingerprint: &str) -> Value {
    json!({ "activation_key": key, "instance_name": "pulse-lab", "instance_fingerprint": fingerprint, "client_version": "6.0.1" })
}

async fn verified_claims(app: &TestApp, jwt: &str) -> GrantClaims {
    let (status, jwks) = app.get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    verify_with_jwks(jwt, &jwks, &Validation::new(Algorithm::EdDSA))
        .expect("the grant verifies against the JWKS alone")
}

async fn an_activation_answers_with_the_license_the_installation_and_a_grant_that_verifies_against_the_jwks(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (license_id, key) = issue(&app, "pro").await;
    let (status, body, _) = app
        .post("/v1/activate", &activation(&key, "fp-1"), &[])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["license"]["license_id"], license_id.as_str());
    assert_eq!(body["license"]["state"], "active");
    assert_eq!(body["license"]["tier"], "pro");
    assert_eq!(body["license"]["license_version"], 1);
    assert!(body["license"]["features"]
        .as_array()
        .unwrap()
        .contains(&json!("rbac")));
    assert_eq!(body["installation"]["status"], "active");
    let token = body["installation"]["installation_token"].as_str().unwrap();
    assert!(
        token.starts_with("pit_live_") && token.len() == 61,
        "{token}"
    );
    assert_eq!(
        body["refresh_policy"],
        json!({ "recommended_refresh_after_sec": 21600, "jitter_percent": 20 })
    );
    let claims = verified_claims(&app, body["grant"]["jwt"].as_str().unwrap()).await;
    assert_eq!(claims.lid, license_id);
    assert_eq!(
        claims.iid,
        body["installation"]["installation_id"].as_str().unwrap()
    );
    assert_eq!(
        (
            claims.st.as_str(),
            claims.plan.as_str(),
            claims.max_monitored_systems
        ),
        ("active", "pro", 15)
    );
    assert_eq!(claims.jti, body["grant"]["jti"].as_str().unwrap());
    assert_eq!(claims.email, "owner@example.com");
    app.stop().await;
}

async fn a_fourth_installation_is_refused_and_the_same_fingerprint_rotates_its_token(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (_, key) = issue(&app, "relay").await;
    let mut tokens = Vec::new();
    for fingerprint in ["fp-1", "fp-2", "fp-3"] {
        let (status, body, _) = app
            .post("/v1/activate", &activation(&key, fingerprint), &[])
            .await;
        assert_eq!(status, 200, "{body}");
        tokens.push(
            body["installation"]["installation_token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let (status, body, _) = app
        .post("/v1/activate", &activation(&key, "fp-4"), &[])
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "MAX_INSTALLATIONS");
    assert_eq!(body["details"], json!({ "current": 3, "limit": 3 }));

    let refresh = |token: String| {
        let app = &app;
        async move {
            let response = app
                .client
                .post(format!("{}/v1/grants/refresh", app.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    // The token works, and this process now remembers its binding.
    let (status, body) = refresh(tokens[1].clone()).await;
    assert_eq!(status, 200, "{body}");

    let (status, again, _) = app
        .post("/v1/activate", &activation(&key, "fp-2"), &[])
        .await;
    assert_eq!(status, 200);
    let first_id = again["installation"]["installation_id"].clone();
    let new_token = again["installation"]["installation_token"]
        .as_str()
        .unwrap();
    assert_ne!(new_token, tokens[1], "re-activation issues a new token");
    let (status, body) = refresh(tokens[1].clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("TOKEN_REVOKED")),
        "the old token is revoked"
    );
    let (status, body) = refresh(new_token.to_owned()).await;
    assert_eq!(status, 200, "{body}");
    let claims = verified_claims(&app, body["grant"]["jwt"].as_str().unwrap()).await;
    assert_eq!(
        json!(claims.iid),
        first_id,
        "the same fingerprint keeps its installation"
    );
    app.stop().await;
}

async fn refresh_and_status_follow_the_license_and_revocation_answers_license_revoked(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (license_id, key) = issue(&app, "pro").await;
    let (_, body, _) = app
        .post("/v1/activate", &activation(&key, "fp-1"), &[])
        .await;
    let token = body["installation"]["installation_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];

    let (status, body, _) = app
        .post("/v1/grants/status", &json!({ "license_version": 1 }), &auth)
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({ "license_version": 1, "refresh_required": false })
        )
    );
    let (status, body, _) = app.post("/v1/grants/refresh", &json!({}), &auth).await;
    assert_eq!(status, 200, "{body}");
    let first_jti = body["grant"]["jti"].clone();

    let catalog = Catalog::v1();
    handle::<License>(
        app.state.store.as_ref(),
        Command {
            stream_id: &license_id,
            command: &LicenseCommand::Revoke {
                reason: RevocationReason::Refund,
                reference: String::from("re_1"),
            },
            context: Context::new(chrono::Utc::now(), &catalog),
            metadata: metadata(),
            idempotency: None,
        },
    )
    .await
    .unwrap();
    let (status, body, _) = app
        .post("/v1/grants/status", &json!({ "license_version": 1 }), &auth)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("LICENSE_REVOKED")),
        "{body}"
    );
    let (status, body, _) = app.post("/v1/grants/refresh", &json!({}), &auth).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("LICENSE_REVOKED"))
    );
    assert_ne!(first_jti, Value::Null);
    app.stop().await;
}

async fn a_retried_activation_answers_the_same_and_a_reused_key_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, key) = issue(&app, "pro").await;
    let headers = [("idempotency-key", "activate-attempt-1")];
    let (status, first, _) = app
        .post("/v1/activate", &activation(&key, "fp-1"), &headers)
        .await;
    assert_eq!(status, 200, "{first}");
    let head = app.db.max_position().await;
    let (status, again, _) = app
        .post("/v1/activate", &activation(&key, "fp-1"), &headers)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        again, first,
        "the same key and request answer exactly the same, token and grant included"
    );
    assert_eq!(app.db.max_position().await, head, "the retry wrote nothing");
    let (status, refused, _) = app
        .post("/v1/activate", &activation(&key, "fp-2"), &headers)
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    app.stop().await;
}

async fn bad_input_gets_a_clear_error_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, key) = issue(&app, "pro").await;
    let head = app.db.max_position().await;
    let unknown = format!("ppk_live_{}", "A".repeat(52));
    type Case<'a> = (Value, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            activation(&unknown, "fp"),
            vec![],
            401,
            "invalid_activation_key",
        ),
        (
            activation("not-a-key", "fp"),
            vec![],
            401,
            "invalid_activation_key",
        ),
        (
            json!({ "activation_key": key }),
            vec![],
            400,
            "invalid_request",
        ),
        (
            json!({ "activation_key": key, "instance_name": "x", "instance_fingerprint": "f", "client_version": "1", "extra": 1 }),
            vec![],
            400,
            "invalid_request",
        ),
        (activation(&key, ""), vec![], 400, "invalid_request"),
        (
            activation(&key, "fp"),
            vec![("idempotency-key", "")],
            400,
            "invalid_request",
        ),
    ];
    for (body, headers, status, code) in cases {
        let (got, answer, _) = app.post("/v1/activate", &body, &headers).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
        assert!(answer["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()));
        assert!(answer["message"].is_string() && answer["details"].is_object());
    }
    let (status, body, _) = app.post("/v1/grants/refresh", &json!({}), &[]).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, body, _) = app
        .post(
            "/v1/grants/refresh",
            &json!({}),
            &[("authorization", "Bearer pit_live_nope")],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("TOKEN_REVOKED"))
    );
    assert_eq!(app.db.max_position().await, head, "nothing was written");
    app.stop().await;
}

async fn entitlements_come_from_the_read_model_only_while_it_has_folded_the_whole_license(
    backend: Backend,
) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let directory = tempfile::tempdir().unwrap();
    let keys = KeyMaterial::load(&KeyConfig::default(), directory.path()).unwrap();
    let catalog = Catalog::v1();
    let bindings = TokenBindings::default();
    let licensing = Licensing {
        store: store.as_ref(),
        bindings: &bindings,
        cache: None,
        keys: &keys,
        catalog: &catalog,
    };
    let new_license = NewLicense {
        owner_email: Email::parse("owner@example.com").unwrap(),
        plan_version: String::from("pro"),
        billing_cycle: Some(BillingCycle::Monthly),
        current_period_end: Some(chrono::Utc::now() + chrono::Duration::days(30)),
        origin: LicenseOrigin::Checkout {
            session_id: String::from("cs_test_1"),
        },
        stripe_price_id: None,
    };
    let issued = licensing
        .issue(new_license, metadata(), None)
        .await
        .unwrap();
    let request = ActivateRequest {
        activation_key: issued.activation_key.expose().to_owned(),
        instance_name: String::from("pulse-lab"),
        instance_fingerprint: String::from("fp-1"),
        client_version: String::from("6.0.1"),
    };
    let activation = licensing
        .activate(&request, None, metadata())
        .await
        .unwrap();
    let token = activation.installation_token.expose();
    let plan = || async {
        let (_, _, entitlements) = licensing
            .entitlements(token, chrono::Utc::now(), None)
            .await
            .unwrap();
        entitlements.plan_version
    };
    assert_eq!(
        plan().await,
        "pro",
        "with no read model, the stream answers"
    );

    let licenses = registry()
        .into_iter()
        .find(|fold| fold.name() == "licenses")
        .unwrap();
    Runner::new(
        Arc::clone(&store),
        licenses,
        RunnerConfig::rebuild(),
        Arc::new(Metrics::default()),
    )
    .unwrap()
    .rebuild(&mut |_, _| {})
    .await
    .unwrap();
    db.execute(match backend {
        Backend::Sqlite => {
            "UPDATE projection_documents SET body = json_set(body, '$.plan_version', 'relay') \
             WHERE projection = 'licenses'"
        }
        Backend::Postgres => {
            "UPDATE projection_documents SET body = jsonb_set(body, '{plan_version}', '\"relay\"') \
             WHERE projection = 'licenses'"
        }
    })
    .await;
    assert_eq!(
        plan().await,
        "relay",
        "a read model that has folded the whole stream answers (marked here to tell)"
    );

    licensing
        .refresh_grant(token, None, metadata())
        .await
        .unwrap();
    assert_eq!(
        plan().await,
        "pro",
        "once the stream moves past the read model, the stream answers again"
    );
    db.cleanup().await;
}
