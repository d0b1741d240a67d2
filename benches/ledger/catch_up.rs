//! Catch-up and export, on each store, over one large log of license histories (`generate.rs`)
//! written through the sealing store as the service writes it:
//! - a full rebuild of the `licenses` read model (what every entitlement is computed from) against
//!   a raw sequential read of the same rows, with the time its batches spent reading, loading
//!   documents, folding and writing;
//! - the chained JSONL export against `COPY (SELECT …) TO STDOUT` of the same rows (SQLite has no
//!   COPY: a raw read), with the peak memory of a tenth of the export beside that of the whole, to
//!   show it does not grow.
//!
//! Both are measured at two sizes of the same log (filled to the first, measured, filled on), to
//! show how each cost grows.

use crate::generate::license_history;
use crate::raw::RawPool;
use crate::support::{Backend, BenchDatabase, Measured, PeakMemory, Row};
use aggregates::catalog::Catalog;
use aggregates::log::{EventMetadata, Position};
use pulse_account::crypto::KeyMaterial;
use pulse_account::engine::audit::{export_to, ExportFormat, ExportOutput};
use pulse_account::engine::projection::registry;
use pulse_account::engine::projection::runner::{Runner, RunnerConfig};
use pulse_account::engine::store::{AppendBatch, Store, APPEND_EVENTS_MAX, APPEND_STREAMS_MAX};
use pulse_account::metrics::Metrics;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Concurrent writers filling the log.
const GENERATORS: u64 = 4;

pub(crate) async fn run(
    admin: &str,
    backend: Backend,
    sizes: crate::Sizes,
    keys: &Arc<KeyMaterial>,
) -> Vec<Row> {
    let db = BenchDatabase::create(admin, "catch_up", backend).await;
    let store = db.sealed_store(keys).await;
    let pool = db.pool(2).await;
    let mut rows = Vec::new();
    let mut events = 0;
    let licenses = Arc::new(AtomicU64::new(0));
    // The same log at each size: filled to the first, measured, filled on to the next.
    for size in sizes.log_events {
        events += fill(&store, size.saturating_sub(events), &licenses).await;
        rows.extend(measure(&store, &pool, backend, keys, events).await);
    }
    pool.close().await;
    drop(store);
    db.drop_database().await;
    rows
}

/// The rebuild and the export over the log as it stands (`events` events), each beside its raw
/// baseline.
async fn measure(
    store: &Arc<dyn Store>,
    pool: &RawPool,
    backend: Backend,
    keys: &Arc<KeyMaterial>,
    events: usize,
) -> Vec<Row> {
    let licenses = registry()
        .into_iter()
        .find(|fold| fold.name() == "licenses")
        .expect("the licenses projection");
    let runner = Runner::new(
        Arc::clone(store),
        licenses,
        RunnerConfig::rebuild(),
        Arc::new(Metrics::default()),
    )
    .expect("a runner");
    let memory = PeakMemory::start();
    let started = Instant::now();
    let report = runner.rebuild(&mut |_, _| {}).await.expect("the rebuild");
    let rebuild = Measured::new(report.events as usize, started.elapsed(), Vec::new());
    let rebuild_memory = memory.growth_mib();
    assert_eq!(
        report.events as usize, events,
        "the rebuild folds every event"
    );
    let phases = report.phases;
    let seconds = |d: std::time::Duration| d.as_secs_f64();
    let breakdown = format!(
        "its tasks busy: reading {:.1} s, loading {:.1} s, folding {:.1} s, writing {:.1} s",
        seconds(phases.read),
        seconds(phases.load),
        seconds(phases.fold),
        seconds(phases.write)
    );

    let started = Instant::now();
    let read = pool.read_all().await;
    let raw_read = Measured::new(read, started.elapsed(), Vec::new());
    assert_eq!(read, events, "the raw read sees every event");

    let tenth = Position((events / 10).max(1) as i64);
    let memory = PeakMemory::start();
    let mut output = Counting::default();
    export_to(
        store.as_ref(),
        &keys.signer,
        Position::START,
        Some(tenth),
        ExportFormat::Jsonl,
        &mut output,
    )
    .await
    .expect("a tenth of the export");
    let tenth_memory = memory.growth_mib();
    let memory = PeakMemory::start();
    let mut output = Counting::default();
    let started = Instant::now();
    let manifest = export_to(
        store.as_ref(),
        &keys.signer,
        Position::START,
        None,
        ExportFormat::Jsonl,
        &mut output,
    )
    .await
    .expect("the export");
    let export = Measured::new(manifest.count as usize, started.elapsed(), Vec::new());
    let export_memory = memory.growth_mib();
    assert_eq!(
        manifest.count as usize, events,
        "the export holds every event"
    );

    let started = Instant::now();
    let (copy, baseline) = match pool.copy_out().await {
        Some(bytes) => {
            assert!(bytes > 0, "COPY wrote the rows");
            (
                "COPY TO STDOUT",
                Measured::new(events, started.elapsed(), Vec::new()),
            )
        }
        None => {
            let started = Instant::now();
            let read = pool.read_all().await;
            (
                "a raw SELECT",
                Measured::new(read, started.elapsed(), Vec::new()),
            )
        }
    };
    eprintln!(
        "{} over {events} events: rebuild {breakdown}; export wrote {} bytes",
        backend.label(),
        output.bytes
    );
    vec![
        Row::throughput(
            &format!(
                "{} catch-up: rebuild `licenses` over {events} events vs a raw SELECT (peak +{rebuild_memory:.0} MiB; {breakdown})",
                backend.label()
            ),
            "ev",
            rebuild,
            raw_read,
            Some(0.5),
        ),
        Row::throughput(
            &format!(
                "{} export: chained JSONL of {events} events vs {copy} (peak +{export_memory:.0} MiB; a tenth: +{tenth_memory:.0} MiB)",
                backend.label()
            ),
            "ev",
            export,
            baseline,
            Some(0.7),
        ),
    ]
}

/// Writes license histories of new licenses (numbered on from `next`) until it has written at
/// least `target` events; returns how many.
async fn fill(store: &Arc<dyn Store>, target: usize, next: &Arc<AtomicU64>) -> usize {
    let written = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..GENERATORS)
        .map(|_| {
            let (store, written, next) =
                (Arc::clone(store), Arc::clone(&written), Arc::clone(next));
            tokio::spawn(async move {
                let catalog = Catalog::v1();
                let start = chrono::Utc::now() - chrono::Duration::days(400);
                let mut pending: Vec<pulse_account::engine::store::StreamAppend> = Vec::new();
                while written.load(Ordering::Relaxed) < target as u64 {
                    let history =
                        license_history(next.fetch_add(1, Ordering::Relaxed), &catalog, start);
                    let pending_events: usize = pending.iter().map(|a| a.events.len()).sum();
                    if pending_events + history.events.len() > APPEND_EVENTS_MAX
                        || pending.len() == APPEND_STREAMS_MAX
                    {
                        let appends = std::mem::take(&mut pending);
                        written.fetch_add(pending_events as u64, Ordering::Relaxed);
                        append(&store, appends).await;
                    }
                    pending.push(history);
                }
                let pending_events: usize = pending.iter().map(|a| a.events.len()).sum();
                if pending_events > 0 {
                    written.fetch_add(pending_events as u64, Ordering::Relaxed);
                    append(&store, pending).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a generator finishes");
    }
    let events = written.load(Ordering::Relaxed) as usize;
    eprintln!(
        "generated {events} events of {} licenses in {:.1?}",
        next.load(Ordering::Relaxed),
        started.elapsed()
    );
    events
}

async fn append(store: &Arc<dyn Store>, appends: Vec<pulse_account::engine::store::StreamAppend>) {
    store
        .append_batch(AppendBatch {
            appends,
            metadata: EventMetadata {
                actor: String::from("stripe"),
                causation_id: None,
                correlation_id: None,
                request_id: None,
                effective_at: chrono::Utc::now(),
            },
            idempotency: None,
        })
        .await
        .expect("a generated batch appends");
}

/// Counts what the export writes, and drops it.
#[derive(Default)]
struct Counting {
    bytes: u64,
}

#[async_trait::async_trait]
impl ExportOutput for Counting {
    async fn write_page(&mut self, bytes: Vec<u8>, _reached: Position) -> std::io::Result<()> {
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}
