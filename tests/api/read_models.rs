//! Read models built by the running service (`DOMAIN.md` §14, portal views): after a purchase the
//! license projection equals a fresh fold of the license's stream, and the owner-email index lists
//! the license.

use crate::helpers::{Backend, TestApp};
use aggregates::license::{IssuedLicense, License};
use aggregates::log::StreamName;
use projections::licenses::OwnedLicenses;
use pulse_account::engine::command::load;
use pulse_account::engine::projection::wait_for_position;
use serde_json::json;
use std::time::Duration;

crate::on_both_stores!(the_license_read_models_follow_the_log_and_agree_with_the_decider);

async fn the_license_read_models_follow_the_log_and_agree_with_the_decider(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let request = json!({ "feature": "max_monitored_systems", "success_url": "https://p.example/auth/license-purchase-activate", "cancel_url": "https://p.example/", "purchase_return_jti": "jti-1" });
    let (_, handoff, _) = app.post("/v1/checkout/portal-handoff", &request, &[]).await;
    let start = json!({ "portal_handoff_id": handoff["portal_handoff_id"], "plan_key": "pro", "tier": "pro", "billing_cycle": "monthly" });
    app.post("/v1/checkout/session", &start, &[]).await;
    let event = json!({ "id": "evt_rm", "object": "event", "created": 1_000, "livemode": false, "pending_webhooks": 1, "type": "checkout.session.completed",
        "data": { "object": { "id": "cs_test_fake0001", "object": "checkout.session", "customer_details": { "email": "reader@example.com" } } } });
    app.send_webhook(&event, false).await;
    let (_, result) = app
        .get("/v1/checkout/session?session_id=cs_test_fake0001")
        .await;
    let body = json!({ "activation_key": result["activation_key"], "instance_name": "lab", "instance_fingerprint": "fp", "client_version": "6" });
    assert_eq!(app.post("/v1/activate", &body, &[]).await.0, 200);
    let license_id = result["license_id"].as_str().unwrap();

    let store = app.state.store.as_ref();
    let head = aggregates::log::Position(app.db.max_position().await);
    for projection in ["licenses", "licenses_by_email", "stream_index"] {
        assert!(
            wait_for_position(store, projection, head, Duration::from_secs(5))
                .await
                .unwrap(),
            "{projection} caught up"
        );
    }
    let document = store
        .read_document("licenses", license_id)
        .await
        .unwrap()
        .expect("the license document");
    let projected: IssuedLicense = serde_json::from_value(document).unwrap();
    let (state, _) = load::<License>(store, &StreamName::parse("license", license_id).unwrap())
        .await
        .unwrap();
    assert_eq!(
        Some(projected),
        state.issued,
        "the read model equals the decider's own fold"
    );
    let owned: OwnedLicenses = serde_json::from_value(
        store
            .read_document("licenses_by_email", "reader@example.com")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(owned.license_ids, vec![license_id.to_owned()]);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for projection in ["licenses", "licenses_by_email", "stream_index"] {
        assert!(
            metrics.contains(&format!(
                "pulse_account_projection_errors_total{{projection=\"{projection}\"}} 0"
            )),
            "{metrics}"
        );
    }
    app.stop().await;
}
