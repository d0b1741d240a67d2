//! The operational HTTP surface — `/healthz`, `/readyz`, `/metrics`, the JSON error shape and
//! request ids — and booting and stopping the real server on a socket, on both stores.

use crate::helpers::{append, event, stream, Backend, TestDatabase};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use pulse_account::engine::projection::runner::{Runner, RunnerConfig};
use pulse_account::startup::{Application, Settings};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

crate::on_both_stores!(
    readiness_reports_projection_lag_against_the_bound_and_metrics_expose_it,
    unknown_routes_get_the_json_error_shape_with_the_request_id,
    the_server_boots_on_a_free_port_serves_and_stops_gracefully,
    the_running_service_seals_the_log_periodically,
);

async fn application(db: &TestDatabase, readiness_lag_max: i64) -> Application {
    Application::build(Settings {
        database_url: db.url.clone().into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        readiness_lag_max,
        runner: RunnerConfig::default(),
        data_dir: db.data_dir(),
        keys: Default::default(),
        stripe: Default::default(),
        public_url: String::from("https://account.pulse.test"),
        legacy_public_key: Some(crate::helpers::legacy_public_key()),
        seal_interval: None,
        lifecycle_interval: None,
        server: Default::default(),
        mail: Default::default(),
        support_email: String::from("support@pulse.test"),
        self_refund_window_days: 30,
    })
    .await
    .expect("the application builds")
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let request = Request::get(uri)
        .header("x-request-id", "req-test-1")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes().to_vec(),
    )
}

async fn readiness_reports_projection_lag_against_the_bound_and_metrics_expose_it(
    backend: Backend,
) {
    let db = TestDatabase::new(backend).await;
    let application = application(&db, 2).await;
    let state = application.state().clone();
    let app = pulse_account::http::router(state.clone());
    let (status, _, body) = get(&app, "/healthz").await;
    assert_eq!(
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        ),
        (StatusCode::OK, json!({"status": "ok"}))
    );

    let license = stream("sample", "s_0000000009");
    let events = (0..5)
        .map(|n| event("touched", json!({ "n": n })))
        .collect();
    state
        .store
        .append(append(&license, 0, events))
        .await
        .unwrap();
    db.settled_head(state.store.as_ref()).await;
    let (status, _, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "not_ready");
    assert_eq!(body["request_id"], "req-test-1");
    // The catalog's publication at start, then the five events.
    assert_eq!(body["details"]["projections"][0]["lag_positions"], 6);
    let (_, headers, metrics) = get(&app, "/metrics").await;
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("pulse_account_log_head_position 6\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pulse_account_projection_lag_positions{projection=\"stream_index\"} 6\n"),
        "{metrics}"
    );

    for fold in state.projections.iter() {
        let runner = Runner::new(
            Arc::clone(&state.store),
            Arc::clone(fold),
            RunnerConfig::default(),
            Arc::clone(&state.metrics),
        )
        .unwrap();
        state.store.ensure_projection(fold.name()).await.unwrap();
        runner
            .step(1, aggregates::log::Position::START)
            .await
            .unwrap();
    }
    let (status, _, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let metrics = String::from_utf8(get(&app, "/metrics").await.2).unwrap();
    assert!(
        metrics.contains("pulse_account_projection_lag_positions{projection=\"stream_index\"} 0\n")
    );
    assert!(
        metrics.contains("pulse_account_projection_events_total{projection=\"stream_index\"} 6\n")
    );
    drop((app, state, application));
    db.cleanup().await;
}

async fn unknown_routes_get_the_json_error_shape_with_the_request_id(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let application = application(&db, 10).await;
    let app = pulse_account::http::router(application.state().clone());
    let (status, headers, body) = get(&app, "/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        headers["x-request-id"], "req-test-1",
        "the request id is echoed"
    );
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        json!({
            "error": "Not Found",
            "code": "not_found",
            "message": "No route matches this path.",
            "details": {},
            "request_id": "req-test-1",
        })
    );
    let request = Request::get("/healthz").body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(
        generated.len(),
        36,
        "a request without an id gets a generated UUID: {generated}"
    );
    drop((app, application));
    db.cleanup().await;
}

async fn raw_get(address: std::net::SocketAddr, path: &str) -> String {
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    response
}

async fn the_server_boots_on_a_free_port_serves_and_stops_gracefully(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let application = application(&db, 10).await;
    let address = application.local_addr();
    assert_ne!(address.port(), 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let response = raw_get(address, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    let metrics = raw_get(address, "/metrics").await;
    assert!(
        metrics.contains("pulse_account_projection_leader{projection=\"stream_index\"}"),
        "{metrics}"
    );
    stop.send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(15), server).await;
    stopped
        .expect("the server stops in time")
        .unwrap()
        .expect("the server stops cleanly");
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "the listener is closed"
    );
    db.cleanup().await;
}

async fn the_running_service_seals_the_log_periodically(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let sealing = Application::build(Settings {
        database_url: db.url.clone().into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        readiness_lag_max: 10,
        runner: RunnerConfig::default(),
        data_dir: db.data_dir(),
        keys: Default::default(),
        stripe: Default::default(),
        public_url: String::from("https://account.pulse.test"),
        legacy_public_key: None,
        seal_interval: Some(Duration::from_millis(50)),
        lifecycle_interval: None,
        server: Default::default(),
        mail: Default::default(),
        support_email: String::from("support@pulse.test"),
        self_refund_window_days: 30,
    })
    .await
    .unwrap();
    let store = Arc::clone(&sealing.state().store);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sealing.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    store
        .append(append(
            &stream("sample", "s_1"),
            0,
            vec![event("touched", json!({}))],
        ))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.latest_seal().await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "no seal was made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sealed = store.latest_seal().await.unwrap().unwrap();
    assert_eq!(
        sealed.count, sealed.position.0,
        "the seal covers every event up to its position (the catalog's publication first)"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    drop(store);
    db.cleanup().await;
}
