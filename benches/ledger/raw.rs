//! The raw baselines: the same rows handled by the database with no ledger in between — plain
//! INSERTs in one transaction per command, sequential reads, `COPY … TO STDOUT` — on PostgreSQL
//! and on SQLite (with the store's own durability settings: WAL, `synchronous = FULL`).

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

/// One stored event row (JSON and ids as text): stream type and id, version, event id, type,
/// schema version, payload, metadata, recorded time.
pub(crate) type EventRow = (
    String,
    String,
    i64,
    String,
    String,
    i32,
    String,
    String,
    DateTime<Utc>,
);
/// One idempotency record: key, fingerprint, outcome (JSON as text), recorded time.
pub(crate) type Record = (String, Vec<u8>, String, DateTime<Utc>);

/// The columns of a full read of the log.
const COLUMNS: &str = "global_position, stream_type, stream_id, stream_version, event_id, \
                       event_type, schema_version, payload, metadata, recorded_at";

/// A plain connection pool on a benchmark's database.
#[derive(Clone)]
pub(crate) enum RawPool {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl RawPool {
    /// A pool of `size` connections on `url`.
    pub(crate) async fn connect(url: &str, size: u32) -> RawPool {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .expect("a SQLite URL")
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30));
            RawPool::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(size)
                    .connect_with(options)
                    .await
                    .expect("a raw SQLite pool"),
            )
        } else {
            RawPool::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(size)
                    .connect(url)
                    .await
                    .expect("a raw PostgreSQL pool"),
            )
        }
    }

    /// What each command of the append benchmark wrote (grouped by its request id), in order.
    pub(crate) async fn written(&self) -> Vec<(Vec<EventRow>, Record)> {
        let (events, records): (Vec<EventRow>, Vec<Record>) = match self {
            RawPool::Postgres(pool) => (
                sqlx::query_as(
                    "SELECT stream_type, stream_id, stream_version, event_id::text, event_type, \
                     schema_version, payload::text, metadata::text, recorded_at FROM events \
                     ORDER BY global_position",
                )
                .fetch_all(pool)
                .await
                .expect("read the events written"),
                sqlx::query_as(
                    "SELECT idempotency_key, fingerprint, outcome::text, recorded_at FROM idempotency_keys",
                )
                .fetch_all(pool)
                .await
                .expect("read the idempotency records"),
            ),
            RawPool::Sqlite(pool) => (
                sqlx::query_as(
                    "SELECT stream_type, stream_id, stream_version, event_id, event_type, \
                     schema_version, payload, metadata, recorded_at FROM events \
                     ORDER BY global_position",
                )
                .fetch_all(pool)
                .await
                .expect("read the events written"),
                sqlx::query_as(
                    "SELECT idempotency_key, fingerprint, outcome, recorded_at FROM idempotency_keys",
                )
                .fetch_all(pool)
                .await
                .expect("read the idempotency records"),
            ),
        };
        let mut by_command: BTreeMap<String, Vec<EventRow>> = BTreeMap::new();
        for event in events {
            let metadata: serde_json::Value = serde_json::from_str(&event.7).unwrap();
            let request = metadata["request_id"].as_str().expect("a request id");
            by_command
                .entry(request.to_owned())
                .or_default()
                .push(event);
        }
        let mut records: BTreeMap<String, Record> = records
            .into_iter()
            .map(|record| (record.0.clone(), record))
            .collect();
        by_command
            .into_iter()
            .map(|(request, events)| {
                let record = records
                    .remove(&request)
                    .expect("each command has its record");
                (events, record)
            })
            .collect()
    }

    /// Inserts one command's rows — its events in one INSERT, its idempotency record in another —
    /// in one transaction.
    pub(crate) async fn insert_command(&self, events: &[EventRow], record: &Record) {
        const INSERT_EVENTS: &str = "INSERT INTO events (stream_type, stream_id, stream_version, \
             event_id, event_type, schema_version, payload, metadata, recorded_at) ";
        match self {
            RawPool::Postgres(pool) => {
                let mut transaction = pool.begin().await.expect("begin");
                let mut insert = sqlx::QueryBuilder::new(INSERT_EVENTS);
                insert.push_values(events, |mut row, e| {
                    row.push_bind(&e.0)
                        .push_bind(&e.1)
                        .push_bind(e.2)
                        .push_bind(&e.3)
                        .push_unseparated("::uuid")
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
            }
            RawPool::Sqlite(pool) => {
                let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
                let mut insert = sqlx::QueryBuilder::new(INSERT_EVENTS);
                insert.push_values(events, |mut row, e| {
                    row.push_bind(&e.0)
                        .push_bind(&e.1)
                        .push_bind(e.2)
                        .push_bind(&e.3)
                        .push_bind(&e.4)
                        .push_bind(e.5)
                        .push_bind(&e.6)
                        .push_bind(&e.7)
                        .push_bind(e.8);
                });
                insert
                    .build()
                    .execute(&mut *transaction)
                    .await
                    .expect("raw INSERT of the events");
                sqlx::query(
                    "INSERT INTO idempotency_keys (idempotency_key, fingerprint, outcome, recorded_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .bind(&record.0)
                .bind(&record.1)
                .bind(&record.2)
                .bind(record.3)
                .execute(&mut *transaction)
                .await
                .expect("raw INSERT of the idempotency record");
                transaction.commit().await.expect("commit");
            }
        }
    }

    /// Reads the whole log in position order, one streamed query, decoding every column; returns
    /// how many rows.
    pub(crate) async fn read_all(&self) -> usize {
        let select = format!("SELECT {COLUMNS} FROM events ORDER BY global_position");
        let mut rows = 0;
        match self {
            RawPool::Postgres(pool) => {
                type Row = (
                    i64,
                    String,
                    String,
                    i64,
                    uuid::Uuid,
                    String,
                    i32,
                    serde_json::Value,
                    serde_json::Value,
                    DateTime<Utc>,
                );
                let mut stream = sqlx::query_as::<_, Row>(&select).fetch(pool);
                while let Some(row) = stream.next().await {
                    row.expect("a raw row");
                    rows += 1;
                }
            }
            RawPool::Sqlite(pool) => {
                type Row = (
                    i64,
                    String,
                    String,
                    i64,
                    String,
                    String,
                    i32,
                    String,
                    String,
                    DateTime<Utc>,
                );
                let mut stream = sqlx::query_as::<_, Row>(&select).fetch(pool);
                while let Some(row) = stream.next().await {
                    let row = row.expect("a raw row");
                    let _: serde_json::Value = serde_json::from_str(&row.7).expect("a payload");
                    rows += 1;
                }
            }
        }
        rows
    }

    /// Reads one stream's rows in version order; returns how many.
    pub(crate) async fn read_stream(&self, stream_type: &str, stream_id: &str) -> usize {
        match self {
            RawPool::Postgres(pool) => {
                let rows: Vec<(i64, String, serde_json::Value)> = sqlx::query_as(
                    "SELECT stream_version, event_type, payload FROM events \
                     WHERE stream_type = $1 AND stream_id = $2 ORDER BY stream_version",
                )
                .bind(stream_type)
                .bind(stream_id)
                .fetch_all(pool)
                .await
                .expect("a raw stream read");
                rows.len()
            }
            RawPool::Sqlite(pool) => {
                let rows: Vec<(i64, String, String)> = sqlx::query_as(
                    "SELECT stream_version, event_type, payload FROM events \
                     WHERE stream_type = ?1 AND stream_id = ?2 ORDER BY stream_version",
                )
                .bind(stream_type)
                .bind(stream_id)
                .fetch_all(pool)
                .await
                .expect("a raw stream read");
                for row in &rows {
                    let _: serde_json::Value = serde_json::from_str(&row.2).expect("a payload");
                }
                rows.len()
            }
        }
    }

    /// `COPY (SELECT …) TO STDOUT` of the whole log (PostgreSQL; `None` on SQLite, which has no
    /// COPY); returns the bytes received.
    pub(crate) async fn copy_out(&self) -> Option<u64> {
        let RawPool::Postgres(pool) = self else {
            return None;
        };
        let mut connection = pool.acquire().await.expect("a connection");
        let mut copy = connection
            .copy_out_raw(&format!(
                "COPY (SELECT {COLUMNS} FROM events ORDER BY global_position) TO STDOUT"
            ))
            .await
            .expect("COPY starts");
        let mut bytes = 0;
        while let Some(chunk) = copy.next().await {
            bytes += chunk.expect("a COPY chunk").len() as u64;
        }
        Some(bytes)
    }

    /// Closes the pool.
    pub(crate) async fn close(self) {
        match self {
            RawPool::Postgres(pool) => pool.close().await,
            RawPool::Sqlite(pool) => pool.close().await,
        }
    }
}
