//! What the portal shows of a customer's ledger, from outside (issue 14): an account's Activity —
//! its own history from the log, newest first, naming who did what as the members know them,
//! without the runtime's routine, readable by any member and nobody else — and a license owner's
//! self-hosted licenses with their installations and limits.

use crate::helpers::{call, Backend, TestApp};
use crate::hosted::bought_msp;
use crate::on_both_stores;
use crate::sign_in::{signed_in, OWNER};
use serde_json::json;

on_both_stores!(
    members_see_what_changed_in_their_account_and_who_did_it,
    a_license_owner_sees_their_licenses_installations_and_limits,
);

async fn members_see_what_changed_in_their_account_and_who_did_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (account, _) = bought_msp(&app).await;
    let owner = signed_in(&app, OWNER).await;
    let members = format!("/api/accounts/{account}/members");
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        &members,
        Some(&owner),
        Some(json!({ "email": "tech@msp.example", "role": "tech" })),
    )
    .await;
    assert_eq!(status, 202);
    let tech = signed_in(&app, "tech@msp.example").await;
    let (_, me) = crate::sign_in::bootstrap(&app, Some(&tech)).await;
    let tech_id = me["user_id"].as_str().unwrap();
    let (status, _) = call(
        &app,
        reqwest::Method::PATCH,
        &format!("{members}/{tech_id}"),
        Some(&owner),
        Some(json!({ "role": "read_only" })),
    )
    .await;
    assert_eq!(status, 200);

    let (status, activity) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/accounts/{account}/activity"),
        Some(&tech),
        None,
    )
    .await;
    assert_eq!(status, 200, "any member reads the activity: {activity}");
    let entries = activity["entries"].as_array().unwrap();
    let whats: Vec<&str> = entries
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        whats.first(),
        Some(&"A member's role changed"),
        "newest first: {whats:?}"
    );
    assert_eq!(entries[0]["who"], OWNER, "named as the members know them");
    assert!(whats.contains(&"Someone was invited"), "{whats:?}");
    assert!(whats.contains(&"A member joined"), "{whats:?}");
    assert_eq!(whats.last(), Some(&"The account was opened"), "{whats:?}");
    assert_eq!(
        entries.last().unwrap()["who"],
        "Stripe",
        "a checkout opened it"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["changes"].as_array().is_some_and(|c| !c.is_empty())),
        "what an event changed is shown: {activity}"
    );

    let (other, _) = app.open_account(81, "else@other.example").await;
    let (status, body) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/accounts/{other}/activity"),
        Some(&tech),
        None,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    app.stop().await;
}

async fn a_license_owner_sees_their_licenses_installations_and_limits(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, result) = crate::installation_flows::bought(&app).await;
    crate::installation_flows::activate_as(
        &app,
        result["activation_key"].as_str().unwrap(),
        "rack-7",
    )
    .await;
    let buyer = signed_in(&app, "buyer@example.com").await;
    let (status, owned) = call(
        &app,
        reqwest::Method::GET,
        "/api/portal/licenses",
        Some(&buyer),
        None,
    )
    .await;
    assert_eq!(status, 200, "{owned}");
    let license = &owned["licenses"][0];
    assert_eq!(license["license_id"], result["license_id"]);
    assert_eq!(license["plan_version"], "pro");
    assert_eq!(license["state"], "active");
    assert_eq!(license["plan_limit"], 15);
    assert_eq!(license["effective_limit"], 15);
    assert_eq!(license["installations"][0]["instance_name"], "rack-7");
    assert_eq!(license["installations"][0]["active"], true);
    let (_, me) = crate::sign_in::bootstrap(&app, Some(&buyer)).await;
    assert_eq!(me["has_self_hosted_commercial"], true);
    assert_eq!(me["accounts"], json!([]));
    app.stop().await;
}
