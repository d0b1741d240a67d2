//! Read-your-writes over HTTP, on both stores: a request that writes answers the log position it
//! wrote (`x-log-position`, a replay included); a read from the read models given that position
//! (`x-min-log-position`) answers only once they have folded it, and a position they never reach
//! in time answers 503 `read_model_lagging` with `Retry-After`.

use crate::helpers::{Backend, TestApp};
use aggregates::staff::StaffRole;
use serde_json::{json, Value};

crate::on_both_stores!(
    a_read_given_the_position_of_a_write_sees_that_write,
    entitlements_from_memory_are_never_behind_a_write_this_process_made_or_a_position_the_client_names,
);

async fn get_after(
    app: &TestApp,
    path: &str,
    token: &str,
    position: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(token)
        .header("x-min-log-position", position)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        headers,
    )
}

async fn a_read_given_the_position_of_a_write_sees_that_write(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (license_id, key) = crate::licensing::issue(&app, "relay").await;
    let support = app.staff_token(StaffRole::Support).await;
    let activation = json!({ "activation_key": key, "instance_name": "lab", "instance_fingerprint": "fp-ryw", "client_version": "6.0.1" });
    let keyed = [("idempotency-key", "ryw-1")];
    let (status, _, headers) = app.post("/v1/activate", &activation, &keyed).await;
    assert_eq!(status, 200);
    let written = headers["x-log-position"].to_str().unwrap().to_owned();
    assert!(written.parse::<i64>().unwrap() > 0);
    let (_, _, replayed) = app.post("/v1/activate", &activation, &keyed).await;
    assert_eq!(
        replayed["x-log-position"], written,
        "a replay answers the position the first request wrote"
    );

    let path = format!("/v1/staff/licenses/{license_id}");
    let (status, license, _) = get_after(&app, &path, &support, &written).await;
    assert_eq!(status, 200, "{license}");
    assert_eq!(
        license["billing"]["active_installations"], 1,
        "the read saw its own write: {license}"
    );

    let (status, body, headers) = get_after(&app, &path, &support, "999999999").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("read_model_lagging")),
        "{body}"
    );
    assert_eq!(headers["retry-after"], "1");
    let (status, body, _) = get_after(&app, &path, &support, "soon").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );

    let (_, _, read_only) = app.post("/v1/grants/status", &json!({}), &[]).await;
    assert!(
        !read_only.contains_key("x-log-position"),
        "a refused request wrote nothing"
    );
    app.stop().await;
}

/// `GET /v1/entitlements` answers from the process's memory (`flows::license_cache`): never behind
/// a write of this process, nor behind the position a client names; another process's write
/// reaches it by itself shortly after (PostgreSQL: its notification; SQLite: the follower's poll).
async fn entitlements_from_memory_are_never_behind_a_write_this_process_made_or_a_position_the_client_names(
    backend: Backend,
) {
    use aggregates::license::{License, LicenseCommand, RevocationReason};
    let app = TestApp::spawn(backend).await;
    let (_, result) = crate::installation_flows::bought(&app).await;
    let key = result["activation_key"].as_str().unwrap();
    let token = crate::installation_flows::activate_as(&app, key, "lab").await;
    let license_id = result["license_id"].as_str().unwrap().to_owned();
    let (status, before) =
        crate::installation_flows::get_with_token(&app, "/v1/entitlements", &token).await;
    assert_eq!((status, &before["valid"]), (200, &json!(true)), "{before}");

    // A write of this process: the next read holds it.
    let (status, _, _) = app
        .post(
            "/v1/continuity/capture",
            &json!({ "monitored_systems": 3 }),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    assert!(status == 200 || status == 409, "{status}");

    // Another process revokes the license (a second store on the same database).
    let other = pulse_account::engine::personal_data::PersonalDataStore::new(
        app.db.open().await,
        std::sync::Arc::clone(&app.state.keys),
    );
    let catalog = aggregates::catalog::Catalog::v1();
    let revoked = pulse_account::engine::command::handle::<License>(
        &other,
        pulse_account::engine::command::Command {
            stream_id: &license_id,
            command: &LicenseCommand::Revoke {
                reason: RevocationReason::Dispute,
                reference: String::from("dp_other_process"),
            },
            context: aggregates::decider::Context::new(chrono::Utc::now(), &catalog),
            metadata: crate::helpers::metadata(),
            idempotency: None,
        },
    )
    .await
    .unwrap();
    let position = revoked.appended.unwrap().last_position().0.to_string();
    let (status, after, _) = get_after(&app, "/v1/entitlements", &token, &position).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        after["valid"], false,
        "given the write's position, the read is at least that current: {after}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, unasked) =
            crate::installation_flows::get_with_token(&app, "/v1/entitlements", &token).await;
        if unasked["valid"] == false {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "another process's write reaches memory by itself: {unasked}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.stop().await;
}
