//! Account replay, on each store: rebuilding one hosted account's state from its stream (the
//! command path's load: read every event, open its personal data, decode, fold) at 1,000 and
//! 10,000 events, against a raw read of the same rows. Each is timed several times; the median counts.

use crate::generate::account_history;
use crate::support::{ms, Backend, BenchDatabase, Row};
use aggregates::account::Account;
use aggregates::catalog::Catalog;
use aggregates::log::EventMetadata;
use pulse_account::command::load;
use pulse_account::crypto::KeyMaterial;
use pulse_account::personal_data::PersonalDataStore;
use pulse_account::store::{AppendBatch, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Timings per size; the median is reported.
const RUNS: usize = 7;
/// The target for the largest account.
const TARGET: Duration = Duration::from_millis(20);

pub(crate) async fn run(
    admin: &str,
    backend: Backend,
    sizes: crate::Sizes,
    keys: &Arc<KeyMaterial>,
) -> Vec<Row> {
    let db = BenchDatabase::create(admin, "replay", backend).await;
    let store: Arc<dyn Store> =
        Arc::new(PersonalDataStore::new(db.store().await, Arc::clone(keys)));
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
        let ours = median(RUNS, || async {
            let (state, version) = load::<Account>(store.as_ref(), &stream)
                .await
                .expect("load");
            assert_eq!(version.0 as usize, events, "every event folded");
            drop(state);
        })
        .await;
        let raw = median(RUNS, || async {
            let read = pool
                .read_stream(stream.stream_type(), stream.stream_id())
                .await;
            assert_eq!(read, events);
        })
        .await;
        let target = if events >= 10_000 {
            crate::support::verdict(ours < TARGET, format!("< {} ms", TARGET.as_millis()))
        } else {
            String::from("-")
        };
        rows.push(Row {
            figure: format!(
                "{} replay: load one account of {events} events (median of {RUNS})",
                backend.label()
            ),
            ours: format!("{:.2} ms", ms(ours)),
            baseline: format!("{:.2} ms raw read of its rows", ms(raw)),
            ratio: raw.as_secs_f64() / ours.as_secs_f64().max(1e-9),
            target,
        });
    }
    pool.close().await;
    drop(store);
    db.drop_database().await;
    rows
}

async fn median<F, Fut>(runs: usize, mut run: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        run().await;
        times.push(started.elapsed());
    }
    times.sort();
    times[runs / 2]
}
