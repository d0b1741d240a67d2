//! Append, on each store: purchases issued through the real command path — decide, seal the
//! personal data, append to the license and activation-key streams with the idempotency record, in
//! one transaction — by 1 and by 16 concurrent writers on distinct streams; against plain INSERTs
//! of the very rows that path wrote (events and idempotency record, one transaction per command),
//! at the same concurrency, into a fresh database with the same schema.

use crate::raw::{EventRow, RawPool, Record};
use crate::support::{Backend, BenchDatabase, Measured, Row};
use aggregates::catalog::{BillingCycle, Catalog};
use aggregates::ids::Email;
use aggregates::license::LicenseOrigin;
use aggregates::log::EventMetadata;
use chrono::Utc;
use pulse_account::crypto::KeyMaterial;
use pulse_account::engine::store::{Idempotency, Store};
use pulse_account::flows::licensing::{Licensing, NewLicense, TokenBindings};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The writer counts measured.
const WRITERS: [usize; 2] = [1, 16];

pub(crate) async fn run(
    admin: &str,
    backend: Backend,
    sizes: crate::Sizes,
    keys: &Arc<KeyMaterial>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for writers in WRITERS {
        let commands = sizes.append_commands - sizes.append_commands % writers;
        let ours_db = BenchDatabase::create(admin, "append", backend).await;
        let store = ours_db.sealed_store(keys).await;
        let ours = ours_path(&store, keys, writers, commands).await;
        drop(store);
        let pool = ours_db.pool(1).await;
        let written = Arc::new(pool.written().await);
        pool.close().await;
        assert_eq!(written.len(), commands, "every command wrote once");
        let raw_db = BenchDatabase::create(admin, "append_raw", backend).await;
        drop(raw_db.store().await);
        let raw_pool = raw_db.pool(writers as u32).await;
        let raw = raw_inserts(&raw_pool, &written, writers).await;
        raw_pool.close().await;
        ours_db.drop_database().await;
        raw_db.drop_database().await;
        eprintln!(
            "{} append, {writers} writer(s): {commands} commands measured",
            backend.label()
        );
        rows.push(Row::throughput(
            &format!(
                "{} append: purchase commands, {writers} writer(s)",
                backend.label()
            ),
            "cmd",
            ours,
            raw,
            (writers == 16 && backend == Backend::Postgres).then_some(0.5),
        ));
    }
    rows
}

/// A command's request id, also its idempotency key: the raw baseline pairs rows by it.
fn request(command: usize) -> String {
    format!("bench-{command}")
}

fn metadata(command: usize) -> EventMetadata {
    EventMetadata {
        actor: String::from("bench"),
        causation_id: None,
        correlation_id: None,
        request_id: Some(request(command)),
        effective_at: Utc::now(),
    }
}

async fn ours_path(
    store: &Arc<dyn Store>,
    keys: &Arc<KeyMaterial>,
    writers: usize,
    commands: usize,
) -> Measured {
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let (store, keys) = (Arc::clone(store), Arc::clone(keys));
            tokio::spawn(async move {
                let catalog = Catalog::v1();
                let bindings = TokenBindings::default();
                let licensing = Licensing {
                    store: store.as_ref(),
                    bindings: &bindings,
                    cache: None,
                    keys: &keys,
                    catalog: &catalog,
                };
                let mut latencies = Vec::new();
                for command in (writer..commands).step_by(writers) {
                    let license = NewLicense {
                        owner_email: Email::parse(&format!("buyer{command}@example.com")).unwrap(),
                        plan_version: String::from("pro"),
                        billing_cycle: Some(BillingCycle::Monthly),
                        current_period_end: Some(Utc::now() + chrono::Duration::days(30)),
                        origin: LicenseOrigin::Checkout {
                            session_id: format!("cs_bench_{command}"),
                        },
                        stripe_price_id: Some(String::from("price_bench")),
                    };
                    let idempotency = Idempotency::for_request(request(command), &command);
                    let one = Instant::now();
                    licensing
                        .issue(license, metadata(command), Some(idempotency))
                        .await
                        .expect("the purchase is issued");
                    latencies.push(one.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a writer finishes"));
    }
    Measured::new(commands, started.elapsed(), latencies)
}

async fn raw_inserts(
    pool: &RawPool,
    written: &Arc<Vec<(Vec<EventRow>, Record)>>,
    writers: usize,
) -> Measured {
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let (pool, written) = (pool.clone(), Arc::clone(written));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for command in (writer..written.len()).step_by(writers) {
                    let (events, record) = &written[command];
                    let one = Instant::now();
                    pool.insert_command(events, record).await;
                    latencies.push(one.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a raw writer finishes"));
    }
    Measured::new(written.len(), started.elapsed(), latencies)
}
