//! Read path, on each store: `GET /v1/entitlements` of an installation over HTTP on loopback (token
//! lookup, license stream load, entitlement payload) against `GET /healthz` of the same server,
//! each driven by 16 concurrent clients for a fixed time. The installation has refreshed its grant
//! daily for a quarter, as a real one would have, so its license stream holds a realistic history.

use crate::support::{Backend, BenchDatabase, Measured, Row};
use aggregates::catalog::{BillingCycle, Catalog};
use aggregates::decider::Decider;
use aggregates::ids::Email;
use aggregates::license::{License, LicenseOrigin};
use aggregates::log::EventMetadata;
use aggregates::log::StreamName;
use pulse_account::engine::command::load;
use pulse_account::engine::projection::runner::RunnerConfig;
use pulse_account::flows::licensing::{ActivateRequest, Licensing, NewLicense};
use pulse_account::startup::{Application, Settings};
use std::time::{Duration, Instant};

/// Concurrent clients.
const CLIENTS: usize = 16;
/// Grant refreshes before the measurement: a quarter of daily refreshes.
const GRANT_REFRESHES: usize = 90;

pub(crate) async fn run(admin: &str, backend: Backend, sizes: crate::Sizes) -> Vec<Row> {
    let db = BenchDatabase::create(admin, "read_path", backend).await;
    let data_dir = tempfile::tempdir().expect("a data directory");
    let application = Application::build(Settings {
        database_url: db.url.clone().into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        readiness_lag_max: 10_000,
        runner: RunnerConfig::default(),
        data_dir: data_dir.path().to_owned(),
        keys: crate::key_config(),
        stripe: Default::default(),
        public_url: String::from("http://127.0.0.1"),
        legacy_public_key: None,
        seal_interval: None,
        lifecycle_interval: None,
        server: Default::default(),
        mail: Default::default(),
        support_email: String::from("support@pulse.test"),
        self_refund_window_days: 30,
    })
    .await
    .expect("the service builds");
    let base = format!("http://{}", application.local_addr());
    let (token, license_events) = activated_installation(application.state()).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    let entitlements = drive(
        &client,
        &format!("{base}/v1/entitlements"),
        Some(&token),
        sizes.read_duration,
    )
    .await;
    let health = drive(
        &client,
        &format!("{base}/healthz"),
        None,
        sizes.read_duration,
    )
    .await;

    let _ = stop.send(());
    server
        .await
        .expect("the server task")
        .expect("the server stops");
    db.drop_database().await;
    vec![Row::throughput(
        &format!(
            "{} read path: GET /v1/entitlements (license of {} events) vs GET /healthz, {CLIENTS} clients",
            backend.label(),
            license_events,
        ),
        "req",
        entitlements,
        health,
        Some(0.8),
    )]
}

/// Issues a Pro license, activates one installation and refreshes its grant [`GRANT_REFRESHES`]
/// times, all through the service's flows; returns the installation's token and how many events
/// its license stream holds.
async fn activated_installation(state: &pulse_account::http::AppState) -> (String, i64) {
    let catalog = Catalog::v1();
    let licensing = Licensing {
        store: state.store.as_ref(),
        bindings: &state.token_bindings,
        cache: None,
        keys: &state.keys,
        catalog: &catalog,
    };
    let metadata = || EventMetadata {
        actor: String::from("bench"),
        causation_id: None,
        correlation_id: None,
        request_id: None,
        effective_at: chrono::Utc::now(),
    };
    let issued = licensing
        .issue(
            NewLicense {
                owner_email: Email::parse("reader@example.com").unwrap(),
                plan_version: String::from("pro"),
                billing_cycle: Some(BillingCycle::Monthly),
                current_period_end: Some(chrono::Utc::now() + chrono::Duration::days(30)),
                origin: LicenseOrigin::Checkout {
                    session_id: String::from("cs_bench_read"),
                },
                stripe_price_id: None,
            },
            metadata(),
            None,
        )
        .await
        .expect("a license");
    let activation = licensing
        .activate(
            &ActivateRequest {
                activation_key: issued.activation_key.expose().to_owned(),
                instance_name: String::from("bench-rack"),
                instance_fingerprint: String::from("fp-bench"),
                client_version: String::from("6.0.1"),
            },
            None,
            metadata(),
        )
        .await
        .expect("an activation");
    let token = activation.installation_token.expose().to_owned();
    for _ in 0..GRANT_REFRESHES {
        licensing
            .refresh_grant(&token, None, metadata())
            .await
            .expect("a grant refresh");
    }
    let stream = StreamName::parse(License::STREAM_TYPE, issued.license_id.as_str()).unwrap();
    let (_, version) = load::<License>(state.store.as_ref(), &stream)
        .await
        .expect("the license loads");
    (token, version.0)
}

/// `CLIENTS` clients GET `url` back to back for `duration`; every answer must be 200.
async fn drive(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    duration: Duration,
) -> Measured {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url, token) = (client.clone(), url.to_owned(), token.map(str::to_owned));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let mut request = client.get(&url);
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    let one = Instant::now();
                    let response = request.send().await.expect("the server answers");
                    assert_eq!(response.status().as_u16(), 200, "{url}");
                    response.bytes().await.expect("a body");
                    latencies.push(one.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a client finishes"));
    }
    Measured::new(latencies.len(), started.elapsed(), latencies)
}
