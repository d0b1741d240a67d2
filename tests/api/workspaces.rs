//! Workspaces from the portal, from outside (`../shared/design/PORTAL.md` §3, issue 14): created
//! until the plan is full (`workspace_limit_reached` with current and limit), deleting frees a
//! place, a Tech may list and open but not create or delete, and opening a running workspace hands
//! off a 60-second EdDSA JWT to its `/auth/cloud-handoff` that verifies against the JWKS alone.

use crate::helpers::{call, Backend, TestApp};
use crate::on_both_stores;
use crate::sign_in::signed_in;
use aggregates::account::{Account, AccountCommand, AccountKind, TenantState};
use aggregates::ids::{AccountId, Email, TenantId, UserId};
use aggregates::subscription::SubscriptionState;
use aggregates::user::{User, UserCommand};
use serde_json::{json, Value};

on_both_stores!(
    workspaces_are_created_until_the_plan_is_full_and_deleting_frees_a_place,
    opening_a_running_workspace_hands_off_a_short_lived_jwt_that_verifies_against_the_jwks,
);

pub(crate) const OWNER: &str = "owner@cloud.example";

/// A Cloud Power account (one workspace) whose Owner is a user who may sign in; returns its id.
pub(crate) async fn cloud_account(app: &TestApp) -> AccountId {
    let owner = UserId::from_entropy(77);
    let person = pulse_account::crypto::personal::person_id(&app.state.keys.hasher, OWNER);
    app.command::<User>(
        &person,
        UserCommand::Register {
            user_id: owner.clone(),
            email: Email::parse(OWNER).unwrap(),
        },
    )
    .await;
    let account = AccountId::from_entropy(78);
    for command in [
        AccountCommand::Open {
            account_id: account.clone(),
            kind: AccountKind::Individual,
            display_name: String::from("Cloud Co"),
            owner,
            owner_email: Email::parse(OWNER).unwrap(),
        },
        AccountCommand::RecordBilling {
            plan_version: String::from("cloud_power"),
            state: SubscriptionState::Active,
        },
    ] {
        app.command::<Account>(account.as_str(), command).await;
    }
    account
}

/// Invites `email` as `role` and signs them in; returns their session.
async fn member(
    app: &TestApp,
    account: &AccountId,
    owner: &str,
    email: &str,
    role: &str,
) -> String {
    let (status, _) = call(
        app,
        reqwest::Method::POST,
        &format!("/api/accounts/{account}/members"),
        Some(owner),
        Some(json!({ "email": email, "role": role })),
    )
    .await;
    assert_eq!(status, 202);
    signed_in(app, email).await
}

async fn workspaces_are_created_until_the_plan_is_full_and_deleting_frees_a_place(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let account = cloud_account(&app).await;
    let owner = signed_in(&app, OWNER).await;
    let tech = member(&app, &account, &owner, "tech@cloud.example", "tech").await;
    let tenants = format!("/api/accounts/{account}/tenants");

    let (status, list) = call(&app, reqwest::Method::GET, &tenants, Some(&owner), None).await;
    assert_eq!(status, 200);
    assert_eq!(list["usage"], json!({ "current": 0, "limit": 1 }));
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        &tenants,
        Some(&tech),
        Some(json!({ "display_name": "Tech's" })),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "a Tech creates none"
    );

    let (status, created) = call(
        &app,
        reqwest::Method::POST,
        &tenants,
        Some(&owner),
        Some(json!({ "display_name": "  Staging " })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["display_name"], "Staging");
    assert_eq!(created["state"], "provisioning");
    let (status, full) = call(
        &app,
        reqwest::Method::POST,
        &tenants,
        Some(&owner),
        Some(json!({ "display_name": "Second" })),
    )
    .await;
    assert_eq!(
        (status, full["code"].as_str()),
        (403, Some("workspace_limit_reached")),
        "{full}"
    );
    assert_eq!(full["details"], json!({ "current": 1, "limit": 1 }));

    let (status, list) = call(&app, reqwest::Method::GET, &tenants, Some(&tech), None).await;
    assert_eq!(status, 200, "a Tech lists workspaces");
    assert_eq!(list["tenants"][0]["display_name"], "Staging");
    let tenant = created["tenant_id"].as_str().unwrap();
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        &format!("{tenants}/{tenant}/handoff"),
        Some(&tech),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("workspace_not_ready")),
        "a workspace still provisioning does not open"
    );
    let (status, body) = call(
        &app,
        reqwest::Method::DELETE,
        &format!("{tenants}/{tenant}"),
        Some(&tech),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "a Tech deletes none"
    );

    let (status, _) = call(
        &app,
        reqwest::Method::DELETE,
        &format!("{tenants}/{tenant}"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (_, list) = call(&app, reqwest::Method::GET, &tenants, Some(&owner), None).await;
    assert_eq!(
        list["usage"],
        json!({ "current": 0, "limit": 1 }),
        "deleting frees the place"
    );
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        &tenants,
        Some(&owner),
        Some(json!({ "display_name": "Again" })),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        &tenants,
        Some(&owner),
        Some(json!({ "display_name": "x".repeat(81) })),
    )
    .await;
    assert_eq!(
        (status, body["details"]["field"].as_str()),
        (400, Some("display_name")),
        "a name over 80 characters is refused, naming the field: {body}"
    );
    let (status, _) = call(
        &app,
        reqwest::Method::DELETE,
        &format!("{tenants}/t-%00"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(status, 400);
    app.stop().await;
}

async fn opening_a_running_workspace_hands_off_a_short_lived_jwt_that_verifies_against_the_jwks(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let account = cloud_account(&app).await;
    let owner = signed_in(&app, OWNER).await;
    let tech = member(&app, &account, &owner, "tech@cloud.example", "tech").await;
    let tenants = format!("/api/accounts/{account}/tenants");
    let (_, created) = call(
        &app,
        reqwest::Method::POST,
        &tenants,
        Some(&owner),
        Some(json!({ "display_name": "Prod" })),
    )
    .await;
    let tenant = TenantId::parse(created["tenant_id"].as_str().unwrap()).unwrap();
    app.account_command(
        &account,
        AccountCommand::ChangeTenantState {
            tenant_id: tenant.clone(),
            to: TenantState::Active,
            reason: String::from("booted"),
        },
    )
    .await;
    let refresh = json!({ "org_id": account.as_str(), "instance_host": "prod.cloud.example", "entitlement_refresh_token": pulse_account::flows::hosted::lease_refresh_token(&app.state.keys, &tenant).expose() });
    let (status, _, _) = app.post("/api/entitlements/refresh", &refresh, &[]).await;
    assert_eq!(status, 200, "the runtime's first lease pins its host");

    let (status, handoff) = call(
        &app,
        reqwest::Method::POST,
        &format!("{tenants}/{tenant}/handoff"),
        Some(&tech),
        None,
    )
    .await;
    assert_eq!(status, 200, "{handoff}");
    let url = handoff["url"].as_str().unwrap();
    let token = url
        .strip_prefix("https://prod.cloud.example/auth/cloud-handoff?token=")
        .expect("to the workspace's own host");
    let (_, jwks) = app.get("/.well-known/jwks.json").await;
    let claims = verified_handoff(&jwks, token);
    assert_eq!(claims["org_id"], account.as_str());
    assert_eq!(claims["tenant_id"], tenant.as_str());
    assert_eq!(claims["email"], "tech@cloud.example");
    assert_eq!(
        claims["role"], "editor",
        "a Tech is an editor inside the workspace"
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
    let (_, again) = call(
        &app,
        reqwest::Method::POST,
        &format!("{tenants}/{tenant}/handoff"),
        Some(&owner),
        None,
    )
    .await;
    assert_ne!(
        again["url"], handoff["url"],
        "each handoff is its own (a new jti)"
    );

    let (other, _) = app.open_account(79, "else@other.example").await;
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        &format!("/api/accounts/{other}/tenants/{tenant}/handoff"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    app.stop().await;
}

/// The claims of a workspace handoff, verified as a workspace would: with the published JWKS
/// alone, audience and issuer checked.
pub(crate) fn verified_handoff(jwks: &Value, token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .expect("the signing key is published");
    let decoding =
        jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["pulse-cloud-handoff"]);
    validation.set_issuer(&["pulse-account"]);
    jsonwebtoken::decode::<Value>(token, &decoding, &validation)
        .unwrap()
        .claims
}
