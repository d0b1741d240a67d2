//! What every benchmark shares: a fresh database per benchmark, latency percentiles, peak-memory
//! sampling, and the results table.

use crate::raw::RawPool;
use pulse_account::crypto::KeyMaterial;
use pulse_account::engine::personal_data::PersonalDataStore;
use pulse_account::engine::store::upcast::Upcasters;
use pulse_account::engine::store::{self, Store};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The store a benchmark runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// Both, PostgreSQL first.
    pub(crate) const ALL: [Backend; 2] = [Backend::Postgres, Backend::Sqlite];

    /// The word that chooses it on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }

    /// Its name in the table.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        }
    }
}

/// A throwaway database for one benchmark — a new PostgreSQL database next to the admin URL's,
/// or a SQLite file in a temporary directory — removed at the end.
pub(crate) struct BenchDatabase {
    pub(crate) url: String,
    admin_url: String,
    postgres_name: Option<String>,
    _directory: tempfile::TempDir,
}

impl BenchDatabase {
    /// Creates an empty database.
    pub(crate) async fn create(admin_url: &str, purpose: &str, backend: Backend) -> BenchDatabase {
        use sqlx::Connection;
        let directory = tempfile::tempdir().expect("a temporary directory");
        if backend == Backend::Sqlite {
            return BenchDatabase {
                url: format!("sqlite://{}", directory.path().join("bench.db").display()),
                admin_url: admin_url.to_owned(),
                postgres_name: None,
                _directory: directory,
            };
        }
        let name = format!("pulse_bench_{purpose}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE");
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(base, _)| base);
        BenchDatabase {
            url: format!("{base}/{name}"),
            admin_url: admin_url.to_owned(),
            postgres_name: Some(name),
            _directory: directory,
        }
    }

    /// Opens and migrates the ledger's store on it.
    pub(crate) async fn store(&self) -> Arc<dyn Store> {
        let store = store::open(&self.url, Arc::new(Upcasters::domain()))
            .await
            .expect("open the store");
        store.migrate().await.expect("migrate");
        store
    }

    /// The store as the service uses it: personal data sealed under `keys`.
    pub(crate) async fn sealed_store(&self, keys: &Arc<KeyMaterial>) -> Arc<dyn Store> {
        Arc::new(PersonalDataStore::new(self.store().await, Arc::clone(keys)))
    }

    /// A plain connection pool for the raw baselines.
    pub(crate) async fn pool(&self, size: u32) -> RawPool {
        RawPool::connect(&self.url, size).await
    }

    /// Drops the database (the SQLite file goes with its directory).
    pub(crate) async fn drop_database(self) {
        use sqlx::Connection;
        let Some(name) = &self.postgres_name else {
            return;
        };
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .expect("DROP DATABASE");
    }
}

/// Throughput and latency of one side of a comparison.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Measured {
    /// Operations (or events, or requests) per second.
    pub(crate) per_second: f64,
    /// Median latency of one operation, if measured per operation.
    pub(crate) p50: Option<Duration>,
    /// 99th-percentile latency.
    pub(crate) p99: Option<Duration>,
}

impl Measured {
    /// From a count over an elapsed time, with per-operation latencies when there are any.
    pub(crate) fn new(count: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Measured {
        latencies.sort();
        let at = |q: usize| {
            latencies
                .get((latencies.len() * q / 100).min(latencies.len().saturating_sub(1)))
                .copied()
        };
        Measured {
            per_second: count as f64 / elapsed.as_secs_f64().max(1e-9),
            p50: at(50),
            p99: at(99),
        }
    }
}

/// One row of the results table.
pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) ours: String,
    pub(crate) baseline: String,
    pub(crate) ratio: f64,
    pub(crate) target: String,
}

impl Row {
    /// A throughput comparison: ours against the baseline, higher is better.
    pub(crate) fn throughput(
        figure: &str,
        unit: &str,
        ours: Measured,
        baseline: Measured,
        target: Option<f64>,
    ) -> Row {
        let latency = |m: Measured| match (m.p50, m.p99) {
            (Some(p50), Some(p99)) => format!(" (p50 {:.2} ms, p99 {:.2} ms)", ms(p50), ms(p99)),
            _ => String::new(),
        };
        let ratio = ours.per_second / baseline.per_second.max(1e-9);
        Row {
            figure: figure.to_owned(),
            ours: format!("{:.0} {unit}/s{}", ours.per_second, latency(ours)),
            baseline: format!("{:.0} {unit}/s{}", baseline.per_second, latency(baseline)),
            ratio,
            target: target.map_or_else(
                || String::from("-"),
                |target| verdict(ratio >= target, format!("≥ {target}×")),
            ),
        }
    }
}

/// Milliseconds, for printing.
pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// `target (met)` or `target (MISSED)`.
pub(crate) fn verdict(met: bool, target: String) -> String {
    format!("{target} {}", if met { "met" } else { "MISSED" })
}

/// Prints the table.
pub(crate) fn print_table(rows: &[Row]) {
    println!();
    println!("| figure | ours | raw baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {:.2}× | {} |",
            row.figure, row.ours, row.baseline, row.ratio, row.target
        );
    }
}

/// This process's resident memory now, in KiB (Linux `/proc/self/status`).
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Samples resident memory every 10 ms while a measurement runs; reports the growth over the
/// resident memory at the start.
pub(crate) struct PeakMemory {
    start: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<()>,
}

impl PeakMemory {
    /// Starts sampling.
    pub(crate) fn start() -> PeakMemory {
        let start = resident_kib();
        let peak = Arc::new(AtomicU64::new(start));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(resident_kib(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        PeakMemory {
            start,
            peak,
            stop,
            sampler,
        }
    }

    /// Stops sampling; the peak growth in MiB.
    pub(crate) fn growth_mib(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.sampler.join();
        self.peak.load(Ordering::Relaxed).saturating_sub(self.start) as f64 / 1024.0
    }
}
