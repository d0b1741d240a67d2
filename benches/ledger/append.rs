//! Append, on each store: purchases issued through the real command path — decide, seal the
//! personal data, append to the license and activation-key streams with the idempotency record, in
//! one transaction — by 1 and by 16 concurrent writers on distinct streams; against plain INSERTs
//! of the very rows that path wrote (events and idempotency record, one transaction per command),
//! at the same concurrency, into a fresh database with the same schema. Appends go through the
//! store's group commit; the figure reports the mean appends a commit, and the run then checks a
//! group holding a conflict and a replayed key (each answered on its own, the rest written). A
//! third figure appends the very batches the command path appended straight to the store, so that
//! group commit is measured against the raw inserts without the command path's reads; a fourth
//! makes only what the path asks of the store before it appends (the idempotency pre-check and the
//! new buyer's key), so the command path's cost splits into those, its append and the rest.

use crate::raw::{EventRow, RawPool, Record};
use crate::support::{Backend, BenchDatabase, Measured, Row};
use aggregates::catalog::{BillingCycle, Catalog};
use aggregates::decider::EncodedEvent;
use aggregates::ids::Email;
use aggregates::license::LicenseOrigin;
use aggregates::log::EventMetadata;
use aggregates::log::{StreamName, StreamVersion};
use chrono::Utc;
use pulse_account::crypto::KeyMaterial;
use pulse_account::engine::store::{
    AppendBatch, Idempotency, PersonKey, Store, StoreError, StreamAppend,
};
use pulse_account::flows::licensing::{Licensing, NewLicense, TokenBindings};
use std::sync::Arc;
use std::time::Instant;

/// Appends of the mixed group: fresh streams around the conflict and the replays.
const MIXED_FRESH: usize = 24;

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
        let before = store.append_groups();
        let ours = ours_path(&store, keys, writers, commands).await;
        let after = store.append_groups();
        let mean_group =
            (after.appends - before.appends) as f64 / (after.groups - before.groups).max(1) as f64;
        let pool = ours_db.pool(1).await;
        let written = Arc::new(pool.written().await);
        pool.close().await;
        if writers == WRITERS[WRITERS.len() - 1] {
            mixed_group(&store).await;
        }
        drop(store);
        assert_eq!(written.len(), commands, "every command wrote once");
        let raw_db = BenchDatabase::create(admin, "append_raw", backend).await;
        drop(raw_db.store().await);
        let raw_pool = raw_db.pool(writers as u32).await;
        let raw = raw_inserts(&raw_pool, &written, writers).await;
        raw_pool.close().await;
        // The same appends straight to the store: group commit against the raw inserts, without
        // the command path's reads and decisions.
        let store_db = BenchDatabase::create(admin, "append_store", backend).await;
        let plain = store_db.store().await;
        let batches: Arc<Vec<AppendBatch>> = Arc::new(
            written
                .iter()
                .map(|(events, record)| batch_of(events, record))
                .collect(),
        );
        let reads = command_reads(&plain, &batches, writers).await;
        let before = plain.append_groups();
        let appended = store_appends(&plain, &batches, writers).await;
        let after = plain.append_groups();
        let store_mean_group =
            (after.appends - before.appends) as f64 / (after.groups - before.groups).max(1) as f64;
        drop(plain);
        // Dropped last: dropping a database checkpoints the server, which would slow what runs next.
        for database in [ours_db, raw_db, store_db] {
            database.drop_database().await;
        }
        eprintln!(
            "{} append, {writers} writer(s): {commands} commands measured",
            backend.label()
        );
        rows.push(Row::throughput(
            &format!(
                "{} append: purchase commands, {writers} writer(s), {mean_group:.1} appends a commit",
                backend.label()
            ),
            "cmd",
            ours,
            raw,
            (writers == 16).then_some(1.0),
        ));
        rows.push(Row::throughput(
            &format!(
                "{} append: the same appends straight to the store, {writers} writer(s), {store_mean_group:.1} appends a commit",
                backend.label()
            ),
            "cmd",
            appended,
            raw,
            None,
        ));
        rows.push(Row::throughput(
            &format!(
                "{} append: only what the command path asks before it appends, {writers} writer(s)",
                backend.label()
            ),
            "cmd",
            reads,
            raw,
            None,
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
    let (pool, written) = (pool.clone(), Arc::clone(written));
    from_writers(writers, written.len(), move |command| {
        let (pool, written) = (pool.clone(), Arc::clone(&written));
        async move {
            let (events, record) = &written[command];
            pool.insert_command(events, record).await;
        }
    })
    .await
}

/// Group commit with refusals in the group: appends queued together, among them one at a stale
/// version and one replaying a recorded key, each answered on its own; the others are written.
async fn mixed_group(store: &Arc<dyn Store>) {
    let touch = |id: &str, expected: i64, key: Option<&str>| AppendBatch {
        appends: vec![StreamAppend {
            stream: StreamName::parse("license", id).expect("a stream name"),
            expected_version: StreamVersion(expected),
            events: vec![EncodedEvent {
                event_type: String::from("bench_touched"),
                schema_version: 1,
                payload: serde_json::json!({ "id": id }),
            }],
        }],
        metadata: EventMetadata {
            request_id: Some(String::from("bench-mixed")),
            ..metadata(0)
        },
        idempotency: key.map(|key| Idempotency::for_request(key, &id)),
    };
    let recorded = store
        .append_batch(touch("lic_mixed_recorded", 0, Some("bench-mixed-recorded")))
        .await
        .expect("the recorded append");
    store
        .append_batch(touch("lic_mixed_moved", 0, None))
        .await
        .expect("the moved stream");
    let before = store.append_groups();
    let mut group: Vec<AppendBatch> = (0..MIXED_FRESH)
        .map(|n| touch(&format!("lic_mixed_{n}"), 0, None))
        .collect();
    group.insert(MIXED_FRESH / 3, touch("lic_mixed_moved", 0, None));
    group.insert(
        2 * MIXED_FRESH / 3,
        touch("lic_mixed_recorded", 0, Some("bench-mixed-recorded")),
    );
    let count = group.len();
    let answers =
        futures_util::future::join_all(group.into_iter().map(|b| store.append_batch(b))).await;
    let after = store.append_groups();
    assert!(
        after.groups - before.groups < count as u64,
        "appends queued together share commits: {before:?} → {after:?}"
    );
    let mut written = 0;
    for (n, answer) in answers.into_iter().enumerate() {
        match answer {
            Err(StoreError::WrongExpectedVersion { .. }) if n == MIXED_FRESH / 3 => {}
            Ok(outcome) if n == 2 * MIXED_FRESH / 3 => {
                assert!(outcome.replayed(), "the recorded key replays");
                assert_eq!(outcome.last_position(), recorded.last_position());
            }
            Ok(outcome) if !outcome.replayed() => written += 1,
            other => panic!("append {n} of the mixed group: {other:?}"),
        }
    }
    assert_eq!(written, MIXED_FRESH, "every fresh append is written");
}

/// The batch one command appended, rebuilt from the rows it wrote: its streams at the versions
/// before it, its events and metadata, its idempotency key.
fn batch_of(events: &[EventRow], record: &Record) -> AppendBatch {
    let mut appends: Vec<StreamAppend> = Vec::new();
    for (stream_type, stream_id, version, _, event_type, schema_version, payload, _, _) in events {
        let stream = StreamName::parse(stream_type, stream_id).expect("a stored stream name");
        let event = EncodedEvent {
            event_type: event_type.clone(),
            schema_version: *schema_version,
            payload: serde_json::from_str(payload).expect("a stored payload"),
        };
        match appends.iter_mut().find(|a| a.stream == stream) {
            Some(append) => append.events.push(event),
            None => appends.push(StreamAppend {
                stream,
                expected_version: StreamVersion(version - 1),
                events: vec![event],
            }),
        }
    }
    let metadata = serde_json::from_str(&events[0].7).expect("stored metadata");
    let fingerprint = record.1.clone().try_into().expect("a 32-byte fingerprint");
    AppendBatch {
        appends,
        metadata,
        idempotency: Some(Idempotency {
            key: record.0.clone(),
            fingerprint,
        }),
    }
}

/// What a purchase command asks of the store before it appends, for every command, from
/// `writers` concurrent writers: the idempotency pre-check and storing the new buyer's key (it
/// loads no stream: the streams it creates are named by ids it drew).
async fn command_reads(
    store: &Arc<dyn Store>,
    batches: &Arc<Vec<AppendBatch>>,
    writers: usize,
) -> Measured {
    let (store, batches) = (Arc::clone(store), Arc::clone(batches));
    from_writers(writers, batches.len(), move |command| {
        let (store, batches) = (Arc::clone(&store), Arc::clone(&batches));
        async move {
            let batch = &batches[command];
            let idempotency = batch.idempotency.as_ref().expect("a keyed command");
            let recorded = store.idempotent_outcome(idempotency).await.unwrap();
            assert!(recorded.is_none(), "every key is new");
            store
                .live_person_key(&PersonKey {
                    key_id: format!("key_bench_{command}"),
                    person_id: format!("person_bench_{command}"),
                    wrapped_key: Some(vec![7; 60]),
                })
                .await
                .unwrap();
        }
    })
    .await
}

/// Appends every command's batch to `store` from `writers` concurrent writers.
async fn store_appends(
    store: &Arc<dyn Store>,
    batches: &Arc<Vec<AppendBatch>>,
    writers: usize,
) -> Measured {
    let (store, batches) = (Arc::clone(store), Arc::clone(batches));
    from_writers(writers, batches.len(), move |command| {
        let (store, batches) = (Arc::clone(&store), Arc::clone(&batches));
        async move {
            let outcome = store
                .append_batch(batches[command].clone())
                .await
                .expect("the append is written");
            assert!(!outcome.replayed(), "every key is new");
        }
    })
    .await
}

/// Runs `command(0..commands)` from `writers` concurrent tasks, each taking every `writers`-th
/// command in turn, timing each.
async fn from_writers<F, Fut>(writers: usize, commands: usize, command: F) -> Measured
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let command = command.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for n in (writer..commands).step_by(writers) {
                    let one = Instant::now();
                    command(n).await;
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
