//! Test helpers: a fresh database per test on either store, raw SQL access for fault injection,
//! and the macro that runs one test body on both stores.
//!
//! PostgreSQL is found at `PULSE_ACCOUNT_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates its own database there and
//! drops it when it passes. When PostgreSQL is unreachable the PostgreSQL tests fail: the test
//! script (`scripts/test`) decides up front whether to run them, and says so.

use aggregates::decider::EncodedEvent;
use aggregates::log::{EventMetadata, Position, StreamName, StreamVersion};
use chrono::{TimeZone, Utc};
use pulse_account::engine::store::upcast::Upcasters;
use pulse_account::engine::store::{self, AppendRequest, Store};
use sqlx::Connection;
use std::sync::Arc;

/// The advisory-lock key PostgreSQL appends take around their insert (migration
/// `20261202000003_append_batch_function.sql`).
pub(crate) const APPEND_LOCK_KEY: i64 = 8_103_502_347_400_866_919;

/// A connection holding every append back (see [`TestDatabase::hold_writes`]).
pub(crate) enum WriteHold {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteHold {
    /// Lets the waiting appends go.
    pub(crate) async fn release(self) {
        match self {
            WriteHold::Sqlite(mut connection) => {
                sqlx::raw_sql("ROLLBACK")
                    .execute(&mut connection)
                    .await
                    .expect("release the write lock");
            }
            WriteHold::Postgres(mut connection) => {
                sqlx::raw_sql(&format!("SELECT pg_advisory_unlock({APPEND_LOCK_KEY})"))
                    .execute(&mut connection)
                    .await
                    .expect("release the append lock");
            }
        }
    }
}

/// Which store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named async test body (`async fn name(backend: Backend)`) on SQLite and on PostgreSQL,
/// as `…::sqlite::name` and `…::postgres::name`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

/// The PostgreSQL server the tests create their databases on.
pub(crate) fn postgres_admin_url() -> String {
    std::env::var("PULSE_ACCOUNT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| String::from("postgres://postgres@127.0.0.1:5432/postgres"))
}

/// A database of its own for one test.
pub(crate) struct TestDatabase {
    pub(crate) backend: Backend,
    pub(crate) url: String,
    postgres_name: Option<String>,
    _directory: tempfile::TempDir,
}

impl TestDatabase {
    /// Creates an empty database (a temporary SQLite file, or a new PostgreSQL database).
    pub(crate) async fn new(backend: Backend) -> TestDatabase {
        let directory = tempfile::tempdir().expect("a temporary directory");
        match backend {
            Backend::Sqlite => TestDatabase {
                backend,
                url: format!("sqlite://{}", directory.path().join("test.db").display()),
                postgres_name: None,
                _directory: directory,
            },
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|error| {
                    panic!("PostgreSQL is unreachable at {admin_url} ({error}); start it or run scripts/test, which skips the PostgreSQL suite when it is down")
                });
                let name = format!("pulse_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("CREATE DATABASE");
                let base = admin_url
                    .rsplit_once('/')
                    .map_or(admin_url.as_str(), |(base, _)| base);
                TestDatabase {
                    backend,
                    url: format!("{base}/{name}"),
                    postgres_name: Some(name),
                    _directory: directory,
                }
            }
        }
    }

    /// A data directory of this test's own (development keys live there).
    pub(crate) fn data_dir(&self) -> std::path::PathBuf {
        self._directory.path().join("data")
    }

    /// Opens and migrates a store on this database; a second call opens a second, independent
    /// store, as another process would.
    pub(crate) async fn open(&self) -> Arc<dyn Store> {
        self.open_with(Upcasters::domain()).await
    }

    /// Opens a store with a given upcaster registry.
    pub(crate) async fn open_with(&self, upcasters: Upcasters) -> Arc<dyn Store> {
        let store = store::open(&self.url, Arc::new(upcasters))
            .await
            .expect("open the store");
        store.migrate().await.expect("migrate");
        store
    }

    /// Runs raw SQL statements on this database (fault injection, tampering).
    pub(crate) async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::raw_sql(sql)
                    .execute(&mut connection)
                    .await
                    .expect("raw SQL");
            }
            Backend::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::raw_sql(sql)
                    .execute(&mut connection)
                    .await
                    .expect("raw SQL");
            }
        }
    }

    /// The position of the last event written, once the store shows it to readers. PostgreSQL
    /// keeps a committed event from readers while an older transaction anywhere in the cluster
    /// may still be running (the store's visibility guard errs towards waiting), so "the head
    /// after my writes" is read from the table itself and then waited for; a write the service
    /// makes meanwhile (the outbox recording a delivery) is read again and waited for too.
    pub(crate) async fn settled_head(&self, store: &dyn Store) -> Position {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let written = Position(self.max_position().await);
            let visible = store.head_position().await.expect("read the head");
            if visible == written {
                return written;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the store still shows {visible:?} as its head, not the written {written:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Holds what every append of this database waits for, from a connection of its own, until
    /// [`WriteHold::release`]: on PostgreSQL the append lock (an append waits just before its
    /// insert), on SQLite the file's write lock (an append waits to begin). Appends made meanwhile
    /// queue behind the one that waits, and commit together once it lets go.
    pub(crate) async fn hold_writes(&self) -> WriteHold {
        match self.backend {
            Backend::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut connection)
                    .await
                    .expect("take the write lock");
                WriteHold::Sqlite(connection)
            }
            Backend::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::raw_sql(&format!("SELECT pg_advisory_lock({APPEND_LOCK_KEY})"))
                    .execute(&mut connection)
                    .await
                    .expect("take the append lock");
                WriteHold::Postgres(connection)
            }
        }
    }

    /// Like [`TestDatabase::execute`], returning the database's error instead of panicking.
    pub(crate) async fn try_execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url).await?;
                sqlx::raw_sql(sql)
                    .execute(&mut connection)
                    .await
                    .map(|_| ())
            }
            Backend::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&self.url).await?;
                sqlx::raw_sql(sql)
                    .execute(&mut connection)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Every table of the database with how many of its rows contain `needle` anywhere
    /// (case-insensitive), for the tables where some row does.
    pub(crate) async fn tables_containing(&self, needle: &str) -> Vec<(String, i64)> {
        let pattern = format!("%{needle}%");
        let mut found = Vec::new();
        match self.backend {
            Backend::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                let tables: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                        .fetch_all(&mut connection)
                        .await
                        .expect("list tables");
                for table in tables {
                    let columns: Vec<String> =
                        sqlx::query_scalar("SELECT name FROM pragma_table_info(?1)")
                            .bind(&table)
                            .fetch_all(&mut connection)
                            .await
                            .expect("list columns");
                    let condition = columns
                        .iter()
                        .map(|column| format!("CAST(\"{column}\" AS TEXT) LIKE ?1"))
                        .collect::<Vec<_>>()
                        .join(" OR ");
                    let rows: i64 = sqlx::query_scalar(&format!(
                        "SELECT COUNT(*) FROM \"{table}\" WHERE {condition}"
                    ))
                    .bind(&pattern)
                    .fetch_one(&mut connection)
                    .await
                    .expect("scan a table");
                    if rows > 0 {
                        found.push((table, rows));
                    }
                }
            }
            Backend::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect");
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
                )
                .fetch_all(&mut connection)
                .await
                .expect("list tables");
                for table in tables {
                    let rows: i64 = sqlx::query_scalar(&format!(
                        "SELECT COUNT(*) FROM \"{table}\" AS r WHERE r::text ILIKE $1"
                    ))
                    .bind(&pattern)
                    .fetch_one(&mut connection)
                    .await
                    .expect("scan a table");
                    if rows > 0 {
                        found.push((table, rows));
                    }
                }
            }
        }
        found
    }

    /// The SQLite database's files as they are on disk (the database, its write-ahead log and
    /// shared-memory index, those that exist), with their bytes.
    pub(crate) fn sqlite_files(&self) -> Vec<(String, Vec<u8>)> {
        assert_eq!(self.backend, Backend::Sqlite);
        let path = self.url.trim_start_matches("sqlite://");
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let file = format!("{path}{suffix}");
                std::fs::read(&file).ok().map(|bytes| (file, bytes))
            })
            .collect()
    }

    /// The highest position committed, read without the reader's guard.
    pub(crate) async fn max_position(&self) -> i64 {
        let sql = "SELECT COALESCE(MAX(global_position), 0) FROM events";
        match self.backend {
            Backend::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::query_scalar(sql)
                    .fetch_one(&mut connection)
                    .await
                    .expect("max position")
            }
            Backend::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::query_scalar(sql)
                    .fetch_one(&mut connection)
                    .await
                    .expect("max position")
            }
        }
    }

    /// Every document of a projection's active generation, sorted by key.
    pub(crate) async fn active_documents(
        &self,
        projection: &str,
    ) -> Vec<(String, serde_json::Value)> {
        let sql = "SELECT d.doc_key, CAST(d.body AS TEXT) FROM projection_documents d \
                   JOIN projection_generations g ON g.projection = d.projection AND g.generation = d.generation \
                   WHERE g.projection = $1 AND g.status = 'active' ORDER BY d.doc_key";
        let rows: Vec<(String, String)> = match self.backend {
            Backend::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::query_as(sql)
                    .bind(projection)
                    .fetch_all(&mut connection)
                    .await
                    .expect("documents")
            }
            Backend::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::query_as(sql)
                    .bind(projection)
                    .fetch_all(&mut connection)
                    .await
                    .expect("documents")
            }
        };
        rows.into_iter()
            .map(|(key, body)| (key, serde_json::from_str(&body).expect("JSON body")))
            .collect()
    }

    /// Drops the PostgreSQL database (the SQLite file goes with the temporary directory).
    pub(crate) async fn cleanup(self) {
        if let Some(name) = &self.postgres_name {
            if let Ok(mut admin) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        }
    }
}

/// Fixed metadata for test events.
pub(crate) fn metadata() -> EventMetadata {
    EventMetadata {
        actor: String::from("test"),
        causation_id: None,
        correlation_id: Some(String::from("corr-1")),
        request_id: None,
        effective_at: Utc.with_ymd_and_hms(2026, 4, 1, 12, 0, 0).unwrap(),
    }
}

/// A stream name for tests.
pub(crate) fn stream(stream_type: &str, stream_id: &str) -> StreamName {
    StreamName::parse(stream_type, stream_id).expect("valid stream name")
}

/// A schema-version-1 event with a JSON payload.
pub(crate) fn event(event_type: &str, payload: serde_json::Value) -> EncodedEvent {
    EncodedEvent {
        event_type: event_type.to_owned(),
        schema_version: 1,
        payload,
    }
}

/// An append of `events` at `expected` without an idempotency key.
pub(crate) fn append(
    stream: &StreamName,
    expected: i64,
    events: Vec<EncodedEvent>,
) -> AppendRequest {
    AppendRequest {
        stream: stream.clone(),
        expected_version: StreamVersion(expected),
        events,
        metadata: metadata(),
        idempotency: None,
    }
}

/// The real application on a free loopback port, with a database and data directory of its own.
pub(crate) struct TestApp {
    pub(crate) db: TestDatabase,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) state: pulse_account::http::AppState,
    pub(crate) stripe: crate::fake_stripe::FakeStripe,
    pub(crate) smtp: crate::fake_smtp::FakeSmtp,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    options: AppOptions,
}

/// How a test application is configured.
#[derive(Clone, Default)]
pub(crate) struct AppOptions {
    /// No Stripe key: checkout runs in local mode.
    pub(crate) local_checkout: bool,
    /// The HTTP server's limits.
    pub(crate) server: pulse_account::http::server::ServerLimits,
    /// Another way to the test's database (e.g. through a cuttable proxy).
    pub(crate) database_url: Option<String>,
}

impl TestApp {
    /// Builds and starts the application on `backend`, with Stripe pointed at a local fake.
    pub(crate) async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, AppOptions::default()).await
    }

    /// Builds and starts the application with no Stripe key: checkout runs in local mode.
    pub(crate) async fn spawn_local(backend: Backend) -> TestApp {
        let options = AppOptions {
            local_checkout: true,
            ..AppOptions::default()
        };
        TestApp::spawn_with(backend, options).await
    }

    /// Builds and starts the application on a fresh database of `backend` with `options`.
    pub(crate) async fn spawn_with(backend: Backend, options: AppOptions) -> TestApp {
        let db = TestDatabase::new(backend).await;
        let stripe = crate::fake_stripe::FakeStripe::start().await;
        let smtp = crate::fake_smtp::FakeSmtp::start().await;
        TestApp::start_on(db, stripe, smtp, options).await
    }

    /// Builds and starts the application on `db` with `stripe` as its fake Stripe and `smtp` as
    /// its mail server.
    pub(crate) async fn start_on(
        db: TestDatabase,
        stripe: crate::fake_stripe::FakeStripe,
        smtp: crate::fake_smtp::FakeSmtp,
        options: AppOptions,
    ) -> TestApp {
        let application =
            pulse_account::startup::Application::build(pulse_account::startup::Settings {
                database_url: options
                    .database_url
                    .clone()
                    .unwrap_or_else(|| db.url.clone())
                    .into(),
                listen: "127.0.0.1:0".parse().unwrap(),
                readiness_lag_max: 10_000,
                runner: pulse_account::engine::projection::runner::RunnerConfig::default(),
                data_dir: db.data_dir(),
                keys: Default::default(),
                stripe: if options.local_checkout {
                    Default::default()
                } else {
                    stripe.config()
                },
                public_url: String::from("https://account.pulse.test"),
                legacy_public_key: Some(crate::helpers::legacy_public_key()),
                seal_interval: None,
                lifecycle_interval: None,
                server: options.server.clone(),
                mail: pulse_account::gateways::mail::MailConfig {
                    smtp_url: Some(smtp.url().into()),
                    from: Some(String::from("Pulse Account <no-reply@pulse.test>")),
                },
                support_email: String::from("support@pulse.test"),
                self_refund_window_days: 30,
            })
            .await
            .expect("the application builds");
        let base = format!("http://{}", application.local_addr());
        let state = application.state().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(application.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        TestApp {
            db,
            base,
            client: reqwest::Client::new(),
            state,
            stripe,
            smtp,
            stop,
            server,
            options,
        }
    }

    /// Stops the server and starts a new one on the same database, data directory (keys) and
    /// fake Stripe, as a restarted process would be.
    pub(crate) async fn restart(self) -> TestApp {
        let (db, stripe, smtp, options) = self.stop_keeping().await;
        TestApp::start_on(db, stripe, smtp, options).await
    }

    /// Stops the server and hands back what it ran on (its database, data directory and fakes),
    /// as a process that was killed leaves them, for a later [`TestApp::start_on`].
    pub(crate) async fn stop_keeping(
        self,
    ) -> (
        TestDatabase,
        crate::fake_stripe::FakeStripe,
        crate::fake_smtp::FakeSmtp,
        AppOptions,
    ) {
        let TestApp {
            db,
            state,
            stop,
            server,
            stripe,
            smtp,
            options,
            ..
        } = self;
        let _ = stop.send(());
        let _ = server.await;
        drop(state);
        (db, stripe, smtp, options)
    }

    /// `POST path` with a JSON body; returns the status and the JSON answer.
    pub(crate) async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, body, headers)
    }

    /// `GET path`; returns the status and the JSON answer.
    pub(crate) async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Posts a Stripe event to the webhook, signed with the webhook secret (or with `bad_secret`).
    pub(crate) async fn send_webhook(
        &self,
        event: &serde_json::Value,
        bad_secret: bool,
    ) -> (u16, serde_json::Value) {
        let payload = event.to_string();
        let secret = if bad_secret {
            "whsec_wrong"
        } else {
            crate::fake_stripe::WEBHOOK_SECRET
        };
        let signature = stripe_webhook::Webhook::generate_test_header(&payload, secret, None);
        let response = self
            .client
            .post(format!("{}/v1/webhooks/stripe", self.base))
            .header("stripe-signature", signature)
            .header("content-type", "application/json")
            .body(payload)
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Every event of the log, once the guarded reader has caught up with every committed append.
    /// (On PostgreSQL a reader waits while any transaction of the database — a projection batch,
    /// say — is still open, or while its guard is held back by a transaction of another database
    /// that is just ending, so a read right after a write may stop short for a moment: the read
    /// is repeated until it reaches the settled head.)
    pub(crate) async fn all_events(&self) -> Vec<aggregates::log::RecordedEvent> {
        let head = self.db.settled_head(self.state.store.as_ref()).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let events = self
                .state
                .store
                .read_all(Position::START, 1000)
                .await
                .unwrap();
            let reached = events.last().map_or(Position::START, |e| e.global_position);
            if reached >= head {
                return events;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the log read stops at {reached:?}, short of the settled head {head:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Runs one command on a stream of decider `D` through the command handler, as a flow of the
    /// service (or the portal, for accounts) would.
    pub(crate) async fn command<D>(&self, stream_id: &str, command: D::Command)
    where
        D: aggregates::decider::Decider,
        D::Error: std::fmt::Debug,
    {
        let catalog = aggregates::catalog::Catalog::v1();
        let command = pulse_account::engine::command::Command {
            stream_id,
            command: &command,
            context: aggregates::decider::Context::new(Utc::now(), &catalog),
            metadata: metadata(),
            idempotency: None,
        };
        pulse_account::engine::command::handle::<D>(self.state.store.as_ref(), command)
            .await
            .expect("the command is accepted");
    }

    /// Runs one account command directly through its decider, as the portal will.
    pub(crate) async fn account_command(
        &self,
        account: &aggregates::ids::AccountId,
        command: aggregates::account::AccountCommand,
    ) {
        self.command::<aggregates::account::Account>(account.as_str(), command)
            .await;
    }

    /// Opens an individual account `a_…n` whose Owner (`u_…1`) has `owner_email`.
    pub(crate) async fn open_account(
        &self,
        n: u64,
        owner_email: &str,
    ) -> (aggregates::ids::AccountId, aggregates::ids::UserId) {
        let account = aggregates::ids::AccountId::from_entropy(n);
        let owner = aggregates::ids::UserId::from_entropy(1);
        let open = aggregates::account::AccountCommand::Open {
            account_id: account.clone(),
            kind: aggregates::account::AccountKind::Individual,
            display_name: String::from("Acme"),
            owner: owner.clone(),
            owner_email: aggregates::ids::Email::parse(owner_email).expect("a valid email"),
        };
        self.account_command(&account, open).await;
        (account, owner)
    }

    /// A staff or service token of `role`, issued as the `staff issue` command does.
    pub(crate) async fn staff_token(&self, role: aggregates::staff::StaffRole) -> String {
        let (_, token) = pulse_account::flows::staff::issue(
            self.state.store.as_ref(),
            &self.state.keys,
            &aggregates::catalog::Catalog::v1(),
            "test staff",
            role,
            metadata(),
        )
        .await
        .expect("a staff token is issued");
        token.expose().to_owned()
    }

    /// Stops the server and drops the database.
    pub(crate) async fn stop(self) {
        let TestApp {
            db,
            state,
            stop,
            server,
            stripe,
            smtp,
            ..
        } = self;
        stripe.stop();
        smtp.stop();
        let _ = stop.send(());
        let _ = server.await;
        drop(state);
        db.cleanup().await;
    }
}

/// The seed of the fake v5 signing key whose public half the test apps trust.
pub(crate) const LEGACY_SEED: [u8; 32] = [5; 32];

/// The v5 public key (base64url) the test apps are configured with.
pub(crate) fn legacy_public_key() -> String {
    let signer = pulse_account::crypto::signing::Signer::from_seed("v5", LEGACY_SEED).unwrap();
    signer.jwks()["keys"][0]["x"].as_str().unwrap().to_owned()
}

/// One HTTP call to `app` with the portal session `session` (or none) and a JSON body (or none);
/// the status and the JSON answer.
pub(crate) async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    session: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = app.client.request(method, format!("{}{path}", app.base));
    if let Some(session) = session {
        request = request.header("cookie", format!("__Host-pulse_cp_session={session}"));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}
