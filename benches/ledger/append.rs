//! Append: purchases issued through the real command path — decide, seal the personal data,
//! append to the license and activation-key streams with the idempotency record, in one
//! transaction — by 1 and by 16 concurrent writers on distinct streams; against plain INSERTs of
//! the very rows that path wrote (events and idempotency record, one transaction per command), at
//! the same concurrency, into a fresh database with the same schema.

use crate::support::{BenchDatabase, Measured, Row};
use aggregates::catalog::{BillingCycle, Catalog};
use aggregates::ids::Email;
use aggregates::license::LicenseOrigin;
use aggregates::log::EventMetadata;
use chrono::{DateTime, Utc};
use pulse_account::crypto::KeyMaterial;
use pulse_account::licensing::{Licensing, NewLicense};
use pulse_account::personal_data::PersonalDataStore;
use pulse_account::store::{Idempotency, Store};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The writer counts measured.
const WRITERS: [usize; 2] = [1, 16];

pub(crate) async fn run(admin: &str, sizes: crate::Sizes, keys: &Arc<KeyMaterial>) -> Vec<Row> {
    let mut rows = Vec::new();
    for writers in WRITERS {
        let commands = sizes.append_commands - sizes.append_commands % writers;
        let ours_db = BenchDatabase::create(admin, "append").await;
        let store: Arc<dyn Store> = Arc::new(PersonalDataStore::new(
            ours_db.store().await,
            Arc::clone(keys),
        ));
        let ours = ours_path(&store, keys, writers, commands).await;
        let written = WrittenRows::read(&ours_db.pool(1).await).await;
        assert_eq!(written.commands.len(), commands, "every command wrote once");
        drop(store);
        let raw_db = BenchDatabase::create(admin, "append_raw").await;
        drop(raw_db.store().await);
        let raw_pool = raw_db.pool(writers as u32).await;
        let raw = raw_inserts(&raw_pool, &written, writers).await;
        raw_pool.close().await;
        ours_db.drop_database().await;
        raw_db.drop_database().await;
        eprintln!("append, {writers} writer(s): {commands} commands measured");
        rows.push(Row::throughput(
            &format!("append: purchase commands, {writers} writer(s)"),
            "cmd",
            ours,
            raw,
            (writers == 16).then_some(0.5),
        ));
    }
    rows
}

fn metadata(command: usize) -> EventMetadata {
    EventMetadata {
        actor: String::from("bench"),
        causation_id: None,
        correlation_id: None,
        request_id: Some(format!("bench-{command}")),
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
                let licensing = Licensing {
                    store: store.as_ref(),
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
                    let idempotency =
                        Idempotency::for_request(format!("bench:{command}"), &command);
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

/// One stored event row (JSON as text): stream type and id, version, event id, type, schema
/// version, payload, metadata, recorded time.
type EventRow = (
    String,
    String,
    i64,
    uuid::Uuid,
    String,
    i32,
    String,
    String,
    DateTime<Utc>,
);
/// One idempotency record: key, fingerprint, outcome (JSON as text), recorded time.
type Record = (String, Vec<u8>, String, DateTime<Utc>);

/// What each command wrote: its events and its idempotency record.
struct WrittenRows {
    commands: Arc<Vec<(Vec<EventRow>, Record)>>,
}

impl WrittenRows {
    async fn read(pool: &sqlx::PgPool) -> WrittenRows {
        let events: Vec<EventRow> = sqlx::query_as(
            "SELECT stream_type, stream_id, stream_version, event_id, event_type, schema_version, \
             payload::text, metadata::text, recorded_at FROM events ORDER BY global_position",
        )
        .fetch_all(pool)
        .await
        .expect("read the events written");
        let mut by_command: BTreeMap<String, Vec<EventRow>> = BTreeMap::new();
        for event in events {
            let metadata: serde_json::Value = serde_json::from_str(&event.7).unwrap();
            let command = metadata["request_id"]
                .as_str()
                .unwrap()
                .replace("bench-", "bench:");
            by_command.entry(command).or_default().push(event);
        }
        let records: Vec<Record> = sqlx::query_as(
            "SELECT idempotency_key, fingerprint, outcome::text, recorded_at FROM idempotency_keys",
        )
        .fetch_all(pool)
        .await
        .expect("read the idempotency records");
        let mut records: BTreeMap<String, Record> = records
            .into_iter()
            .map(|record| (record.0.clone(), record))
            .collect();
        let commands = by_command
            .into_iter()
            .map(|(command, events)| {
                let record = records
                    .remove(&command)
                    .expect("each command has its record");
                (events, record)
            })
            .collect();
        WrittenRows {
            commands: Arc::new(commands),
        }
    }
}

async fn raw_inserts(pool: &sqlx::PgPool, written: &WrittenRows, writers: usize) -> Measured {
    let started = Instant::now();
    let commands = written.commands.len();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let (pool, written) = (pool.clone(), Arc::clone(&written.commands));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for command in (writer..written.len()).step_by(writers) {
                    let (events, record) = &written[command];
                    let one = Instant::now();
                    let mut transaction = pool.begin().await.expect("begin");
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO events (stream_type, stream_id, stream_version, event_id, \
                         event_type, schema_version, payload, metadata, recorded_at) ",
                    );
                    insert.push_values(events, |mut row, e| {
                        row.push_bind(&e.0)
                            .push_bind(&e.1)
                            .push_bind(e.2)
                            .push_bind(e.3)
                            .push_bind(&e.4)
                            .push_bind(e.5)
                            .push_bind(&e.6)
                            .push_unseparated("::jsonb")
                            .push_bind(&e.7)
                            .push_unseparated("::jsonb")
                            .push_bind(e.8);
                    });
                    insert
                        .build()
                        .execute(&mut *transaction)
                        .await
                        .expect("raw INSERT of the events");
                    sqlx::query(
                        "INSERT INTO idempotency_keys (idempotency_key, fingerprint, outcome, recorded_at) \
                         VALUES ($1, $2, $3::jsonb, $4)",
                    )
                    .bind(&record.0)
                    .bind(&record.1)
                    .bind(&record.2)
                    .bind(record.3)
                    .execute(&mut *transaction)
                    .await
                    .expect("raw INSERT of the idempotency record");
                    transaction.commit().await.expect("commit");
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
    Measured::new(commands, started.elapsed(), latencies)
}
