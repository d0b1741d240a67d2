//! Staff and service access over HTTP (issues 4 and 5): support reads an account's home and
//! licenses, the provisioner works its queue of tenants, every request made with a staff token is
//! recorded in the log, and a token is issued and revoked from the command line.

use crate::helpers::{Backend, TestApp};
use crate::hosted::bought_msp;
use aggregates::log::Position;
use aggregates::staff::StaffRole;
use pulse_account::engine::projection::wait_for_position;
use pulse_account::flows::hosted::lease_refresh_token;
use serde_json::{json, Value};
use std::time::Duration;

crate::on_both_stores!(
    support_reads_an_account_home_and_every_staff_request_is_recorded,
    support_reads_licenses_by_owner_email_and_by_id,
    the_provisioner_boots_a_tenant_from_its_queue_and_the_tenant_gets_leases,
    a_token_issued_from_the_command_line_works_until_it_is_revoked,
    support_replays_a_license_and_an_account_event_by_event,
    an_auditor_streams_an_export_that_verifies_offline,
);

/// A fresh token with `role`, issued through the library as the CLI does.
async fn token(app: &TestApp, role: StaffRole) -> String {
    app.staff_token(role).await
}

async fn get_as(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until every read model has folded the whole log.
pub(crate) async fn caught_up(app: &TestApp) {
    let head = Position(app.db.max_position().await);
    for projection in [
        "accounts",
        "licenses",
        "licenses_by_email",
        "tenant_work",
        "subject_streams",
    ] {
        assert!(
            wait_for_position(
                app.state.store.as_ref(),
                projection,
                head,
                Duration::from_secs(10)
            )
            .await
            .unwrap(),
            "{projection} never caught up"
        );
    }
}

async fn recorded_accesses(app: &TestApp) -> Vec<Value> {
    app.all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "staff_access_recorded")
        .map(|e| e.payload)
        .collect()
}

async fn support_reads_an_account_home_and_every_staff_request_is_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (account_id, tenant_id) = bought_msp(&app).await;
    caught_up(&app).await;
    let support = token(&app, StaffRole::Support).await;
    let path = format!("/v1/staff/accounts/{account_id}");

    let (status, home) = get_as(&app, &path, &support).await;
    assert_eq!(status, 200, "{home}");
    assert_eq!(
        (home["kind"].as_str(), home["kind_label"].as_str()),
        (Some("msp"), Some("MSP"))
    );
    assert_eq!(home["billing"]["plan_version"], "msp_growth");
    assert_eq!(home["billing"]["state"], "active");
    assert_eq!(home["workspaces"]["current"], 1);
    assert_eq!(home["tenants"][0]["tenant_id"], tenant_id.as_str());
    assert_eq!(home["tenants"][0]["state"], "provisioning");
    assert_eq!(home["tenants"][0]["lease_unavailable"], "tenant_inactive");
    assert_eq!(home["members"][0]["email"], "ops@msp.example");
    assert_eq!(home["members"][0]["role"], "Owner");
    assert_eq!(home["actions_needed"], json!([]));

    let accesses = recorded_accesses(&app).await;
    assert_eq!(
        accesses.len(),
        1,
        "the read was recorded before it was answered"
    );
    assert_eq!(
        (
            accesses[0]["role"].as_str(),
            accesses[0]["method"].as_str(),
            accesses[0]["path"].as_str()
        ),
        (Some("support"), Some("GET"), Some(path.as_str()))
    );

    let (status, body) = get_as(&app, "/v1/staff/accounts/a_0000000000", &support).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = get_as(&app, "/v1/staff/accounts/not-an-id", &support).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    let auditor = token(&app, StaffRole::Auditor).await;
    let (status, body) = get_as(&app, &path, &auditor).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    for bad in [
        String::from("nonsense"),
        format!("{}x", &support[..support.len() - 1]),
        support.replace('.', ""),
    ] {
        let (status, body) = get_as(&app, &path, &bad).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthorized")),
            "{bad}"
        );
    }
    let (status, body) = app.get(&path).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(
        recorded_accesses(&app).await.len(),
        4,
        "every request of a valid token is recorded, refused ones too; no request of an invalid one is"
    );
    app.stop().await;
}

/// Buys Pro for buyer@example.com through handoff, Checkout and the signed webhook.
async fn bought_pro(app: &TestApp) {
    let request = json!({ "feature": "max_monitored_systems", "success_url": "https://p.example/auth/license-purchase-activate", "cancel_url": "https://p.example/", "purchase_return_jti": "jti-1" });
    let (_, handoff, _) = app.post("/v1/checkout/portal-handoff", &request, &[]).await;
    let start = json!({ "portal_handoff_id": handoff["portal_handoff_id"], "plan_key": "pro", "tier": "pro", "billing_cycle": "monthly" });
    app.post("/v1/checkout/session", &start, &[]).await;
    let event = json!({ "id": "evt_1", "object": "event", "created": 1_000, "livemode": false, "pending_webhooks": 1, "type": "checkout.session.completed",
        "data": { "object": { "id": "cs_test_fake0001", "object": "checkout.session", "customer_details": { "email": "buyer@example.com" } } } });
    let (status, _) = app.send_webhook(&event, false).await;
    assert_eq!(status, 200);
    caught_up(app).await;
}

async fn support_reads_licenses_by_owner_email_and_by_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_pro(&app).await;
    let support = token(&app, StaffRole::Support).await;

    let (status, owned) =
        get_as(&app, "/v1/staff/licenses?email=Buyer@Example.com", &support).await;
    assert_eq!(status, 200, "{owned}");
    assert_eq!(owned["email"], "buyer@example.com", "emails are canonical");
    assert_eq!(owned["truncated"], false);
    let license = &owned["licenses"][0];
    assert_eq!(license["billing"]["plan_version"], "pro");
    assert_eq!(license["billing"]["state"], "active");
    assert_eq!(license["entitlements"]["valid"], true);
    let license_id = license["billing"]["license_id"].as_str().unwrap();

    let (status, one) = get_as(&app, &format!("/v1/staff/licenses/{license_id}"), &support).await;
    assert_eq!((status, &one), (200, license));
    let (status, none) = get_as(
        &app,
        "/v1/staff/licenses?email=nobody@example.com",
        &support,
    )
    .await;
    assert_eq!(
        (status, none["licenses"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (status, body) = get_as(&app, "/v1/staff/licenses?email=not-an-email", &support).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = get_as(&app, "/v1/staff/licenses?mail=x", &support).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );
    app.stop().await;
}

async fn the_provisioner_boots_a_tenant_from_its_queue_and_the_tenant_gets_leases(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (account_id, tenant_id) = bought_msp(&app).await;
    caught_up(&app).await;
    let provisioner = token(&app, StaffRole::Provisioner).await;

    let (status, queue) = get_as(&app, "/v1/provisioner/tenants", &provisioner).await;
    assert_eq!(status, 200, "{queue}");
    assert_eq!(
        queue["tenants"],
        json!([{ "account_id": account_id, "tenant_id": tenant_id.as_str(), "state": "provisioning", "since": queue["tenants"][0]["since"] }])
    );
    assert_eq!(queue["next_after"], Value::Null);
    let (status, body) = get_as(&app, "/v1/provisioner/tenants?limit=0", &provisioner).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );

    let tenant_path = format!("/v1/provisioner/accounts/{account_id}/tenants/{tenant_id}");
    let (status, credentials) =
        get_as(&app, &format!("{tenant_path}/credentials"), &provisioner).await;
    assert_eq!(status, 200, "{credentials}");
    let refresh_token = lease_refresh_token(&app.state.keys, &tenant_id);
    assert_eq!(
        credentials["entitlement_refresh_token"],
        refresh_token.expose()
    );
    let (status, _) = get_as(
        &app,
        &format!("/v1/provisioner/accounts/{account_id}/tenants/t-0000000000/credentials"),
        &provisioner,
    )
    .await;
    assert_eq!(status, 404);

    let report = |state: &str| json!({ "state": state, "reason": "runtime booted" });
    let auth = format!("Bearer {provisioner}");
    let keyed = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "boot-1"),
    ];
    let (status, booted, _) = app
        .post(&format!("{tenant_path}/state"), &report("active"), &keyed)
        .await;
    assert_eq!(
        (status, booted["state"].as_str()),
        (200, Some("active")),
        "{booted}"
    );
    let (status, again, _) = app
        .post(&format!("{tenant_path}/state"), &report("active"), &keyed)
        .await;
    assert_eq!(
        (status, &again),
        (200, &booted),
        "a retried report answers the same"
    );
    let changes = app
        .all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "tenant_state_changed")
        .count();
    assert_eq!(changes, 1, "the retry changed nothing");
    let (status, body, _) = app
        .post(
            &format!("{tenant_path}/state"),
            &report("provisioning"),
            &[("authorization", auth.as_str())],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("invalid_transition")),
        "{body}"
    );
    let (status, body, _) = app
        .post(
            &format!("{tenant_path}/state"),
            &json!({ "state": "exploded", "reason": "x" }),
            &[("authorization", auth.as_str())],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );

    caught_up(&app).await;
    let (_, queue) = get_as(&app, "/v1/provisioner/tenants", &provisioner).await;
    assert_eq!(
        queue["tenants"],
        json!([]),
        "a booted tenant leaves the queue"
    );
    let refresh = json!({ "org_id": account_id, "instance_host": "acme.cloud.example", "entitlement_refresh_token": refresh_token.expose() });
    let (status, lease, _) = app.post("/api/entitlements/refresh", &refresh, &[]).await;
    assert_eq!(status, 200, "{lease}");

    let support = token(&app, StaffRole::Support).await;
    let (status, body) = get_as(&app, "/v1/provisioner/tenants", &support).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let (_, home) = get_as(&app, &format!("/v1/staff/accounts/{account_id}"), &support).await;
    assert_eq!(home["tenants"][0]["state"], "active");
    assert_eq!(
        home["tenants"][0]["entitlements"]["limits"]["max_monitored_systems"],
        150
    );
    app.stop().await;
}

async fn a_token_issued_from_the_command_line_works_until_it_is_revoked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (url, data_dir) = (app.db.url.clone(), app.db.data_dir());
    let cwd = tempfile::tempdir().unwrap();
    let cli = |args: Vec<String>| {
        let cwd = cwd.path().to_owned();
        let mut args = args;
        args.extend([
            String::from("--database-url"),
            url.clone(),
            String::from("--data-dir"),
            data_dir.display().to_string(),
        ]);
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                crate::cli::run(&args, &cwd)
            })
            .await
            .unwrap()
        }
    };
    let issued = cli(vec![
        "staff".into(),
        "issue".into(),
        "--role".into(),
        "support".into(),
        "--name".into(),
        "alice".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&issued.stdout).into_owned();
    assert!(
        issued.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let token = stdout
        .lines()
        .find_map(|line| line.strip_prefix("token (shown once, store it now): "))
        .expect("the token is printed")
        .to_owned();
    let token_id = token.split_once('.').unwrap().0.to_owned();

    let (status, _) = get_as(&app, "/v1/staff/licenses?email=a@example.com", &token).await;
    assert_eq!(
        status, 200,
        "the token issued by the CLI works against the service"
    );
    let revoked = cli(vec!["staff".into(), "revoke".into(), token_id.clone()]).await;
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let (status, _) = get_as(&app, "/v1/staff/licenses?email=a@example.com", &token).await;
    assert_eq!(status, 401, "a revoked token opens nothing");

    let bad_role = cli(vec![
        "staff".into(),
        "issue".into(),
        "--role".into(),
        "root".into(),
        "--name".into(),
        "x".into(),
    ])
    .await;
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("support, auditor or provisioner"));
    let events = app.all_events().await;
    let issued = events
        .iter()
        .find(|e| e.event_type == "staff_token_issued")
        .unwrap();
    assert_eq!(issued.payload["role"], "support");
    assert!(
        !issued
            .payload
            .to_string()
            .contains(token.split_once('.').unwrap().1),
        "the log holds the token's hash, never the token"
    );
    assert!(events.iter().any(|e| e.event_type == "staff_token_revoked"));
    app.stop().await;
}

async fn support_replays_a_license_and_an_account_event_by_event(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_pro(&app).await;
    let support = token(&app, StaffRole::Support).await;
    let (_, owned) = get_as(&app, "/v1/staff/licenses?email=buyer@example.com", &support).await;
    let license_id = owned["licenses"][0]["billing"]["license_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = format!("/v1/staff/licenses/{license_id}");

    let (status, timeline) = get_as(&app, &format!("{base}/timeline"), &support).await;
    assert_eq!(status, 200, "{timeline}");
    let steps = timeline["steps"].as_array().unwrap();
    let types: Vec<&str> = steps
        .iter()
        .map(|s| s["event_type"].as_str().unwrap())
        .collect();
    for expected in [
        "handoff_created",
        "checkout_started",
        "license_issued",
        "activation_key_bound",
        "checkout_completed",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} missing from {types:?}"
        );
    }
    let positions: Vec<i64> = steps
        .iter()
        .map(|s| s["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "global order");
    let issued = steps
        .iter()
        .find(|s| s["event_type"] == "license_issued")
        .unwrap();
    assert_eq!(issued["actor"], "stripe");
    assert!(issued["recorded_at"].is_string() && issued["effective_at"].is_string());
    assert!(issued["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["field"] == "billing.plan_version"
            && c["after"] == "pro"
            && c["before"].is_null()));
    let handoff = steps
        .iter()
        .find(|s| s["event_type"] == "handoff_created")
        .unwrap();
    assert_eq!(
        handoff["changes"],
        json!([]),
        "other streams' events change nothing of the license"
    );

    let (_, first_page) = get_as(&app, &format!("{base}/timeline?limit=2"), &support).await;
    assert_eq!(first_page["steps"].as_array().unwrap().len(), 2);
    let after = first_page["next_after"].as_i64().unwrap();
    let (_, rest) = get_as(
        &app,
        &format!("{base}/timeline?after={after}&limit=1000"),
        &support,
    )
    .await;
    assert_eq!(rest["steps"].as_array().unwrap().len(), steps.len() - 2);
    assert_eq!(rest["next_after"], Value::Null);

    let issued_at = issued["position"].as_i64().unwrap();
    let (status, before) = get_as(
        &app,
        &format!("{base}/as-of?position={}", issued_at - 1),
        &support,
    )
    .await;
    assert_eq!(
        (status, &before["view"]),
        (200, &Value::Null),
        "nothing before it was issued"
    );
    let (_, then) = get_as(
        &app,
        &format!("{base}/as-of?position={issued_at}"),
        &support,
    )
    .await;
    assert_eq!(then["view"]["billing"]["state"], "active");
    let (_, now) = get_as(
        &app,
        &format!("{base}/as-of?effective_at=2100-01-01T00:00:00Z"),
        &support,
    )
    .await;
    assert_eq!(now["view"]["entitlements"]["plan_version"], "pro");
    for bad in [
        "",
        "?position=1&effective_at=2100-01-01T00:00:00Z",
        "?recorded_at=yesterday",
    ] {
        let (status, body) = get_as(&app, &format!("{base}/as-of{bad}"), &support).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_request")),
            "{bad}"
        );
    }

    let (status, license_why) = get_as(&app, &format!("{base}/why"), &support).await;
    assert_eq!(status, 200, "{license_why}");
    let why = license_why.clone();
    assert_eq!(
        why["fields"]["billing.plan_version"]["event_type"],
        "license_issued"
    );
    assert_eq!(why["fields"]["billing.plan_version"]["value"], "pro");
    assert_eq!(why["fields"]["billing.plan_version"]["position"], issued_at);

    let (status, body) = get_as(&app, "/v1/staff/licenses/lic_0000000000/timeline", &support).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    let (account_id, tenant_id) = bought_msp_second(&app).await;
    let (status, account) = get_as(
        &app,
        &format!("/v1/staff/accounts/{account_id}/timeline"),
        &support,
    )
    .await;
    assert_eq!(status, 200, "{account}");
    let provisioned = account["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["event_type"] == "tenant_provisioned")
        .unwrap();
    assert!(provisioned["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(
            |c| c["field"] == format!("tenants.{tenant_id}.state") && c["after"] == "provisioning"
        ));
    let (_, why) = get_as(
        &app,
        &format!("/v1/staff/accounts/{account_id}/why"),
        &support,
    )
    .await;
    assert_eq!(why["fields"]["billing.plan_version"]["value"], "msp_growth");
    let auditor = token(&app, StaffRole::Auditor).await;
    let (status, _) = get_as(
        &app,
        &format!("/v1/staff/accounts/{account_id}/why"),
        &auditor,
    )
    .await;
    assert_eq!(status, 403);

    let url = app.db.url.clone();
    let cwd = tempfile::tempdir().unwrap();
    let cwd_path = cwd.path().to_owned();
    let data_dir = app.db.data_dir();
    let (why_cli, timeline_cli, no_cut) = tokio::task::spawn_blocking(move || {
        let data_dir = data_dir.to_str().unwrap();
        let run = |args: &[&str]| {
            let keyed = [args, &["--data-dir", data_dir]].concat();
            crate::cli::run(&keyed, &cwd_path)
        };
        (
            run(&[
                "support",
                "why",
                "license",
                &license_id,
                "--database-url",
                &url,
            ]),
            run(&[
                "support",
                "timeline",
                "license",
                &license_id,
                "--database-url",
                &url,
            ]),
            run(&[
                "support",
                "as-of",
                "license",
                &license_id,
                "--database-url",
                &url,
            ]),
        )
    })
    .await
    .unwrap();
    assert!(
        why_cli.status.success(),
        "{}",
        String::from_utf8_lossy(&why_cli.stderr)
    );
    let cli_why: Value = serde_json::from_slice(&why_cli.stdout).unwrap();
    assert_eq!(
        cli_why, license_why["fields"],
        "the CLI answers what the API does"
    );
    let cli_timeline: Value = serde_json::from_slice(&timeline_cli.stdout).unwrap();
    assert_eq!(cli_timeline.as_array().map(Vec::len), Some(steps.len()));
    assert!(!no_cut.status.success(), "as-of needs a cut");
    app.stop().await;
}

/// An MSP purchase in an app that already sold something (the fake Stripe's next session).
async fn bought_msp_second(app: &TestApp) -> (String, String) {
    let request = json!({ "feature": "multi_tenant", "success_url": "https://p.example/auth/license-purchase-activate", "cancel_url": "https://p.example/", "purchase_return_jti": "jti-2" });
    let (_, handoff, _) = app.post("/v1/checkout/portal-handoff", &request, &[]).await;
    let start = json!({ "portal_handoff_id": handoff["portal_handoff_id"], "plan_key": "msp_growth", "tier": "msp", "billing_cycle": "monthly" });
    let (status, body, _) = app.post("/v1/checkout/session", &start, &[]).await;
    assert_eq!(status, 200, "{body}");
    let session = app
        .all_events()
        .await
        .into_iter()
        .rev()
        .find(|e| e.event_type == "checkout_started")
        .unwrap()
        .payload["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = json!({ "id": "evt_msp", "object": "event", "created": 1_000, "livemode": false, "pending_webhooks": 1, "type": "checkout.session.completed",
        "data": { "object": { "id": session, "object": "checkout.session", "customer_details": { "email": "ops@msp.example" } } } });
    let (status, _) = app.send_webhook(&event, false).await;
    assert_eq!(status, 200);
    caught_up(app).await;
    let events = app.all_events().await;
    let opened = events
        .iter()
        .find(|e| e.event_type == "account_opened")
        .unwrap();
    let provisioned = events
        .iter()
        .find(|e| e.event_type == "tenant_provisioned")
        .unwrap();
    (
        opened.stream.stream_id().to_owned(),
        provisioned.payload["tenant_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

async fn an_auditor_streams_an_export_that_verifies_offline(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_pro(&app).await;
    let auditor = token(&app, StaffRole::Auditor).await;
    let (_, jwks) = app.get("/.well-known/jwks.json").await;
    let public_key = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let fetch = |query: &'static str| {
        let (app, auditor) = (&app, auditor.clone());
        async move {
            let response = app
                .client
                .get(format!("{}/v1/staff/export{query}", app.base))
                .bearer_auth(auditor)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let head = response
                .headers()
                .get("x-export-head-position")
                .map(|v| v.to_str().unwrap().parse::<i64>().unwrap());
            (status, head, response.bytes().await.unwrap().to_vec())
        }
    };

    let (status, head, body) = fetch("").await;
    assert_eq!(status, 200);
    let manifest = pulse_account::engine::audit::verify_jsonl(body.as_slice(), &public_key)
        .expect("the streamed export verifies with the public key alone");
    let head = head.expect("the head is announced");
    assert!(
        manifest.to_position >= head && manifest.count as i64 >= head,
        "{manifest:?} {head}"
    );

    let (status, _, csv) = fetch("?format=csv&after=2&to=5").await;
    assert_eq!(status, 200);
    let range =
        pulse_account::engine::audit::verify(csv.as_slice(), &public_key).expect("CSV verifies");
    assert_eq!(
        (range.after_position, range.to_position, range.count),
        (2, 5, 3)
    );

    for bad in ["?format=xml", "?after=-1", "?after=5&to=5", "?limit=3"] {
        let (status, _, body) = fetch(bad).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_request")),
            "{bad}"
        );
    }
    let support = token(&app, StaffRole::Support).await;
    let (status, body) = get_as(&app, "/v1/staff/export", &support).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let exports = recorded_accesses(&app)
        .await
        .iter()
        .filter(|a| a["path"].as_str().unwrap().starts_with("/v1/staff/export"))
        .count();
    assert_eq!(exports, 7, "every export request is recorded");
    app.stop().await;
}
