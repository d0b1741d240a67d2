//! Hosted accounts over HTTP (`DOMAIN.md` §10): a paid MSP checkout opens the account with its Owner
//! and first tenant; the tenant trades its refresh token for a signed lease.

use crate::helpers::{metadata, Backend, TestApp};
use aggregates::account::OpenAccount;
use aggregates::account::{
    Account, AccountCommand, LeaseClaims, TenantState, LEASE_AUDIENCE, LEASE_ISSUER,
};
use aggregates::catalog::Catalog;
use aggregates::ids::{AccountId, TenantId};
use aggregates::log::StreamName;
use jsonwebtoken::{Algorithm, Validation};
use projections::accounts::Memberships;
use pulse_account::crypto::signing::verify_with_jwks;
use pulse_account::engine::command::load;
use pulse_account::engine::projection::wait_for_position;
use pulse_account::flows::hosted::lease_refresh_token;
use serde_json::json;
use std::time::Duration;

crate::on_both_stores!(
    an_msp_checkout_opens_the_account_and_its_tenant_refreshes_a_signed_lease,
    stripe_drives_the_hosted_subscription_and_the_leases_follow,
    a_trial_org_gets_leases_that_last_until_the_trial_ends,
);

/// Buys MSP Growth through handoff, Checkout and the signed webhook; returns the account opened
/// (checked: an MSP account whose Owner is the buyer) and its first tenant.
pub(crate) async fn bought_msp(app: &TestApp) -> (String, TenantId) {
    let request = json!({ "feature": "multi_tenant", "success_url": "https://p.example/auth/license-purchase-activate", "cancel_url": "https://p.example/", "purchase_return_jti": "jti-1" });
    let (_, handoff, _) = app.post("/v1/checkout/portal-handoff", &request, &[]).await;
    let start = json!({ "portal_handoff_id": handoff["portal_handoff_id"], "plan_key": "msp_growth", "tier": "msp", "billing_cycle": "monthly" });
    let (status, body, _) = app.post("/v1/checkout/session", &start, &[]).await;
    assert_eq!(status, 200, "{body}");
    let event = json!({ "id": "evt_msp", "object": "event", "created": 1_000, "livemode": false, "pending_webhooks": 1, "type": "checkout.session.completed",
        "data": { "object": { "id": "cs_test_fake0001", "object": "checkout.session", "customer_details": { "email": "ops@msp.example" } } } });
    let (status, answer) = app.send_webhook(&event, false).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("applied")),
        "{answer}"
    );
    let events = app.all_events().await;
    let opened = events
        .iter()
        .find(|e| e.event_type == "account_opened")
        .expect("the account is opened");
    assert_eq!(opened.payload["kind"], "msp");
    let owner = events
        .iter()
        .find(|e| e.event_type == "member_joined")
        .unwrap();
    assert_eq!(
        (
            owner.payload["role"].as_str(),
            owner.payload["email"].as_str()
        ),
        (Some("owner"), Some("ops@msp.example"))
    );
    let provisioned = events
        .iter()
        .find(|e| e.event_type == "tenant_provisioned")
        .expect("the first tenant is provisioned");
    (
        opened.stream.stream_id().to_owned(),
        TenantId::parse(provisioned.payload["tenant_id"].as_str().unwrap()).unwrap(),
    )
}

async fn an_msp_checkout_opens_the_account_and_its_tenant_refreshes_a_signed_lease(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (account_id, tenant_id) = bought_msp(&app).await;
    let (_, result) = app
        .get("/v1/checkout/session?session_id=cs_test_fake0001")
        .await;
    assert_eq!(result["status"], "fulfilled");
    assert_eq!(
        result["license_id"],
        serde_json::Value::Null,
        "a hosted purchase buys an account, not a license"
    );
    let token = lease_refresh_token(&app.state.keys, &tenant_id);
    assert!(token.expose().starts_with("etr_hosted_") && token.expose().len() == 11 + 48);

    let refresh = |host: &str, token: &str, org: &str| json!({ "org_id": org, "instance_host": host, "entitlement_refresh_token": token });
    let (status, body, _) = app
        .post(
            "/api/entitlements/refresh",
            &refresh("acme.cloud.example", token.expose(), &account_id),
            &[],
        )
        .await;
    assert_eq!(
        (
            status,
            body["code"].as_str(),
            body["details"]["reason"].as_str()
        ),
        (410, Some("lease_unavailable"), Some("tenant_inactive"))
    );

    app.account_command(
        &AccountId::parse(&account_id).unwrap(),
        AccountCommand::ChangeTenantState {
            tenant_id: tenant_id.clone(),
            to: TenantState::Active,
            reason: String::from("booted"),
        },
    )
    .await;
    let (status, body, _) = app
        .post(
            "/api/entitlements/refresh",
            &refresh("acme.cloud.example", token.expose(), &account_id),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, jwks) = app.get("/.well-known/jwks.json").await;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[LEASE_ISSUER]);
    validation.set_audience(&[LEASE_AUDIENCE]);
    let claims: LeaseClaims = verify_with_jwks(
        body["entitlement_jwt"].as_str().unwrap(),
        &jwks,
        &validation,
    )
    .expect("the lease verifies");
    assert_eq!(
        (claims.org_id.as_str(), claims.sub.as_str()),
        (account_id.as_str(), tenant_id.as_str())
    );
    assert_eq!(
        (
            claims.plan_version.as_str(),
            claims.subscription_state.as_str()
        ),
        ("msp_growth", "active")
    );
    assert_eq!(claims.limits.max_monitored_systems, 150);
    assert_eq!(claims.exp - claims.iat, 86_400);
    assert_eq!(claims.email, "ops@msp.example");

    for (host, token, org) in [
        ("other.example", token.expose(), account_id.as_str()),
        (
            "acme.cloud.example",
            "etr_hosted_000000000000000000000000000000000000000000000000",
            account_id.as_str(),
        ),
        ("acme.cloud.example", token.expose(), "a_0000000000"),
        ("acme.cloud.example", "not-a-token", account_id.as_str()),
    ] {
        let (status, body, _) = app
            .post("/api/entitlements/refresh", &refresh(host, token, org), &[])
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("lease_token_invalid")),
            "{host} {org}"
        );
    }
    let leases = app
        .all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "lease_issued")
        .count();
    assert_eq!(leases, 1, "every lease issued is an event");

    let keyed = [("idempotency-key", "lease-retry-1")];
    let once = refresh("acme.cloud.example", token.expose(), &account_id);
    let (status, first, _) = app.post("/api/entitlements/refresh", &once, &keyed).await;
    assert_eq!(status, 200, "{first}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, retried, _) = app.post("/api/entitlements/refresh", &once, &keyed).await;
    assert_eq!(
        (status, &retried),
        (200, &first),
        "a retry under the same Idempotency-Key answers the very same lease, a second later"
    );
    let other_host = refresh("b.cloud.example", token.expose(), &account_id);
    let (status, body, _) = app
        .post("/api/entitlements/refresh", &other_host, &keyed)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    let leases = app
        .all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "lease_issued")
        .count();
    assert_eq!(leases, 2, "the retry issued no lease");

    let store = app.state.store.as_ref();
    let head = aggregates::log::Position(app.db.max_position().await);
    for projection in ["accounts", "accounts_by_member_email"] {
        assert!(
            wait_for_position(store, projection, head, Duration::from_secs(5))
                .await
                .unwrap(),
            "{projection}"
        );
    }
    let document: OpenAccount = serde_json::from_value(
        store
            .read_document("accounts", &account_id)
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let (state, _) = load::<Account>(store, &StreamName::parse("account", &account_id).unwrap())
        .await
        .unwrap();
    assert_eq!(
        Some(document),
        state.account,
        "the account home's data is the decider's own fold"
    );
    let memberships: Memberships = serde_json::from_value(
        store
            .read_document("accounts_by_member_email", "ops@msp.example")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(memberships.account_ids, vec![account_id.clone()]);
    app.stop().await;
}

fn stripe_event(
    id: &str,
    event_type: &str,
    created: i64,
    object: serde_json::Value,
) -> serde_json::Value {
    json!({ "id": id, "object": "event", "created": created, "livemode": false, "pending_webhooks": 1, "type": event_type, "data": { "object": object } })
}

async fn stripe_drives_the_hosted_subscription_and_the_leases_follow(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let request = json!({ "feature": "multi_tenant", "success_url": "https://p.example/auth/license-purchase-activate", "cancel_url": "https://p.example/", "purchase_return_jti": "jti-1" });
    let (_, handoff, _) = app.post("/v1/checkout/portal-handoff", &request, &[]).await;
    let start = json!({ "portal_handoff_id": handoff["portal_handoff_id"], "plan_key": "cloud_power", "tier": "cloud", "billing_cycle": "monthly" });
    app.post("/v1/checkout/session", &start, &[]).await;
    let session = json!({ "id": "cs_test_fake0001", "object": "checkout.session", "subscription": "sub_cloud_1", "customer": "cus_cloud_1", "customer_details": { "email": "it@acme.example" } });
    app.send_webhook(
        &stripe_event("evt_c", "checkout.session.completed", 1_000, session),
        false,
    )
    .await;
    let events = app.all_events().await;
    let account_id = events
        .iter()
        .find(|e| e.event_type == "account_opened")
        .unwrap()
        .stream
        .stream_id()
        .to_owned();
    let provisioned = events
        .iter()
        .find(|e| e.event_type == "tenant_provisioned")
        .unwrap();
    let tenant_id = TenantId::parse(provisioned.payload["tenant_id"].as_str().unwrap()).unwrap();
    app.account_command(
        &AccountId::parse(&account_id).unwrap(),
        AccountCommand::ChangeTenantState {
            tenant_id: tenant_id.clone(),
            to: TenantState::Active,
            reason: String::from("booted"),
        },
    )
    .await;
    let token = lease_refresh_token(&app.state.keys, &tenant_id);
    let refresh = json!({ "org_id": account_id, "instance_host": "acme.cloud.example", "entitlement_refresh_token": token.expose() });
    let billing = |app: &TestApp| {
        let store = app.state.store.clone();
        let account_id = account_id.clone();
        async move {
            load::<Account>(
                store.as_ref(),
                &StreamName::parse("account", &account_id).unwrap(),
            )
            .await
            .unwrap()
            .0
            .account
            .unwrap()
            .billing
            .unwrap()
        }
    };

    let subscription = |status: &str, price: &str| json!({ "id": "sub_cloud_1", "object": "subscription", "status": status, "items": { "data": [{ "price": { "id": price } }] } });
    app.send_webhook(
        &stripe_event(
            "evt_u1",
            "customer.subscription.updated",
            2_000,
            subscription("active", "price_1T5kg4BrHBocJIGHHa8Ecqho"),
        ),
        false,
    )
    .await;
    assert_eq!(
        billing(&app).await.plan_version,
        "cloud_max",
        "a new price changes the hosted plan"
    );
    let invoice = json!({ "id": "in_1", "object": "invoice", "subscription": "sub_cloud_1" });
    app.send_webhook(
        &stripe_event("evt_f", "invoice.payment_failed", 2_100, invoice),
        false,
    )
    .await;
    assert_eq!(
        billing(&app).await.state,
        aggregates::subscription::SubscriptionState::Grace
    );
    let (status, _, _) = app.post("/api/entitlements/refresh", &refresh, &[]).await;
    assert_eq!(status, 200, "grace still grants a lease");
    let (_, answer) = app
        .send_webhook(
            &stripe_event(
                "evt_old",
                "customer.subscription.updated",
                1_500,
                subscription("active", "price_1T5kg2BrHBocJIGHmkoF0zXY"),
            ),
            false,
        )
        .await;
    assert_eq!(answer["outcome"], "ignored", "{answer}");
    let unchanged = billing(&app).await;
    assert_eq!(
        (unchanged.state, unchanged.plan_version.as_str()),
        (
            aggregates::subscription::SubscriptionState::Grace,
            "cloud_max"
        ),
        "an older snapshot changes nothing"
    );
    app.send_webhook(
        &stripe_event(
            "evt_d",
            "customer.subscription.deleted",
            3_000,
            subscription("canceled", "price_1T5kg4BrHBocJIGHHa8Ecqho"),
        ),
        false,
    )
    .await;
    let (status, body, _) = app.post("/api/entitlements/refresh", &refresh, &[]).await;
    assert_eq!(
        (status, body["details"]["reason"].as_str()),
        (410, Some("non_granting_state"))
    );
    app.stop().await;
}

async fn a_trial_org_gets_leases_that_last_until_the_trial_ends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let catalog = Catalog::v1();
    let (account, owner) = app.open_account(31, "t@trial.example").await;
    let (status, trial, _) = app
        .post(
            "/v1/trials/start",
            &json!({ "org_id": account.as_str() }),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{trial}");
    let tenant_id = pulse_account::flows::hosted::provision_tenant(
        app.state.store.as_ref(),
        &app.state.keys,
        &catalog,
        &account,
        (&owner, None),
        metadata(),
    )
    .await
    .expect("the trial allows a workspace");
    let token = lease_refresh_token(&app.state.keys, &tenant_id);
    app.account_command(
        &account,
        AccountCommand::ChangeTenantState {
            tenant_id,
            to: TenantState::Active,
            reason: String::from("booted"),
        },
    )
    .await;
    let refresh = json!({ "org_id": account.as_str(), "instance_host": "trial.cloud.example", "entitlement_refresh_token": token.expose() });
    let (status, body, _) = app.post("/api/entitlements/refresh", &refresh, &[]).await;
    assert_eq!(status, 200, "{body}");
    let (_, jwks) = app.get("/.well-known/jwks.json").await;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[LEASE_AUDIENCE]);
    let claims: LeaseClaims = verify_with_jwks(
        body["entitlement_jwt"].as_str().unwrap(),
        &jwks,
        &validation,
    )
    .unwrap();
    assert_eq!(
        (
            claims.plan_version.as_str(),
            claims.subscription_state.as_str(),
            claims.limits.max_monitored_systems
        ),
        ("trial", "trial", 15)
    );
    let ends = chrono::DateTime::parse_from_rfc3339(trial["trial_ends_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(
        (claims.trial_ends_at, claims.exp),
        (Some(ends), ends),
        "a trial lease lasts until the trial ends"
    );
    app.stop().await;
}
