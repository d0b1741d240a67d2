//! The PostgreSQL event store: the production store, shared safely by several service processes.
//!
//! Ordering. Positions are taken at insert time but become visible at commit, so a reader that
//! simply followed positions would skip an event whose transaction took its position earlier and
//! committed later. A reader therefore takes only rows whose writing transaction is older than every
//! transaction that may still be running in this database (see [`VISIBLE_GUARD`]: the xmin guard,
//! `transaction_id < pg_snapshot_xmin(pg_current_snapshot())`, narrowed so that write transactions
//! positively known to run in *other* databases of the cluster do not hold this log back).
//! That guard is only sound if positions rise in transaction-id order, so an append assigns its
//! transaction id and its positions together under a session-level advisory lock
//! (key `0x7075_6c73_655f_6c67`, taken and released by the `append_batch` SQL function, so it is
//! held only while the insert runs on the server) that is released right after the insert, before
//! the commit: appends still commit concurrently (group commit), but a transaction that took an
//! earlier position always has the older transaction id, and a reader stops before it until it
//! commits. A connection dropped
//! while it may hold that lock is closed, never returned to the pool, so the server releases the
//! lock with the session. A long write transaction in this database delays readers (never writers)
//! until it ends; read-only transactions have no transaction id and delay nothing.
//!
//! Appends go through the store's writer task (group commit, `group_commit.rs`). A lone append is
//! one statement, a call of `append_batch` (migration `20261202000003`): the idempotency check, the
//! version check, the insert and the idempotency record run on the server in that statement's own
//! transaction. The appends that queued while a commit was in flight are one statement too, a call
//! of `append_group` (migration `20261207000001`), which answers each batch on its own in one
//! transaction; should a writer of another process take a version or a key under it, the group's
//! batches are appended one by one.
//!
//! Wake-ups: after commits a notifier task sends `NOTIFY pulse_account_log` with the last position
//! written, outside the transactions (a NOTIFY inside one would serialise every commit on the
//! notification queue) and coalescing appends that land while one is on its way; a listener task
//! turns notifications from every process into the [`EventStore::subscribe_appends`] signal.

use super::group_commit::{unavailable_for_each, GroupCommit, GroupWriter};
use super::{
    announce, check_global_page, check_record_page, check_stream_page, checked_outcome,
    documents_of_live_generation, person_key_from_row, seal_from_row, snapshot_text, stored_record,
    validate_batch, validate_documents, validate_page, AppendBatch, BatchOutcome, DatabaseContext,
    DocumentWrite, EventStore, GenerationState, GenerationStatus, Idempotency, IdempotencyRecord,
    Leadership, PersonKey, PersonKeyStore, ProjectionStore, RecordRow, Seal, SealStore, Snapshot,
    Store, StoreError, StoredRecord, SEAL_PAGE_MAX,
};
use crate::engine::store::upcast::Upcasters;
use aggregates::log::{EventMetadata, Position, RecordedEvent, StreamName, StreamVersion};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Row};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The advisory-lock class of projection runners (the two-key form: class, hash of name).
const PROJECTION_LOCK_CLASS: i32 = 0x5041;
/// The channel appends are announced on.
const NOTIFY_CHANNEL: &str = "pulse_account_log";
/// Pool size: enough for 16 concurrent writers plus readers and runners; PostgreSQL's default
/// `max_connections` is 100, shared by every process.
const POOL_CONNECTIONS_MAX: u32 = 24;
/// Groups of appends committing at once: appends at this concurrency or below each run alone, side
/// by side, as before group commit; above it they queue and share commits.
const COMMITS_IN_FLIGHT_MAX: usize = 2;
/// How long a request waits for a pooled connection before failing: during an outage a request
/// answers 503 within a second; a pool busy past this long is overloaded and sheds load.
const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(800);
/// How long the listener waits before reconnecting after losing its connection.
const LISTENER_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The oldest transaction id whose rows a reader must not yet pass: the oldest transaction in the
/// statement's snapshot that was still running, unless `pg_stat_activity` shows it belongs to
/// another database; the snapshot's xmax when none was. A transaction that ended between the
/// snapshot and the `pg_stat_activity` scan is not found there and so still counts: the guard errs
/// towards waiting one more poll, never towards skipping.
const VISIBLE_GUARD: &str =
    "(SELECT COALESCE(MIN(running.xid), pg_snapshot_xmax(pg_current_snapshot())) \
     FROM pg_snapshot_xip(pg_current_snapshot()) AS running(xid) \
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity activity \
         WHERE activity.backend_xid = running.xid::xid \
         AND activity.datname IS DISTINCT FROM current_database()))";

const EVENT_COLUMNS: &str = "global_position, stream_type, stream_id, stream_version, event_id, \
     event_type, schema_version, payload, metadata, recorded_at";

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: PgPool,
    options: PgConnectOptions,
    upcasters: Arc<Upcasters>,
    appended: watch::Sender<Position>,
    listener: tokio::task::JoinHandle<()>,
    /// The last position this process wrote; the notifier announces it to every process.
    written: watch::Sender<Position>,
    notifier: tokio::task::JoinHandle<()>,
    /// The writer task every append goes through (group commit).
    appends: GroupCommit,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.notifier.abort();
    }
}

impl PostgresStore {
    /// Connects to the database at `url` and starts listening for appends. Does not migrate.
    pub async fn open(url: &str, upcasters: Arc<Upcasters>) -> Result<PostgresStore, StoreError> {
        let options = PgConnectOptions::from_str(url).during("parsing the PostgreSQL URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .during("connecting to PostgreSQL")?;
        let (appended, _) = watch::channel(Position::START);
        // Listen before returning, so no append after `open` can go unheard.
        let listening = listen(&pool).await.during("listening for appends")?;
        let listener = tokio::spawn(forward_appends(listening, pool.clone(), appended.clone()));
        let (written, writes) = watch::channel(Position::START);
        let notifier = tokio::spawn(notify_appends(writes, pool.clone()));
        let appends = GroupCommit::start(
            Arc::new(PostgresAppender { pool: pool.clone() }),
            COMMITS_IN_FLIGHT_MAX,
        );
        Ok(PostgresStore {
            pool,
            options,
            upcasters,
            appended,
            listener,
            written,
            notifier,
            appends,
        })
    }

    fn decode(&self, row: &PgRow) -> Result<RecordedEvent, StoreError> {
        Ok(self.upcasters.upcast(decode_stored(row)?)?)
    }

    /// Every row of a page decoded and upcast, in order.
    fn decode_rows(&self, rows: &[PgRow]) -> Result<Vec<RecordedEvent>, StoreError> {
        rows.iter().map(|row| self.decode(row)).collect()
    }

    /// Up to `limit` rows of the log after `after`, in position order.
    async fn log_rows(&self, after: Position, limit: i64) -> Result<Vec<PgRow>, StoreError> {
        let rows: Vec<PgRow> = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE global_position > $1 AND transaction_id < {VISIBLE_GUARD} \
             ORDER BY global_position LIMIT $2"
        ))
        .bind(after.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .during("reading the log")?;
        Ok(rows)
    }
}

/// An event exactly as stored, before any upcasting: what the audit chain covers.
fn decode_stored(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let metadata: sqlx::types::Json<EventMetadata> = row
        .try_get("metadata")
        .map_err(|e| StoreError::Invariant(format!("unreadable event metadata: {e}")))?;
    let event_id: uuid::Uuid = row.get("event_id");
    let event = RecordedEvent {
        global_position: Position(row.get("global_position")),
        stream: stored_stream_name(row.get("stream_type"), row.get("stream_id"))?,
        stream_version: StreamVersion(row.get("stream_version")),
        event_id: event_id.to_string(),
        event_type: row.get("event_type"),
        schema_version: row.get("schema_version"),
        payload: row.get("payload"),
        metadata: metadata.0,
        recorded_at: row.get::<DateTime<Utc>, _>("recorded_at"),
    };
    Ok(event)
}

/// How one batch of an append statement ended. Anything but `Written` wrote nothing.
enum Attempt {
    Written(BatchOutcome),
    /// The checks found a stream at another version (before the lock was taken).
    WrongVersion(StreamName, StreamVersion),
    /// The checks found the key already recorded (before the lock was taken).
    KeySeen,
}

/// A pooled connection used for one append statement. While `dirty` (the statement may hold the
/// append lock) a drop closes the connection instead of returning it to the pool.
struct AppendConnection {
    connection: PoolConnection<Postgres>,
    dirty: bool,
}

impl Drop for AppendConnection {
    fn drop(&mut self) {
        if self.dirty {
            self.connection.close_on_drop();
        }
    }
}

impl AppendConnection {
    async fn acquire(pool: &PgPool) -> Result<AppendConnection, StoreError> {
        Ok(AppendConnection {
            connection: pool
                .acquire()
                .await
                .during("acquiring a connection to append")?,
            dirty: true,
        })
    }

    /// After the statement: releases the append lock if the statement may have left it held. If
    /// that fails the connection stays dirty, and is closed instead of pooled, which releases it.
    async fn settle(mut self, may_hold_lock: bool) {
        if may_hold_lock {
            if let Err(error) = release_append_lock(&mut self.connection).await {
                tracing::warn!(%error, "could not release the append lock");
                return;
            }
        }
        self.dirty = false;
    }
}

async fn current_version(
    connection: &mut PgConnection,
    stream: &StreamName,
) -> Result<StreamVersion, StoreError> {
    let version: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_type = $1 AND stream_id = $2",
    )
    .bind(stream.stream_type())
    .bind(stream.stream_id())
    .fetch_one(connection)
    .await
    .during("reading a stream's version")?;
    Ok(StreamVersion(version))
}

/// The arrays `append_batch` and `append_group` take for a batch's streams and events, appended
/// to those of the batches before it.
#[derive(Default)]
struct AppendArrays<'a> {
    batch_types: Vec<&'a str>,
    batch_ids: Vec<&'a str>,
    batch_expected: Vec<i64>,
    types: Vec<&'a str>,
    ids: Vec<&'a str>,
    versions: Vec<i64>,
    event_ids: Vec<uuid::Uuid>,
    event_types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<&'a serde_json::Value>,
}

impl<'a> AppendArrays<'a> {
    fn push(&mut self, batch: &'a AppendBatch) {
        for append in &batch.appends {
            self.batch_types.push(append.stream.stream_type());
            self.batch_ids.push(append.stream.stream_id());
            self.batch_expected.push(append.expected_version.0);
            for (offset, event) in append.events.iter().enumerate() {
                self.types.push(append.stream.stream_type());
                self.ids.push(append.stream.stream_id());
                self.versions
                    .push(append.expected_version.0 + 1 + offset as i64);
                self.event_ids.push(uuid::Uuid::now_v7());
                self.event_types.push(event.event_type.as_str());
                self.schema_versions.push(event.schema_version);
                self.payloads.push(&event.payload);
            }
        }
    }
}

fn metadata_value(batch: &AppendBatch) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(&batch.metadata)
        .map_err(|e| StoreError::InvalidRequest(format!("unserialisable metadata: {e}")))
}

/// A failed append statement: a writer of another process took a version or a key between the
/// statement's checks and its writes (nothing was written, and the append lock may be held), or
/// the database failed.
enum StatementFailure {
    Collided,
    Failed(StoreError),
}

fn statement_failure(error: sqlx::Error, during: &'static str) -> StatementFailure {
    match &error {
        sqlx::Error::Database(database)
            if matches!(
                database.constraint(),
                Some("events_stream_version_key" | "idempotency_keys_pkey")
            ) =>
        {
            StatementFailure::Collided
        }
        _ => StatementFailure::Failed(StoreError::Database {
            during,
            source: error,
        }),
    }
}

/// One answer row of `append_batch` or `append_group`, after the batch number.
type AnswerRow = (
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// Reads a batch's answer rows: `written` rows, or one `key_taken` or `wrong_version` row.
fn attempt_from_rows(
    batch: &AppendBatch,
    rows: impl IntoIterator<Item = AnswerRow>,
) -> Result<Attempt, StoreError> {
    let mut written = Vec::new();
    for (status, position, stream_type, stream_id, version) in rows {
        match (status.as_str(), position, stream_type, stream_id, version) {
            ("key_taken", ..) => return Ok(Attempt::KeySeen),
            ("wrong_version", _, Some(stream_type), Some(stream_id), Some(actual)) => {
                return Ok(Attempt::WrongVersion(
                    stored_stream_name(stream_type, stream_id)?,
                    StreamVersion(actual),
                ))
            }
            ("written", Some(position), Some(stream_type), Some(stream_id), Some(version)) => {
                written.push((
                    position,
                    stored_stream_name(stream_type, stream_id)?,
                    version,
                ));
            }
            (status, ..) => {
                return Err(StoreError::Invariant(format!(
                    "an append answered an unexpected {status:?} row"
                )))
            }
        }
    }
    Ok(Attempt::Written(checked_outcome(batch, written)?))
}

/// One append in one statement: the `append_batch` function (migration `20261202000003`) answers a
/// replayed key, checks every stream's version, inserts the events under the append lock and
/// records the idempotency key, in the statement's own transaction.
async fn append_statement(
    connection: &mut PgConnection,
    batch: &AppendBatch,
) -> Result<Attempt, StatementFailure> {
    let mut arrays = AppendArrays::default();
    arrays.push(batch);
    let metadata = metadata_value(batch).map_err(StatementFailure::Failed)?;
    let rows = sqlx::query_as::<_, AnswerRow>(
        "SELECT status, out_position, out_stream_type, out_stream_id, out_version \
         FROM append_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&arrays.batch_types)
    .bind(&arrays.batch_ids)
    .bind(&arrays.batch_expected)
    .bind(&arrays.types)
    .bind(&arrays.ids)
    .bind(&arrays.versions)
    .bind(&arrays.event_ids)
    .bind(&arrays.event_types)
    .bind(&arrays.schema_versions)
    .bind(&arrays.payloads)
    .bind(&metadata)
    .bind(Utc::now())
    .bind(batch.idempotency.as_ref().map(|i| i.key.as_str()))
    .bind(batch.idempotency.as_ref().map(|i| &i.fingerprint[..]))
    .fetch_all(connection)
    .await
    .map_err(|error| statement_failure(error, "appending events"))?;
    attempt_from_rows(batch, rows).map_err(StatementFailure::Failed)
}

/// Several appends in one statement and one transaction: the `append_group` function (migration
/// `20261207000001`) answers each batch on its own, as `append_batch` would, and a batch refused
/// for a moved stream or a replayed key writes nothing while the others are written.
async fn group_statement(
    connection: &mut PgConnection,
    group: &[AppendBatch],
) -> Result<Vec<Attempt>, StatementFailure> {
    let mut arrays = AppendArrays::default();
    let (mut stream_from, mut stream_to) = (Vec::new(), Vec::new());
    let (mut event_from, mut event_to) = (Vec::new(), Vec::new());
    let mut metadata = Vec::with_capacity(group.len());
    for batch in group {
        stream_from.push(arrays.batch_types.len() as i32 + 1);
        event_from.push(arrays.types.len() as i32 + 1);
        arrays.push(batch);
        stream_to.push(arrays.batch_types.len() as i32);
        event_to.push(arrays.types.len() as i32);
        metadata.push(metadata_value(batch).map_err(StatementFailure::Failed)?);
    }
    let keys: Vec<Option<&str>> = group
        .iter()
        .map(|b| b.idempotency.as_ref().map(|i| i.key.as_str()))
        .collect();
    let fingerprints: Vec<Option<&[u8]>> = group
        .iter()
        .map(|b| b.idempotency.as_ref().map(|i| &i.fingerprint[..]))
        .collect();
    let rows = sqlx::query_as::<
        _,
        (
            i32,
            String,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<i64>,
        ),
    >(
        "SELECT batch, status, out_position, out_stream_type, out_stream_id, out_version \
         FROM append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                           $17, $18, $19)",
    )
    .bind(group.len() as i32)
    .bind(&stream_from)
    .bind(&stream_to)
    .bind(&event_from)
    .bind(&event_to)
    .bind(&metadata)
    .bind(&keys)
    .bind(&fingerprints)
    .bind(&arrays.batch_types)
    .bind(&arrays.batch_ids)
    .bind(&arrays.batch_expected)
    .bind(&arrays.types)
    .bind(&arrays.ids)
    .bind(&arrays.versions)
    .bind(&arrays.event_ids)
    .bind(&arrays.event_types)
    .bind(&arrays.schema_versions)
    .bind(&arrays.payloads)
    .bind(Utc::now())
    .fetch_all(connection)
    .await
    .map_err(|error| statement_failure(error, "appending a group of batches"))?;
    let mut per_batch: Vec<Vec<AnswerRow>> = group.iter().map(|_| Vec::new()).collect();
    for (batch, status, position, stream_type, stream_id, version) in rows {
        let answers = usize::try_from(batch)
            .ok()
            .and_then(|b| b.checked_sub(1))
            .and_then(|b| per_batch.get_mut(b))
            .ok_or_else(|| {
                StatementFailure::Failed(StoreError::Invariant(format!(
                    "append_group answered for batch {batch} of {}",
                    group.len()
                )))
            })?;
        answers.push((status, position, stream_type, stream_id, version));
    }
    group
        .iter()
        .zip(per_batch)
        .map(|(batch, rows)| attempt_from_rows(batch, rows).map_err(StatementFailure::Failed))
        .collect()
}

/// Releases the append lock a failed append statement may still hold.
async fn release_append_lock(connection: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(connection)
        .await
        .during("releasing the append lock")?;
    Ok(())
}

/// Writes the groups of the store's writer task ([`GroupCommit`]).
struct PostgresAppender {
    pool: PgPool,
}

impl PostgresAppender {
    /// One batch in its own statement.
    async fn append_alone(&self, batch: &AppendBatch) -> Result<BatchOutcome, StoreError> {
        let mut append = AppendConnection::acquire(&self.pool).await?;
        let attempt = append_statement(&mut append.connection, batch).await;
        append.settle(attempt.is_err()).await;
        match attempt {
            Ok(attempt) => self.answer(batch, attempt).await,
            Err(StatementFailure::Collided) => self.answer_collision(batch).await,
            Err(StatementFailure::Failed(error)) => Err(error),
        }
    }

    /// The caller's answer for what its batch's statement found.
    async fn answer(
        &self,
        batch: &AppendBatch,
        attempt: Attempt,
    ) -> Result<BatchOutcome, StoreError> {
        match attempt {
            Attempt::Written(outcome) => Ok(outcome),
            Attempt::WrongVersion(stream, actual) => {
                let expected = batch
                    .appends
                    .iter()
                    .find(|a| a.stream == stream)
                    .map_or(StreamVersion::EMPTY, |a| a.expected_version);
                Err(StoreError::WrongExpectedVersion {
                    stream,
                    expected,
                    actual,
                })
            }
            Attempt::KeySeen => self.answer_replay(batch).await,
        }
    }

    /// A concurrent writer took a version or the key between the checks and the insert. As in the
    /// statement, a recorded key is answered before the versions are looked at, so a request that
    /// raced its own retry answers with the first outcome.
    async fn answer_collision(&self, batch: &AppendBatch) -> Result<BatchOutcome, StoreError> {
        if let Some(idempotency) = &batch.idempotency {
            if let Some(record) = find_idempotency(&self.pool, &idempotency.key).await? {
                return record.replay(idempotency);
            }
        }
        for append in &batch.appends {
            let actual = stream_version(&self.pool, &append.stream).await?;
            if actual != append.expected_version {
                return Err(StoreError::WrongExpectedVersion {
                    stream: append.stream.clone(),
                    expected: append.expected_version,
                    actual,
                });
            }
        }
        Err(StoreError::Invariant(String::from(
            "an append collided but neither its key nor its streams were taken",
        )))
    }

    /// The first outcome of a key already recorded, or a refusal if it came with another request.
    async fn answer_replay(&self, batch: &AppendBatch) -> Result<BatchOutcome, StoreError> {
        let idempotency = batch
            .idempotency
            .as_ref()
            .expect("only keyed appends find their key taken");
        match find_idempotency(&self.pool, &idempotency.key).await? {
            Some(record) => record.replay(idempotency),
            None => Err(StoreError::Invariant(format!(
                "idempotency key {:?} collided but cannot be read",
                idempotency.key
            ))),
        }
    }
}

#[async_trait]
impl GroupWriter for PostgresAppender {
    async fn write_group(&self, group: &[AppendBatch]) -> Vec<Result<BatchOutcome, StoreError>> {
        if let [batch] = group {
            return vec![self.append_alone(batch).await];
        }
        let attempts = match AppendConnection::acquire(&self.pool).await {
            Ok(mut append) => {
                let attempts = group_statement(&mut append.connection, group).await;
                append.settle(attempts.is_err()).await;
                attempts
            }
            Err(error) => Err(StatementFailure::Failed(error)),
        };
        match attempts {
            Ok(attempts) => {
                let mut answers = Vec::with_capacity(group.len());
                for (batch, attempt) in group.iter().zip(attempts) {
                    answers.push(self.answer(batch, attempt).await);
                }
                answers
            }
            Err(StatementFailure::Failed(error)) if error.is_unavailable() => {
                unavailable_for_each(&error, group.len())
            }
            Err(failure) => {
                if let StatementFailure::Failed(error) = failure {
                    tracing::warn!(%error, batches = group.len(), "a group append failed; appending its batches one by one");
                }
                let mut answers = Vec::with_capacity(group.len());
                for batch in group {
                    answers.push(self.append_alone(batch).await);
                }
                answers
            }
        }
    }
}

async fn find_idempotency(
    pool: &PgPool,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let row: Option<(Vec<u8>, serde_json::Value)> = sqlx::query_as(
        "SELECT fingerprint, outcome FROM idempotency_keys WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(pool)
    .await
    .during("reading an idempotency key")?;
    row.map(|(fingerprint, outcome)| {
        IdempotencyRecord::from_stored(fingerprint, &outcome.to_string())
    })
    .transpose()
}

async fn stream_version(pool: &PgPool, stream: &StreamName) -> Result<StreamVersion, StoreError> {
    current_version(
        &mut *pool.acquire().await.during("acquiring a connection")?,
        stream,
    )
    .await
}

#[async_trait]
impl EventStore for PostgresStore {
    #[tracing::instrument(skip_all, fields(streams = batch.appends.len()))]
    async fn append_batch(&self, batch: AppendBatch) -> Result<BatchOutcome, StoreError> {
        validate_batch(&batch)?;
        let outcome = self.appends.append(batch).await?;
        if !outcome.replayed() {
            let last = outcome.last_position();
            announce(&self.appended, last);
            announce(&self.written, last);
        }
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from_version: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit = validate_page(limit)?;
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE stream_type = $1 AND stream_id = $2 AND stream_version >= $3 \
             ORDER BY stream_version LIMIT $4"
        ))
        .bind(stream.stream_type())
        .bind(stream.stream_id())
        .bind(from_version.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .during("reading a stream")?;
        let events = self.decode_rows(&rows)?;
        check_stream_page(&events, from_version)?;
        Ok(events)
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit = validate_page(limit)?;
        let rows = self.log_rows(after, limit).await?;
        let events = self.decode_rows(&rows)?;
        check_global_page(&events, after)?;
        Ok(events)
    }

    async fn read_settled(
        &self,
        after: Position,
        through: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit = validate_page(limit)?;
        // No visibility guard: every transaction that took a position at or below a head has
        // ended (a visible row's transaction is younger than any that took an earlier position).
        let rows: Vec<PgRow> = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE global_position > $1 AND global_position <= $2 \
             ORDER BY global_position LIMIT $3"
        ))
        .bind(after.0)
        .bind(through.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .during("reading the log")?;
        let events = self.decode_rows(&rows)?;
        check_global_page(&events, after)?;
        Ok(events)
    }

    async fn read_all_stored(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit = validate_page(limit)?;
        let rows = self.log_rows(after, limit).await?;
        let events = rows
            .iter()
            .map(decode_stored)
            .collect::<Result<Vec<_>, _>>()?;
        check_global_page(&events, after)?;
        Ok(events)
    }

    async fn read_all_records(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let limit = validate_page(limit)?;
        let rows = sqlx::query_as::<_, RecordRow>(&format!(
            "SELECT global_position, stream_type, stream_id, stream_version, event_id::text, \
                 event_type, schema_version, payload::text, metadata::text, recorded_at \
             FROM events \
             WHERE global_position > $1 AND transaction_id < {VISIBLE_GUARD} \
             ORDER BY global_position LIMIT $2"
        ))
        .bind(after.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .during("reading the log")?;
        let records: Vec<StoredRecord> = rows.into_iter().map(stored_record).collect();
        check_record_page(&records, after)?;
        Ok(records)
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        let head: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT MAX(global_position) FROM events WHERE transaction_id < {VISIBLE_GUARD}"
        ))
        .fetch_one(&self.pool)
        .await
        .during("reading the head position")?;
        Ok(Position(head.unwrap_or(0)))
    }

    fn subscribe_appends(&self) -> watch::Receiver<Position> {
        self.appended.subscribe()
    }

    async fn idempotent_outcome(
        &self,
        idempotency: &Idempotency,
    ) -> Result<Option<BatchOutcome>, StoreError> {
        match find_idempotency(&self.pool, &idempotency.key).await? {
            Some(record) => record.replay(idempotency).map(Some),
            None => Ok(None),
        }
    }

    async fn read_snapshot(
        &self,
        stream: &StreamName,
        state_version: i32,
    ) -> Result<Option<Snapshot>, StoreError> {
        let row: Option<(i64, serde_json::Value)> = sqlx::query_as(
            "SELECT stream_version, state FROM stream_snapshots \
             WHERE stream_type = $1 AND stream_id = $2 AND state_version = $3",
        )
        .bind(stream.stream_type())
        .bind(stream.stream_id())
        .bind(state_version)
        .fetch_optional(&self.pool)
        .await
        .during("reading a snapshot")?;
        Ok(row.map(|(stream_version, state)| Snapshot {
            stream: stream.clone(),
            state_version,
            stream_version: StreamVersion(stream_version),
            state,
        }))
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let text = snapshot_text(snapshot)?;
        sqlx::query(
            "INSERT INTO stream_snapshots \
                 (stream_type, stream_id, state_version, stream_version, state, saved_at) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6) \
             ON CONFLICT (stream_type, stream_id) DO UPDATE \
             SET state_version = EXCLUDED.state_version, stream_version = EXCLUDED.stream_version, \
                 state = EXCLUDED.state, saved_at = EXCLUDED.saved_at \
             WHERE stream_snapshots.state_version <> EXCLUDED.state_version \
                OR stream_snapshots.stream_version <= EXCLUDED.stream_version",
        )
        .bind(snapshot.stream.stream_type())
        .bind(snapshot.stream.stream_id())
        .bind(snapshot.state_version)
        .bind(snapshot.stream_version.0)
        .bind(text)
        .bind(Utc::now())
        .execute(&self.pool)
        .await
        .during("saving a snapshot")?;
        Ok(())
    }

    async fn delete_snapshots(&self) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM stream_snapshots")
            .execute(&self.pool)
            .await
            .during("deleting snapshots")?;
        Ok(deleted.rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .during("pinging PostgreSQL")?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(listener)
}

/// Announces this process's appends to every process: one `NOTIFY` of the last position written,
/// sent outside the appends' transactions and off their path, so appends that commit while a
/// notification is on its way share the next one.
async fn notify_appends(mut writes: watch::Receiver<Position>, pool: PgPool) {
    while writes.changed().await.is_ok() {
        let last = *writes.borrow_and_update();
        let notified = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(last.0.to_string())
            .execute(&pool)
            .await;
        if let Err(error) = notified {
            tracing::warn!(%error, "NOTIFY after an append failed; readers will poll");
        }
    }
}

/// Forwards NOTIFYs of every process to the local wake-up signal, reconnecting when it must.
async fn forward_appends(
    mut listener: PgListener,
    pool: PgPool,
    appended: watch::Sender<Position>,
) {
    loop {
        match listener.recv().await {
            Ok(notification) => {
                if let Ok(position) = notification.payload().parse::<i64>() {
                    announce(&appended, Position(position));
                }
            }
            Err(error) => {
                tracing::warn!(%error, "lost the append listener; readers poll until it reconnects");
                loop {
                    tokio::time::sleep(LISTENER_RETRY_DELAY).await;
                    match listen(&pool).await {
                        Ok(reconnected) => break listener = reconnected,
                        Err(error) => tracing::warn!(%error, "cannot listen for appends yet"),
                    }
                }
            }
        }
    }
}

fn stored_stream_name(stream_type: String, stream_id: String) -> Result<StreamName, StoreError> {
    StreamName::parse(&stream_type, &stream_id)
        .map_err(|e| StoreError::Invariant(format!("stored stream name is invalid: {e}")))
}

/// A dedicated connection holding a projection's session-level advisory lock.
struct PostgresLeadership {
    connection: PgConnection,
}

#[async_trait]
impl Leadership for PostgresLeadership {
    async fn still_leading(&mut self) -> bool {
        self.connection.ping().await.is_ok()
    }
}

/// A stable 32-bit key for a projection generation's lock (FNV-1a).
fn projection_lock_key(projection: &str, generation: i64) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in projection.bytes().chain(generation.to_le_bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as i32
}

#[async_trait]
impl ProjectionStore for PostgresStore {
    async fn ensure_projection(&self, projection: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO projection_generations (projection, generation, status, checkpoint, created_at) \
             SELECT $1, 1, 'active', 0, now() \
             WHERE NOT EXISTS (SELECT 1 FROM projection_generations WHERE projection = $1) \
             ON CONFLICT DO NOTHING",
        )
        .bind(projection)
        .execute(&self.pool)
        .await
        .during("creating a projection's first generation")?;
        Ok(())
    }

    async fn projection_generations(
        &self,
        projection: &str,
    ) -> Result<Vec<GenerationState>, StoreError> {
        let rows = sqlx::query(
            "SELECT generation, status, checkpoint FROM projection_generations \
             WHERE projection = $1 ORDER BY generation",
        )
        .bind(projection)
        .fetch_all(&self.pool)
        .await
        .during("reading projection generations")?;
        rows.iter()
            .map(|row| {
                Ok(GenerationState {
                    projection: projection.to_owned(),
                    generation: row.get("generation"),
                    status: GenerationStatus::parse(row.get("status"))?,
                    checkpoint: Position(row.get("checkpoint")),
                })
            })
            .collect()
    }

    async fn begin_generation(&self, projection: &str) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await.during("beginning a rebuild")?;
        sqlx::query(
            "DELETE FROM projection_generations WHERE projection = $1 AND status = 'building'",
        )
        .bind(projection)
        .execute(&mut *tx)
        .await
        .during("dropping an unfinished rebuild")?;
        let generation: i64 = sqlx::query_scalar(
            "INSERT INTO projection_generations (projection, generation, status, checkpoint, created_at) \
             SELECT $1, COALESCE(MAX(generation), 0) + 1, 'building', 0, now() \
             FROM projection_generations WHERE projection = $1 \
             RETURNING generation",
        )
        .bind(projection)
        .fetch_one(&mut *tx)
        .await
        .during("creating a generation")?;
        tx.commit().await.during("committing a new generation")?;
        Ok(generation)
    }

    async fn activate_generation(
        &self,
        projection: &str,
        generation: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .during("beginning a generation switch")?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM projection_generations WHERE projection = $1 AND generation = $2 FOR UPDATE",
        )
        .bind(projection)
        .bind(generation)
        .fetch_optional(&mut *tx)
        .await
        .during("reading the generation to activate")?;
        if status.as_deref() != Some(GenerationStatus::Building.as_str()) {
            return Err(StoreError::InvalidRequest(format!(
                "generation {generation} of {projection} is not being built"
            )));
        }
        sqlx::query(
            "DELETE FROM projection_generations WHERE projection = $1 AND status = 'active'",
        )
        .bind(projection)
        .execute(&mut *tx)
        .await
        .during("retiring the active generation")?;
        sqlx::query("UPDATE projection_generations SET status = 'active' WHERE projection = $1 AND generation = $2")
            .bind(projection)
            .bind(generation)
            .execute(&mut *tx)
            .await
            .during("activating a generation")?;
        tx.commit().await.during("committing a generation switch")?;
        Ok(())
    }

    async fn load_documents(
        &self,
        projection: &str,
        generation: i64,
        keys: &[String],
    ) -> Result<HashMap<String, serde_json::Value>, StoreError> {
        validate_documents(keys.len())?;
        // One index probe per key, whatever the statistics say: with `doc_key = ANY($3)` a planner
        // whose statistics predate a rebuild's generation scans every document of it instead.
        // The generation's own row comes back as a key-less row in the same statement (one
        // snapshot): a generation a rebuild retired meanwhile is reported, never read as empty.
        let rows: Vec<(Option<String>, Option<serde_json::Value>)> = sqlx::query_as(
            "SELECT NULL::text, NULL::jsonb FROM projection_generations \
                 WHERE projection = $1 AND generation = $2 \
             UNION ALL \
             SELECT d.doc_key, d.body FROM UNNEST($3::text[]) AS k(doc_key) \
             CROSS JOIN LATERAL (SELECT doc_key, body FROM projection_documents \
                 WHERE projection = $1 AND generation = $2 AND doc_key = k.doc_key OFFSET 0) AS d",
        )
        .bind(projection)
        .bind(generation)
        .bind(keys)
        .fetch_all(&self.pool)
        .await
        .during("loading projection documents")?;
        documents_of_live_generation(projection, generation, rows)
    }

    #[tracing::instrument(skip(self, writes), fields(documents = writes.len()))]
    async fn commit_batch(
        &self,
        projection: &str,
        generation: i64,
        from: Position,
        to: Position,
        writes: &[DocumentWrite],
    ) -> Result<(), StoreError> {
        validate_documents(writes.len())?;
        let mut tx = self
            .pool
            .begin()
            .await
            .during("beginning a projection batch")?;
        // A read model is derived from the log, so its batch need not wait for the disk: a crash
        // may lose the last batches committed, but only together with their checkpoints (the WAL
        // is replayed in order), and the runner folds them again from the log.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await
            .during("beginning a projection batch")?;
        let moved = sqlx::query(
            "UPDATE projection_generations SET checkpoint = $4 \
             WHERE projection = $1 AND generation = $2 AND checkpoint = $3",
        )
        .bind(projection)
        .bind(generation)
        .bind(from.0)
        .bind(to.0)
        .execute(&mut *tx)
        .await
        .during("moving a projection checkpoint")?;
        if moved.rows_affected() != 1 {
            return Err(StoreError::CheckpointMoved {
                projection: projection.to_owned(),
                generation,
                expected: from,
            });
        }
        let (upserts, deletes): (Vec<&DocumentWrite>, Vec<&DocumentWrite>) =
            writes.iter().partition(|write| write.body.is_some());
        let keys: Vec<&str> = upserts.iter().map(|w| w.key.as_str()).collect();
        let bodies: Vec<&serde_json::Value> =
            upserts.iter().filter_map(|w| w.body.as_ref()).collect();
        let positions: Vec<i64> = upserts.iter().map(|w| w.position.0).collect();
        sqlx::query(
            "INSERT INTO projection_documents (projection, generation, doc_key, body, last_position) \
             SELECT $1, $2, d.doc_key, d.body, d.last_position \
             FROM UNNEST($3::text[], $4::jsonb[], $5::bigint[]) AS d(doc_key, body, last_position) \
             ON CONFLICT (projection, generation, doc_key) \
             DO UPDATE SET body = EXCLUDED.body, last_position = EXCLUDED.last_position",
        )
        .bind(projection)
        .bind(generation)
        .bind(&keys)
        .bind(&bodies)
        .bind(&positions)
        .execute(&mut *tx)
        .await
        .during("writing projection documents")?;
        // Deletes are rare: one statement per document, each an index probe on the whole key.
        for delete in deletes {
            sqlx::query(
                "DELETE FROM projection_documents \
                 WHERE projection = $1 AND generation = $2 AND doc_key = $3",
            )
            .bind(projection)
            .bind(generation)
            .bind(&delete.key)
            .execute(&mut *tx)
            .await
            .during("deleting projection documents")?;
        }
        tx.commit().await.during("committing a projection batch")?;
        Ok(())
    }

    async fn read_document_at(
        &self,
        projection: &str,
        key: &str,
    ) -> Result<Option<(serde_json::Value, Position)>, StoreError> {
        let row: Option<(serde_json::Value, i64)> = sqlx::query_as(
            "SELECT d.body, d.last_position FROM projection_documents d \
             JOIN projection_generations g ON g.projection = d.projection AND g.generation = d.generation \
             WHERE g.projection = $1 AND g.status = 'active' AND d.doc_key = $2",
        )
        .bind(projection)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .during("reading a projection document")?;
        Ok(row.map(|(body, position)| (body, Position(position))))
    }

    async fn read_current_document(
        &self,
        projection: &str,
        key: &str,
        stream: &StreamName,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        sqlx::query_scalar(
            "SELECT d.body FROM projection_documents d \
             JOIN projection_generations g ON g.projection = d.projection AND g.generation = d.generation \
             WHERE g.projection = $1 AND g.status = 'active' AND d.doc_key = $2 \
             AND d.last_position = (SELECT e.global_position FROM events e \
                 WHERE e.stream_type = $3 AND e.stream_id = $4 \
                 ORDER BY e.stream_version DESC LIMIT 1)",
        )
        .bind(projection)
        .bind(key)
        .bind(stream.stream_type())
        .bind(stream.stream_id())
        .fetch_optional(&self.pool)
        .await
        .during("reading a current projection document")
    }

    async fn list_documents(
        &self,
        projection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let limit = validate_page(limit)?;
        sqlx::query_as(
            "SELECT d.doc_key, d.body FROM projection_documents d \
             JOIN projection_generations g ON g.projection = d.projection AND g.generation = d.generation \
             WHERE g.projection = $1 AND g.status = 'active' AND d.doc_key > $2 \
             ORDER BY d.doc_key LIMIT $3",
        )
        .bind(projection)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .during("listing projection documents")
    }

    async fn try_lead(
        &self,
        projection: &str,
        generation: i64,
    ) -> Result<Option<Box<dyn Leadership>>, StoreError> {
        let mut connection = PgConnection::connect_with(&self.options)
            .await
            .during("connecting for a projection lock")?;
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(PROJECTION_LOCK_CLASS)
            .bind(projection_lock_key(projection, generation))
            .fetch_one(&mut connection)
            .await
            .during("trying a projection lock")?;
        if !acquired {
            return Ok(None);
        }
        Ok(Some(Box::new(PostgresLeadership { connection })))
    }
}

#[async_trait]
impl SealStore for PostgresStore {
    async fn save_seal(&self, seal: &Seal) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_seals (position, chain_hash, count, key_id, signature, sealed_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (position) DO NOTHING",
        )
        .bind(seal.position.0)
        .bind(&seal.chain_hash)
        .bind(seal.count)
        .bind(&seal.key_id)
        .bind(&seal.signature)
        .bind(seal.sealed_at)
        .execute(&self.pool)
        .await
        .during("saving a seal")?;
        Ok(())
    }

    async fn seals_after(&self, after: Position, limit: usize) -> Result<Vec<Seal>, StoreError> {
        let limit = validate_page(limit.min(SEAL_PAGE_MAX))?;
        let rows: Vec<(i64, String, i64, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT position, chain_hash, count, key_id, signature, sealed_at FROM audit_seals \
             WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(after.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .during("reading seals")?;
        Ok(rows.into_iter().map(seal_from_row).collect())
    }

    async fn latest_seal(&self) -> Result<Option<Seal>, StoreError> {
        let row: Option<(i64, String, i64, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT position, chain_hash, count, key_id, signature, sealed_at FROM audit_seals \
             ORDER BY position DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .during("reading the latest seal")?;
        Ok(row.map(seal_from_row))
    }
}

#[async_trait]
impl PersonKeyStore for PostgresStore {
    async fn live_person_key(&self, candidate: &PersonKey) -> Result<PersonKey, StoreError> {
        let stored: Option<(String, String, Option<Vec<u8>>)> = sqlx::query_as(
            "INSERT INTO person_keys (key_id, person_id, wrapped_key, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING \
             RETURNING key_id, person_id, wrapped_key",
        )
        .bind(&candidate.key_id)
        .bind(&candidate.person_id)
        .bind(&candidate.wrapped_key)
        .bind(Utc::now())
        .fetch_optional(&self.pool)
        .await
        .during("storing a person key")?;
        if let Some(stored) = stored {
            return Ok(person_key_from_row(stored));
        }
        let row: (String, String, Option<Vec<u8>>) = sqlx::query_as(
            "SELECT key_id, person_id, wrapped_key FROM person_keys \
             WHERE person_id = $1 AND erased_at IS NULL",
        )
        .bind(&candidate.person_id)
        .fetch_one(&self.pool)
        .await
        .during("reading a live person key")?;
        Ok(person_key_from_row(row))
    }

    async fn person_key(&self, key_id: &str) -> Result<Option<PersonKey>, StoreError> {
        let row: Option<(String, String, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT key_id, person_id, wrapped_key FROM person_keys WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
        .during("reading a person key")?;
        Ok(row.map(person_key_from_row))
    }

    async fn erase_person_keys(&self, person_id: &str) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "UPDATE person_keys SET wrapped_key = NULL, erased_at = $2 \
             WHERE person_id = $1 AND erased_at IS NULL RETURNING key_id",
        )
        .bind(person_id)
        .bind(Utc::now())
        .fetch_all(&self.pool)
        .await
        .during("erasing person keys")
    }

    async fn erased_person_keys(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM person_keys WHERE erased_at IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .during("counting erased person keys")
    }

    async fn scrub_deleted_rows(&self) -> Result<(), StoreError> {
        sqlx::raw_sql("VACUUM (FULL) projection_documents, stream_snapshots, person_keys")
            .execute(&self.pool)
            .await
            .during("rewriting the tables that held personal data")?;
        Ok(())
    }
}

impl Store for PostgresStore {
    fn append_groups(&self) -> super::AppendGroups {
        self.appends.groups()
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
