//! Account replay, on each store: rebuilding one hosted account's state from its stream at 1,000
//! and 10,000 events, two ways. The full fold (no snapshot: read every event, open its personal
//! data, decode, fold; beside it the reading alone) against a raw read of the same rows; and the
//! command path's load as it runs, from the account's snapshot, here the worst case: one
//! [`SNAPSHOT_EVERY`] − 1 events behind the head. Each is timed several times; the median counts.

use crate::generate::account_history;
use crate::support::{ms, Backend, BenchDatabase, Row};
use aggregates::account::Account;
use aggregates::catalog::Catalog;
use aggregates::decider::Decider;
use aggregates::log::{EventMetadata, StreamName, StreamVersion};
use pulse_account::crypto::KeyMaterial;
use pulse_account::engine::command::{load_until, SNAPSHOT_EVERY};
use pulse_account::engine::store::{AppendBatch, Snapshot, Store, READ_PAGE_MAX};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Timings per size; the median is reported.
const RUNS: usize = 7;
/// Issue 16's targets for the largest account: its load as commands run, and its full fold.
const LOAD_TARGET: Duration = Duration::from_millis(5);
const FOLD_TARGET: Duration = Duration::from_millis(50);

pub(crate) async fn run(
    admin: &str,
    backend: Backend,
    sizes: crate::Sizes,
    keys: &Arc<KeyMaterial>,
) -> Vec<Row> {
    let db = BenchDatabase::create(admin, "replay", backend).await;
    let store = db.sealed_store(keys).await;
    let unsealed = db.store().await;
    let pool = db.pool(1).await;
    let catalog = Catalog::v1();
    let mut rows = Vec::new();
    for (n, events) in sizes.replay_events.into_iter().enumerate() {
        let (stream, appends) = account_history(n as u64 + 1, events, &catalog, chrono::Utc::now());
        for append in appends {
            store
                .append_batch(AppendBatch {
                    appends: vec![append],
                    metadata: EventMetadata {
                        actor: String::from("tenant"),
                        causation_id: None,
                        correlation_id: None,
                        request_id: None,
                        effective_at: chrono::Utc::now(),
                    },
                    idempotency: None,
                })
                .await
                .expect("the account's history appends");
        }
        let full_fold = median(RUNS, || async {
            store.delete_snapshots().await.expect("delete snapshots");
            timed_load(store.as_ref(), &stream, events).await
        })
        .await;
        let behind = head(events).0.saturating_sub(SNAPSHOT_EVERY - 1).max(1);
        let (past, _) = load_until::<Account>(store.as_ref(), &stream, StreamVersion(behind))
            .await
            .expect("load");
        let codec = Account::SNAPSHOTS.expect("accounts keep snapshots");
        let snapshot = Snapshot {
            stream: stream.clone(),
            state_version: codec.state_version,
            stream_version: StreamVersion(behind),
            state: (codec.encode)(&past).expect("encode"),
        };
        let from_snapshot = median(RUNS, || async {
            store.save_snapshot(&snapshot).await.expect("save snapshot");
            timed_load(store.as_ref(), &stream, events).await
        })
        .await;
        let store_read = median(RUNS, || timed_read(store.as_ref(), &stream, events)).await;
        let unsealed_read = median(RUNS, || timed_read(unsealed.as_ref(), &stream, events)).await;
        let raw = median(RUNS, || async {
            let started = Instant::now();
            let read = pool
                .read_stream(stream.stream_type(), stream.stream_id())
                .await;
            let elapsed = started.elapsed();
            assert_eq!(read, events);
            elapsed
        })
        .await;
        let target = |measured: Duration, target: Duration| {
            if events >= 10_000 {
                crate::support::verdict(measured < target, format!("< {} ms", target.as_millis()))
            } else {
                String::from("-")
            }
        };
        rows.push(Row {
            figure: format!(
                "{} replay: fold one account of {events} events, no snapshot (median of {RUNS}; \
                 reading its events through the store alone: {:.2} ms, {:.2} ms of it without \
                 opening personal data)",
                backend.label(),
                ms(store_read),
                ms(unsealed_read)
            ),
            ours: format!("{:.2} ms", ms(full_fold)),
            baseline: format!("{:.2} ms raw read of its rows", ms(raw)),
            ratio: raw.as_secs_f64() / full_fold.as_secs_f64().max(1e-9),
            target: target(full_fold, FOLD_TARGET),
        });
        rows.push(Row {
            figure: format!(
                "{} replay: load one account of {events} events from a snapshot {} behind (median of {RUNS})",
                backend.label(),
                head(events).0 - behind
            ),
            ours: format!("{:.2} ms", ms(from_snapshot)),
            baseline: format!("{:.2} ms raw read of all its rows", ms(raw)),
            ratio: raw.as_secs_f64() / from_snapshot.as_secs_f64().max(1e-9),
            target: target(from_snapshot, LOAD_TARGET),
        });
    }
    pool.close().await;
    drop(unsealed);
    drop(store);
    db.drop_database().await;
    rows
}

/// Loads the account's state at its head (without saving a snapshot); returns how long it took.
async fn timed_load(store: &dyn Store, stream: &StreamName, events: usize) -> Duration {
    let started = Instant::now();
    let (state, version) = load_until::<Account>(store, stream, head(events))
        .await
        .expect("load");
    let elapsed = started.elapsed();
    assert_eq!(version, head(events), "every event folded");
    drop(state);
    elapsed
}

/// Reads the whole stream through the store, page by page, as the full fold does but folding
/// nothing: the rows, their decoding and (through the sealing store) the opening of personal
/// data. Returns how long it took.
async fn timed_read(store: &dyn Store, stream: &StreamName, events: usize) -> Duration {
    let started = Instant::now();
    let mut from = StreamVersion(1);
    let mut read = 0;
    loop {
        let page = store
            .read_stream(stream, from, READ_PAGE_MAX)
            .await
            .expect("a stream page");
        let Some(last) = page.last() else { break };
        from = last.stream_version.next();
        read += page.len();
    }
    let elapsed = started.elapsed();
    assert_eq!(read, events, "every event read");
    elapsed
}

/// The stream version after `events` events.
fn head(events: usize) -> StreamVersion {
    StreamVersion(events as i64)
}

/// The median of `runs` timings, each returned by `run` (so it can leave its set-up untimed).
async fn median<F, Fut>(runs: usize, mut run: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        times.push(run().await);
    }
    times.sort();
    times[runs / 2]
}
