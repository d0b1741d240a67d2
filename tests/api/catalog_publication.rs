//! The plan catalog as data in the log, on both stores: the first start publishes the shipped
//! version once (a restart, or a second process, publishes nothing more), the service reads the
//! version in force back from the log, and support replay shows, for each event, the version it
//! was read with.

use crate::helpers::{Backend, TestApp};
use aggregates::staff::StaffRole;

crate::on_both_stores!(the_first_start_publishes_the_shipped_catalog_once);

async fn publications(app: &TestApp) -> Vec<i64> {
    app.all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "catalog_published")
        .map(|e| {
            assert_eq!(e.stream.to_string(), "catalog/pulse");
            e.payload["version"].as_i64().unwrap()
        })
        .collect()
}

async fn the_first_start_publishes_the_shipped_catalog_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(publications(&app).await, vec![1]);
    assert_eq!(
        app.state.catalog.version(),
        1,
        "the version in force, read from the log"
    );
    let app = app.restart().await;
    assert_eq!(
        publications(&app).await,
        vec![1],
        "a restart publishes nothing more"
    );

    let (license_id, _) = crate::licensing::issue(&app, "relay").await;
    let support = app.staff_token(StaffRole::Support).await;
    let response = app
        .client
        .get(format!(
            "{}/v1/staff/licenses/{license_id}/timeline",
            app.base
        ))
        .bearer_auth(&support)
        .send()
        .await
        .unwrap();
    let timeline: serde_json::Value = response.json().await.unwrap();
    let steps = timeline["steps"].as_array().expect("a timeline");
    assert!(!steps.is_empty());
    assert!(
        steps.iter().all(|step| step["catalog_version"] == 1),
        "{timeline}"
    );
    app.stop().await;
}
