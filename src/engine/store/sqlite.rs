//! The SQLite event store: the embedded default, for one service process on one file.
//!
//! Every write goes through one writer connection in `BEGIN IMMEDIATE` transactions, so writes are
//! serialised and position order is commit order. Appends go through the store's writer task
//! (group commit, `group_commit.rs`): the appends that queued while a commit was in flight share
//! one transaction, each inside a savepoint, so one refused batch is rolled back alone and one
//! `fsync` serves them all. Position order is still commit order: a reader can never see a later
//! position before an earlier one commits, and needs no transaction guard. Reads use a separate
//! pool (WAL mode lets them run beside the writer). Durability: `synchronous = FULL`, so an acknowledged append survives
//! power loss. Several processes on one file are safe for appends (the file lock serialises them)
//! but projection leadership is held in-process only: run one service process per SQLite file.

use super::group_commit::{unavailable_for_each, GroupCommit, GroupWriter};
use super::{
    announce, check_global_page, check_record_page, check_stream_page, checked_outcome,
    documents_of_live_generation, person_key_from_row, seal_from_row, snapshot_text,
    stored_outcome, stored_record, validate_batch, validate_documents, validate_page, AppendBatch,
    BatchOutcome, DatabaseContext, DocumentWrite, EventStore, GenerationState, GenerationStatus,
    Idempotency, IdempotencyRecord, Leadership, PersonKey, PersonKeyStore, ProjectionStore,
    RecordRow, Seal, SealStore, Snapshot, Store, StoreError, StoredRecord, SEAL_PAGE_MAX,
};
use crate::engine::store::upcast::Upcasters;
use aggregates::log::{EventMetadata, Position, RecordedEvent, StreamName, StreamVersion};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Readers beside the single writer.
const READ_CONNECTIONS_MAX: u32 = 4;
/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before failing.
const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

const EVENT_COLUMNS: &str = "global_position, stream_type, stream_id, stream_version, event_id, \
     event_type, schema_version, payload, metadata, recorded_at";

/// The SQLite store.
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    upcasters: Arc<Upcasters>,
    appended: watch::Sender<Position>,
    leaders: Arc<Mutex<HashSet<(String, i64)>>>,
    /// The writer task every append goes through (group commit).
    appends: GroupCommit,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file a `sqlite:` URL names. Does not migrate.
    pub async fn open(url: &str, upcasters: Arc<Upcasters>) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .during("parsing the SQLite URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Deleted rows (replaced read models, erased keys) are zeroed, not left in free pages.
            .pragma("secure_delete", "ON")
            .busy_timeout(BUSY_TIMEOUT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .during("opening the SQLite database")?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS_MAX)
            .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
            .connect_with(options.read_only(true))
            .await
            .during("opening the SQLite database for reading")?;
        let (appended, _) = watch::channel(Position::START);
        // One writer connection: one group at a time, and everything that queued meanwhile
        // shares the next.
        let appends = GroupCommit::start(
            Arc::new(SqliteAppender {
                writer: writer.clone(),
            }),
            1,
        );
        Ok(SqliteStore {
            appends,
            writer,
            readers,
            upcasters,
            appended,
            leaders: Arc::default(),
        })
    }

    fn decode(&self, row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
        Ok(self.upcasters.upcast(decode_stored(row)?)?)
    }

    /// Up to `limit` rows of the log after `after`, in position order.
    async fn log_rows(&self, after: Position, limit: i64) -> Result<Vec<SqliteRow>, StoreError> {
        let rows: Vec<SqliteRow> = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE global_position > ?1 ORDER BY global_position LIMIT ?2"
        ))
        .bind(after.0)
        .bind(limit)
        .fetch_all(&self.readers)
        .await
        .during("reading the log")?;
        Ok(rows)
    }
}

/// An event exactly as stored, before any upcasting: what the audit chain covers.
fn decode_stored(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let payload: serde_json::Value = serde_json::from_str(row.get::<&str, _>("payload"))
        .map_err(|e| StoreError::Invariant(format!("unreadable stored payload: {e}")))?;
    let metadata: EventMetadata = serde_json::from_str(row.get::<&str, _>("metadata"))
        .map_err(|e| StoreError::Invariant(format!("unreadable event metadata: {e}")))?;
    let event = RecordedEvent {
        global_position: Position(row.get("global_position")),
        stream: stored_stream_name(row.get("stream_type"), row.get("stream_id"))?,
        stream_version: StreamVersion(row.get("stream_version")),
        event_id: row.get("event_id"),
        event_type: row.get("event_type"),
        schema_version: row.get("schema_version"),
        payload,
        metadata,
        recorded_at: row.get::<DateTime<Utc>, _>("recorded_at"),
    };
    Ok(event)
}

async fn find_idempotency(
    connection: &mut SqliteConnection,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let row: Option<(Vec<u8>, Option<String>)> = sqlx::query_as(
        "SELECT fingerprint, outcome FROM idempotency_keys WHERE idempotency_key = ?1",
    )
    .bind(key)
    .fetch_optional(connection)
    .await
    .during("reading an idempotency key")?;
    row.map(|(fingerprint, outcome)| {
        IdempotencyRecord::from_stored(fingerprint, outcome.as_deref().unwrap_or(""))
    })
    .transpose()
}

async fn insert_events(
    connection: &mut SqliteConnection,
    batch: &AppendBatch,
    recorded_at: DateTime<Utc>,
) -> Result<Vec<(i64, StreamName, i64)>, StoreError> {
    let metadata = serde_json::to_string(&batch.metadata)
        .map_err(|e| StoreError::InvalidRequest(format!("unserialisable metadata: {e}")))?;
    let mut written = Vec::new();
    for append in &batch.appends {
        for (offset, event) in append.events.iter().enumerate() {
            let version = append.expected_version.0 + 1 + offset as i64;
            let position: i64 = sqlx::query_scalar(
                "INSERT INTO events (stream_type, stream_id, stream_version, event_id, event_type, \
                     schema_version, payload, metadata, recorded_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING global_position",
            )
            .bind(append.stream.stream_type())
            .bind(append.stream.stream_id())
            .bind(version)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(&event.event_type)
            .bind(event.schema_version)
            .bind(event.payload.to_string())
            .bind(&metadata)
            .bind(recorded_at)
            .fetch_one(&mut *connection)
            .await
            .during("inserting events")?;
            written.push((position, append.stream.clone(), version));
        }
    }
    Ok(written)
}

/// One batch inside the group's transaction: a replayed key answers the first outcome; a stream
/// at another version refuses; else the events and the key's record are written.
async fn append_in_transaction(
    connection: &mut SqliteConnection,
    batch: &AppendBatch,
    recorded_at: DateTime<Utc>,
) -> Result<BatchOutcome, StoreError> {
    if let Some(idempotency) = &batch.idempotency {
        if let Some(record) = find_idempotency(connection, &idempotency.key).await? {
            return record.replay(idempotency);
        }
    }
    for append in &batch.appends {
        let current: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_type = ?1 AND stream_id = ?2",
        )
        .bind(append.stream.stream_type())
        .bind(append.stream.stream_id())
        .fetch_one(&mut *connection)
        .await
        .during("reading a stream's version")?;
        if current != append.expected_version.0 {
            return Err(StoreError::WrongExpectedVersion {
                stream: append.stream.clone(),
                expected: append.expected_version,
                actual: StreamVersion(current),
            });
        }
    }
    let written = insert_events(connection, batch, recorded_at).await?;
    let outcome = checked_outcome(batch, written)?;
    if let Some(idempotency) = &batch.idempotency {
        sqlx::query(
            "INSERT INTO idempotency_keys (idempotency_key, fingerprint, outcome, recorded_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(&idempotency.key)
        .bind(&idempotency.fingerprint[..])
        .bind(stored_outcome(&outcome))
        .bind(recorded_at)
        .execute(&mut *connection)
        .await
        .during("recording the idempotency key")?;
    }
    Ok(outcome)
}

/// Writes the groups of the store's writer task ([`GroupCommit`]): one `BEGIN IMMEDIATE`
/// transaction, each batch inside a savepoint so that one refused batch is rolled back alone.
struct SqliteAppender {
    writer: SqlitePool,
}

impl SqliteAppender {
    async fn try_write_group(
        &self,
        group: &[AppendBatch],
    ) -> Result<Vec<Result<BatchOutcome, StoreError>>, StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .during("beginning an append")?;
        let recorded_at = Utc::now();
        let mut answers = Vec::with_capacity(group.len());
        for batch in group {
            sqlx::query("SAVEPOINT append")
                .execute(&mut *tx)
                .await
                .during("opening an append's savepoint")?;
            let answer = append_in_transaction(&mut tx, batch, recorded_at).await;
            if answer.is_err() {
                sqlx::query("ROLLBACK TO append")
                    .execute(&mut *tx)
                    .await
                    .during("rolling an append back to its savepoint")?;
            }
            sqlx::query("RELEASE append")
                .execute(&mut *tx)
                .await
                .during("closing an append's savepoint")?;
            answers.push(answer);
        }
        tx.commit().await.during("committing an append")?;
        Ok(answers)
    }
}

#[async_trait]
impl GroupWriter for SqliteAppender {
    async fn write_group(&self, group: &[AppendBatch]) -> Vec<Result<BatchOutcome, StoreError>> {
        match self.try_write_group(group).await {
            Ok(answers) => answers,
            Err(error) => {
                tracing::warn!(%error, batches = group.len(), "a group append failed; none of it was written");
                unavailable_for_each(&error, group.len())
            }
        }
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    #[tracing::instrument(skip_all, fields(streams = batch.appends.len()))]
    async fn append_batch(&self, batch: AppendBatch) -> Result<BatchOutcome, StoreError> {
        validate_batch(&batch)?;
        let outcome = self.appends.append(batch).await?;
        if !outcome.replayed() {
            announce(&self.appended, outcome.last_position());
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
             WHERE stream_type = ?1 AND stream_id = ?2 AND stream_version >= ?3 \
             ORDER BY stream_version LIMIT ?4"
        ))
        .bind(stream.stream_type())
        .bind(stream.stream_id())
        .bind(from_version.0)
        .bind(limit)
        .fetch_all(&self.readers)
        .await
        .during("reading a stream")?;
        let events = rows
            .iter()
            .map(|row| self.decode(row))
            .collect::<Result<Vec<_>, _>>()?;
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
        let events = rows
            .iter()
            .map(|row| self.decode(row))
            .collect::<Result<Vec<_>, _>>()?;
        check_global_page(&events, after)?;
        Ok(events)
    }

    async fn read_settled(
        &self,
        after: Position,
        through: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // One writer at a time, committing in position order: every read sees a settled prefix.
        let mut events = self.read_all(after, limit).await?;
        events.retain(|event| event.global_position <= through);
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE global_position > ?1 \
             ORDER BY global_position LIMIT ?2"
        ))
        .bind(after.0)
        .bind(limit)
        .fetch_all(&self.readers)
        .await
        .during("reading the log")?;
        let records: Vec<StoredRecord> = rows.into_iter().map(stored_record).collect();
        check_record_page(&records, after)?;
        Ok(records)
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(global_position) FROM events")
            .fetch_one(&self.readers)
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
        let mut connection = self
            .readers
            .acquire()
            .await
            .during("acquiring a connection")?;
        match find_idempotency(&mut connection, &idempotency.key).await? {
            Some(record) => record.replay(idempotency).map(Some),
            None => Ok(None),
        }
    }

    async fn read_snapshot(
        &self,
        stream: &StreamName,
        state_version: i32,
    ) -> Result<Option<Snapshot>, StoreError> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT stream_version, state FROM stream_snapshots \
             WHERE stream_type = ?1 AND stream_id = ?2 AND state_version = ?3",
        )
        .bind(stream.stream_type())
        .bind(stream.stream_id())
        .bind(state_version)
        .fetch_optional(&self.readers)
        .await
        .during("reading a snapshot")?;
        let Some((stream_version, state)) = row else {
            return Ok(None);
        };
        match serde_json::from_str(&state) {
            Ok(state) => Ok(Some(Snapshot {
                stream: stream.clone(),
                state_version,
                stream_version: StreamVersion(stream_version),
                state,
            })),
            // A snapshot only saves work: the load folds the stream instead.
            Err(error) => {
                tracing::warn!(%stream, %error, "unreadable snapshot; passed over");
                Ok(None)
            }
        }
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let text = snapshot_text(snapshot)?;
        sqlx::query(
            "INSERT INTO stream_snapshots \
                 (stream_type, stream_id, state_version, stream_version, state, saved_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (stream_type, stream_id) DO UPDATE \
             SET state_version = excluded.state_version, stream_version = excluded.stream_version, \
                 state = excluded.state, saved_at = excluded.saved_at \
             WHERE stream_snapshots.state_version <> excluded.state_version \
                OR stream_snapshots.stream_version <= excluded.stream_version",
        )
        .bind(snapshot.stream.stream_type())
        .bind(snapshot.stream.stream_id())
        .bind(snapshot.state_version)
        .bind(snapshot.stream_version.0)
        .bind(text)
        .bind(Utc::now())
        .execute(&self.writer)
        .await
        .during("saving a snapshot")?;
        Ok(())
    }

    async fn delete_snapshots(&self) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM stream_snapshots")
            .execute(&self.writer)
            .await
            .during("deleting snapshots")?;
        Ok(deleted.rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.readers)
            .await
            .during("pinging SQLite")?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }
}

fn stored_stream_name(stream_type: String, stream_id: String) -> Result<StreamName, StoreError> {
    StreamName::parse(&stream_type, &stream_id)
        .map_err(|e| StoreError::Invariant(format!("stored stream name is invalid: {e}")))
}

/// In-process leadership: the `(projection, generation)` entry is held until dropped.
struct SqliteLeadership {
    leaders: Arc<Mutex<HashSet<(String, i64)>>>,
    held: (String, i64),
}

impl Drop for SqliteLeadership {
    fn drop(&mut self) {
        self.leaders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.held);
    }
}

#[async_trait]
impl Leadership for SqliteLeadership {
    async fn still_leading(&mut self) -> bool {
        true
    }
}

#[async_trait]
impl ProjectionStore for SqliteStore {
    async fn ensure_projection(&self, projection: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR IGNORE INTO projection_generations (projection, generation, status, checkpoint, created_at) \
             SELECT ?1, 1, 'active', 0, ?2 \
             WHERE NOT EXISTS (SELECT 1 FROM projection_generations WHERE projection = ?1)",
        )
        .bind(projection)
        .bind(Utc::now())
        .execute(&self.writer)
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
             WHERE projection = ?1 ORDER BY generation",
        )
        .bind(projection)
        .fetch_all(&self.readers)
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
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .during("beginning a rebuild")?;
        sqlx::query(
            "DELETE FROM projection_generations WHERE projection = ?1 AND status = 'building'",
        )
        .bind(projection)
        .execute(&mut *tx)
        .await
        .during("dropping an unfinished rebuild")?;
        let generation: i64 = sqlx::query_scalar(
            "INSERT INTO projection_generations (projection, generation, status, checkpoint, created_at) \
             SELECT ?1, COALESCE(MAX(generation), 0) + 1, 'building', 0, ?2 \
             FROM projection_generations WHERE projection = ?1 \
             RETURNING generation",
        )
        .bind(projection)
        .bind(Utc::now())
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
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .during("beginning a generation switch")?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM projection_generations WHERE projection = ?1 AND generation = ?2",
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
            "DELETE FROM projection_generations WHERE projection = ?1 AND status = 'active'",
        )
        .bind(projection)
        .execute(&mut *tx)
        .await
        .during("retiring the active generation")?;
        sqlx::query("UPDATE projection_generations SET status = 'active' WHERE projection = ?1 AND generation = ?2")
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
        let keys_json = serde_json::to_string(keys).unwrap_or_else(|_| String::from("[]"));
        let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
            // The generation's own row comes back key-less in the same statement (one snapshot),
            // so a generation a rebuild retired meanwhile is reported, never read as empty.
            // CROSS JOIN keeps the keys as the outer loop: one index probe per key.
            "SELECT NULL, NULL FROM projection_generations WHERE projection = ?1 AND generation = ?2 \
             UNION ALL \
             SELECT d.doc_key, d.body FROM json_each(?3) AS k CROSS JOIN projection_documents AS d \
             WHERE d.projection = ?1 AND d.generation = ?2 AND d.doc_key = k.value",
        )
        .bind(projection)
        .bind(generation)
        .bind(keys_json)
        .fetch_all(&self.readers)
        .await
        .during("loading projection documents")?;
        let rows = rows
            .into_iter()
            .map(|(key, body)| {
                let body = body
                    .map(|body| serde_json::from_str(&body))
                    .transpose()
                    .map_err(|e| {
                        StoreError::Invariant(format!("unreadable document {key:?}: {e}"))
                    })?;
                Ok((key, body))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
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
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .during("beginning a projection batch")?;
        let moved = sqlx::query(
            "UPDATE projection_generations SET checkpoint = ?4 \
             WHERE projection = ?1 AND generation = ?2 AND checkpoint = ?3",
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
        for write in writes {
            let statement = match &write.body {
                Some(body) => sqlx::query(
                    "INSERT INTO projection_documents (projection, generation, doc_key, body, last_position) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (projection, generation, doc_key) \
                     DO UPDATE SET body = excluded.body, last_position = excluded.last_position",
                )
                .bind(projection)
                .bind(generation)
                .bind(&write.key)
                .bind(body.to_string())
                .bind(write.position.0),
                None => sqlx::query(
                    "DELETE FROM projection_documents WHERE projection = ?1 AND generation = ?2 AND doc_key = ?3",
                )
                .bind(projection)
                .bind(generation)
                .bind(&write.key),
            };
            statement
                .execute(&mut *tx)
                .await
                .during("writing projection documents")?;
        }
        tx.commit().await.during("committing a projection batch")?;
        Ok(())
    }

    async fn read_document_at(
        &self,
        projection: &str,
        key: &str,
    ) -> Result<Option<(serde_json::Value, Position)>, StoreError> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT d.body, d.last_position FROM projection_documents d \
             JOIN projection_generations g ON g.projection = d.projection AND g.generation = d.generation \
             WHERE g.projection = ?1 AND g.status = 'active' AND d.doc_key = ?2",
        )
        .bind(projection)
        .bind(key)
        .fetch_optional(&self.readers)
        .await
        .during("reading a projection document")?;
        row.map(|(body, position)| {
            let body = serde_json::from_str(&body)
                .map_err(|e| StoreError::Invariant(format!("unreadable document {key:?}: {e}")))?;
            Ok((body, Position(position)))
        })
        .transpose()
    }

    async fn read_current_document(
        &self,
        projection: &str,
        key: &str,
        stream: &StreamName,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let body: Option<String> = sqlx::query_scalar(
            "SELECT d.body FROM projection_documents d \
             JOIN projection_generations g ON g.projection = d.projection AND g.generation = d.generation \
             WHERE g.projection = ?1 AND g.status = 'active' AND d.doc_key = ?2 \
             AND d.last_position = (SELECT e.global_position FROM events e \
                 WHERE e.stream_type = ?3 AND e.stream_id = ?4 \
                 ORDER BY e.stream_version DESC LIMIT 1)",
        )
        .bind(projection)
        .bind(key)
        .bind(stream.stream_type())
        .bind(stream.stream_id())
        .fetch_optional(&self.readers)
        .await
        .during("reading a current projection document")?;
        body.map(|body| {
            serde_json::from_str(&body)
                .map_err(|e| StoreError::Invariant(format!("unreadable document {key:?}: {e}")))
        })
        .transpose()
    }

    async fn list_documents(
        &self,
        projection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let limit = validate_page(limit)?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT d.doc_key, d.body FROM projection_documents d \
             JOIN projection_generations g ON g.projection = d.projection AND g.generation = d.generation \
             WHERE g.projection = ?1 AND g.status = 'active' AND d.doc_key > ?2 \
             ORDER BY d.doc_key LIMIT ?3",
        )
        .bind(projection)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.readers)
        .await
        .during("listing projection documents")?;
        rows.into_iter()
            .map(|(key, body)| {
                let document = serde_json::from_str(&body).map_err(|e| {
                    StoreError::Invariant(format!("unreadable document {key:?}: {e}"))
                })?;
                Ok((key, document))
            })
            .collect()
    }

    async fn try_lead(
        &self,
        projection: &str,
        generation: i64,
    ) -> Result<Option<Box<dyn Leadership>>, StoreError> {
        let held = (projection.to_owned(), generation);
        let mut leaders = self
            .leaders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !leaders.insert(held.clone()) {
            return Ok(None);
        }
        Ok(Some(Box::new(SqliteLeadership {
            leaders: Arc::clone(&self.leaders),
            held,
        })))
    }
}

#[async_trait]
impl SealStore for SqliteStore {
    async fn save_seal(&self, seal: &Seal) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_seals (position, chain_hash, count, key_id, signature, sealed_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (position) DO NOTHING",
        )
        .bind(seal.position.0)
        .bind(&seal.chain_hash)
        .bind(seal.count)
        .bind(&seal.key_id)
        .bind(&seal.signature)
        .bind(seal.sealed_at)
        .execute(&self.writer)
        .await
        .during("saving a seal")?;
        Ok(())
    }

    async fn seals_after(&self, after: Position, limit: usize) -> Result<Vec<Seal>, StoreError> {
        let limit = validate_page(limit.min(SEAL_PAGE_MAX))?;
        let rows: Vec<(i64, String, i64, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT position, chain_hash, count, key_id, signature, sealed_at FROM audit_seals \
             WHERE position > ?1 ORDER BY position LIMIT ?2",
        )
        .bind(after.0)
        .bind(limit)
        .fetch_all(&self.readers)
        .await
        .during("reading seals")?;
        Ok(rows.into_iter().map(seal_from_row).collect())
    }

    async fn latest_seal(&self) -> Result<Option<Seal>, StoreError> {
        let row: Option<(i64, String, i64, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT position, chain_hash, count, key_id, signature, sealed_at FROM audit_seals \
             ORDER BY position DESC LIMIT 1",
        )
        .fetch_optional(&self.readers)
        .await
        .during("reading the latest seal")?;
        Ok(row.map(seal_from_row))
    }
}

#[async_trait]
impl PersonKeyStore for SqliteStore {
    async fn live_person_key(&self, candidate: &PersonKey) -> Result<PersonKey, StoreError> {
        let stored: Option<(String, String, Option<Vec<u8>>)> = sqlx::query_as(
            "INSERT INTO person_keys (key_id, person_id, wrapped_key, created_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING \
             RETURNING key_id, person_id, wrapped_key",
        )
        .bind(&candidate.key_id)
        .bind(&candidate.person_id)
        .bind(&candidate.wrapped_key)
        .bind(Utc::now())
        .fetch_optional(&self.writer)
        .await
        .during("storing a person key")?;
        if let Some(stored) = stored {
            return Ok(person_key_from_row(stored));
        }
        let row: (String, String, Option<Vec<u8>>) = sqlx::query_as(
            "SELECT key_id, person_id, wrapped_key FROM person_keys \
             WHERE person_id = ?1 AND erased_at IS NULL",
        )
        .bind(&candidate.person_id)
        .fetch_one(&self.writer)
        .await
        .during("reading a live person key")?;
        Ok(person_key_from_row(row))
    }

    async fn person_key(&self, key_id: &str) -> Result<Option<PersonKey>, StoreError> {
        let row: Option<(String, String, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT key_id, person_id, wrapped_key FROM person_keys WHERE key_id = ?1",
        )
        .bind(key_id)
        .fetch_optional(&self.writer)
        .await
        .during("reading a person key")?;
        Ok(row.map(person_key_from_row))
    }

    async fn erase_person_keys(&self, person_id: &str) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "UPDATE person_keys SET wrapped_key = NULL, erased_at = ?2 \
             WHERE person_id = ?1 AND erased_at IS NULL RETURNING key_id",
        )
        .bind(person_id)
        .bind(Utc::now())
        .fetch_all(&self.writer)
        .await
        .during("erasing person keys")
    }

    async fn erased_person_keys(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM person_keys WHERE erased_at IS NOT NULL")
            .fetch_one(&self.readers)
            .await
            .during("counting erased person keys")
    }

    async fn scrub_deleted_rows(&self) -> Result<(), StoreError> {
        let mut writer = self
            .writer
            .acquire()
            .await
            .during("connecting to scrub the database")?;
        truncate_wal(&mut writer).await?;
        sqlx::query("VACUUM")
            .execute(&mut *writer)
            .await
            .during("rewriting the database file")?;
        truncate_wal(&mut writer).await
    }
}

/// Attempts at truncating the write-ahead log while readers still use frames of it.
const WAL_TRUNCATE_ATTEMPTS_MAX: usize = 50;
/// The pause between those attempts.
const WAL_TRUNCATE_RETRY: Duration = Duration::from_millis(100);

/// Copies every frame of the write-ahead log into the database file and truncates the log to
/// zero bytes, waiting for readers of old frames to finish.
async fn truncate_wal(connection: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    for _ in 0..WAL_TRUNCATE_ATTEMPTS_MAX {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *connection)
            .await
            .during("truncating the write-ahead log")?;
        if busy == 0 {
            return Ok(());
        }
        tokio::time::sleep(WAL_TRUNCATE_RETRY).await;
    }
    Err(StoreError::Invariant(String::from(
        "the write-ahead log stayed in use; run the erasure again to scrub it",
    )))
}

impl Store for SqliteStore {
    fn append_groups(&self) -> super::AppendGroups {
        self.appends.groups()
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
