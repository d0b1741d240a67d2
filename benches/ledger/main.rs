//! The ledger's benchmarks: `cargo bench --bench ledger` runs them all on PostgreSQL, then on
//! SQLite, and prints one table (`cargo bench --bench ledger -- append replay` runs only the figures
//! named, `-- replay postgres` only on that store) — each figure beside a raw baseline measured in
//! the same run on the same server, and the ratio — because these machines are shared and noisy and
//! only ratios travel. See `BENCHMARKS.md`.
//!
//! Run without `--bench` (as `cargo test` runs it), it is a smoke run: the same code paths at tiny
//! sizes, with sanity checks, so the test suite proves the benchmark still works. PostgreSQL is
//! found at `PULSE_ACCOUNT_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! each benchmark makes a database of its own there and drops it. With PostgreSQL unreachable the
//! smoke run says so and skips, unless `PULSE_ACCOUNT_REQUIRE_POSTGRES=1` (CI), where it fails.

mod append;
mod catch_up;
mod generate;
mod raw;
mod read_path;
mod replay;
mod support;

use pulse_account::crypto::{KeyConfig, KeyMaterial};
use std::sync::Arc;
use std::time::Duration;
use support::Backend;

/// The service binary's allocator, so that both sides of each ratio run on what production runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How big each benchmark is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    /// Commands per writer count in the append benchmark.
    pub(crate) append_commands: usize,
    /// Events in the log the catch-up and export benchmarks read, at each size measured.
    pub(crate) log_events: [usize; 2],
    /// Events of the account streams replayed.
    pub(crate) replay_events: [usize; 2],
    /// How long the load generator runs against each route.
    pub(crate) read_duration: Duration,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            append_commands: 4_000,
            log_events: [100_000, 1_000_000],
            replay_events: [1_000, 10_000],
            read_duration: Duration::from_secs(10),
        }
    }

    fn smoke() -> Sizes {
        Sizes {
            append_commands: 48,
            log_events: [1_000, 3_000],
            replay_events: [100, 300],
            read_duration: Duration::from_millis(500),
        }
    }
}

/// The keys every benchmark uses: configured, so no development file is written.
pub(crate) fn key_config() -> KeyConfig {
    use base64::Engine;
    let encode = |byte: u8| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([byte; 32]);
    KeyConfig {
        signing_key: Some(format!("bench-1:{}", encode(1)).into()),
        secret_hash_key: Some(encode(2).into()),
        master_key: Some(encode(3).into()),
    }
}

fn keys() -> Arc<KeyMaterial> {
    let keys = KeyMaterial::load(&key_config(), &std::env::temp_dir());
    Arc::new(keys.expect("the benchmark keys load"))
}

fn admin_url() -> String {
    std::env::var("PULSE_ACCOUNT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| String::from("postgres://postgres@127.0.0.1:5432/postgres"))
}

async fn postgres_reachable(url: &str) -> bool {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.is_ok()
}

/// The figures, by the names that choose them on the command line.
const FIGURES: [&str; 4] = ["append", "catch_up", "replay", "read_path"];

/// What the command line chose: the figures and the stores named, or all of either when none is.
struct Chosen {
    figures: Vec<String>,
    backends: Vec<Backend>,
}

impl Chosen {
    /// Every figure on every store: what the smoke run always runs, whatever test filters
    /// `cargo test` passes on to it.
    fn all() -> Chosen {
        Chosen {
            figures: Vec::new(),
            backends: Backend::ALL.to_vec(),
        }
    }

    /// Reads the words after `--` of a full run (flags such as cargo's `--bench` are not
    /// choices). A word that names neither a figure nor a store stops the run, so a typo never
    /// measures nothing.
    fn from_args() -> Chosen {
        let mut chosen = Chosen {
            figures: Vec::new(),
            backends: Vec::new(),
        };
        for word in std::env::args().skip(1).filter(|arg| !arg.starts_with('-')) {
            if let Some(backend) = Backend::ALL.into_iter().find(|b| b.name() == word) {
                chosen.backends.push(backend);
            } else if FIGURES.contains(&word.as_str()) {
                chosen.figures.push(word);
            } else {
                let stores = Backend::ALL.map(Backend::name);
                panic!("unknown benchmark {word:?}: choose from {FIGURES:?} and {stores:?}");
            }
        }
        if chosen.backends.is_empty() {
            chosen.backends = Backend::ALL.to_vec();
        }
        chosen
    }

    /// Whether the figure `name` runs.
    fn figure(&self, name: &str) -> bool {
        self.figures.is_empty() || self.figures.iter().any(|given| given == name)
    }
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (sizes, chosen) = if full {
        (Sizes::full(), Chosen::from_args())
    } else {
        (Sizes::smoke(), Chosen::all())
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let admin = admin_url();
        if !postgres_reachable(&admin).await {
            let required = std::env::var("PULSE_ACCOUNT_REQUIRE_POSTGRES").as_deref() == Ok("1");
            assert!(
                !required,
                "PostgreSQL is required but unreachable at {admin}"
            );
            eprintln!("ledger benchmark: PostgreSQL unreachable at {admin}: SKIPPED");
            return;
        }
        let mode = if full {
            "full run"
        } else {
            "smoke run (pass --bench for the full run)"
        };
        eprintln!("ledger benchmark, {mode}: {sizes:?}");
        let keys = keys();
        let mut rows = Vec::new();
        for backend in chosen.backends.iter().copied() {
            if chosen.figure("append") {
                rows.extend(append::run(&admin, backend, sizes, &keys).await);
            }
            if chosen.figure("catch_up") {
                rows.extend(catch_up::run(&admin, backend, sizes, &keys).await);
            }
            if chosen.figure("replay") {
                rows.extend(replay::run(&admin, backend, sizes, &keys).await);
            }
            if chosen.figure("read_path") {
                rows.extend(read_path::run(&admin, backend, sizes).await);
            }
        }
        support::print_table(&rows);
    });
}
