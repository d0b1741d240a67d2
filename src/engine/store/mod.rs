//! The event store: one trait for the log and one for read-model storage, with a PostgreSQL and a
//! SQLite implementation that pass the same contract suite (`tests/api/store_contract.rs`).
//!
//! This module owns the types callers see (append requests and outcomes, errors, limits) and the
//! checks that do not depend on the database. The SQL lives beside each implementation. The
//! store knows nothing of commands or projections' folds: it appends, reads, and stores documents.

mod group_commit;
mod postgres;
mod sqlite;
pub mod upcast;

use aggregates::decider::EncodedEvent;
use aggregates::log::{EventMetadata, Position, RecordedEvent, StreamName, StreamVersion};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

pub use group_commit::AppendGroups;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
use upcast::{UpcastError, Upcasters};

/// Most events one append may carry: one command of one aggregate produces a handful; a bound keeps
/// one transaction short and the position lock brief.
pub const APPEND_EVENTS_MAX: usize = 100;
/// Most streams one atomic append may touch: a command and the index streams it maintains; a
/// sign-in that accepts invitations of several accounts (its link, its user, and up to
/// `flows::sign_in::INVITING_ACCOUNTS_PER_SIGN_IN_MAX` accounts); a signup's completion (the
/// Stripe receipt, the account, its owner, the first workspace's index, the signup, the owner's
/// sign-in link and its index, the Stripe objects linked).
pub const APPEND_STREAMS_MAX: usize = 16;
/// Largest serialised payload of one event. Events are facts, not blobs.
pub const EVENT_PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// Longest idempotency key the store keeps.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;
/// Longest scope of a scoped key ([`Idempotency::scoped`]): a route's name.
pub const IDEMPOTENCY_SCOPE_LEN_MAX: usize = 32;
/// Characters of a scoped key after its scope and `:`: the SHA-256 of the client's key in hex,
/// so a client key of any accepted length (the edge takes 255) scopes to a key the store keeps.
pub const IDEMPOTENCY_SCOPED_DIGEST_LEN: usize = 64;
const _: () = assert!(
    IDEMPOTENCY_SCOPE_LEN_MAX + 1 + IDEMPOTENCY_SCOPED_DIGEST_LEN <= IDEMPOTENCY_KEY_LEN_MAX
);
/// Most events one read returns; callers page with positions or versions.
pub const READ_PAGE_MAX: usize = 1_000;
/// Most documents one projection batch may load or write.
pub const DOCUMENT_BATCH_MAX: usize = 2 * READ_PAGE_MAX;
const _: () = assert!(APPEND_EVENTS_MAX <= READ_PAGE_MAX);
const _: () = assert!(READ_PAGE_MAX <= DOCUMENT_BATCH_MAX);

/// An idempotency key and the fingerprint of the request it was sent with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    /// The caller's key, scoped by the caller (e.g. `stripe:evt_…`, `http:activate:<key>`).
    pub key: String,
    /// SHA-256 of the request's canonical form: the same key with another fingerprint is refused.
    pub fingerprint: [u8; 32],
}

impl Idempotency {
    /// The key `client_key` of one route (`scope`), fingerprinted like [`Idempotency::for_request`]:
    /// `<scope>:<sha256 hex of the client key>`, never longer than [`IDEMPOTENCY_KEY_LEN_MAX`]
    /// however long the client's key. A scope longer than [`IDEMPOTENCY_SCOPE_LEN_MAX`] is a
    /// programming error, and asserted.
    pub fn scoped<T: Serialize>(scope: &str, client_key: &str, request: &T) -> Idempotency {
        assert!(
            !scope.is_empty() && scope.len() <= IDEMPOTENCY_SCOPE_LEN_MAX,
            "idempotency scope {scope:?} is 1 to {IDEMPOTENCY_SCOPE_LEN_MAX} characters"
        );
        Idempotency::for_request(format!("{scope}:{}", scoped_digest(client_key)), request)
    }

    /// A key whose fingerprint is the SHA-256 of `request`'s canonical JSON (serde_json's `Value`
    /// keeps object keys sorted, so equal requests give equal bytes). A request type that cannot
    /// serialise is a programming error, and asserted.
    pub fn for_request<T: Serialize>(key: impl Into<String>, request: &T) -> Idempotency {
        let canonical = serde_json::to_value(request)
            .and_then(|value| serde_json::to_vec(&value))
            .expect("an idempotent request serialises to JSON");
        Idempotency {
            key: key.into(),
            fingerprint: Sha256::digest(&canonical).into(),
        }
    }
}

/// The SHA-256 of a client's idempotency key in hex ([`IDEMPOTENCY_SCOPED_DIGEST_LEN`] long).
pub fn scoped_digest(client_key: &str) -> String {
    hex::encode(Sha256::digest(client_key.as_bytes()))
}

/// One stream's events, appended at the version the caller last saw.
#[derive(Clone, Debug)]
pub struct AppendRequest {
    /// The stream appended to.
    pub stream: StreamName,
    /// The version the caller last saw; the append fails with a conflict if the stream has moved.
    pub expected_version: StreamVersion,
    /// The events, in order; at least one.
    pub events: Vec<EncodedEvent>,
    /// Who, why and when, shared by all events of the append.
    pub metadata: EventMetadata,
    /// When set, the append happens at most once for this key.
    pub idempotency: Option<Idempotency>,
}

/// One stream's part of an atomic append.
#[derive(Clone, Debug)]
pub struct StreamAppend {
    /// The stream appended to.
    pub stream: StreamName,
    /// The version the caller last saw.
    pub expected_version: StreamVersion,
    /// The events, in order; at least one.
    pub events: Vec<EncodedEvent>,
}

/// Appends to several streams in one transaction: all of them happen, or none. Positions are
/// contiguous across the batch, in the order of `appends`.
#[derive(Clone, Debug)]
pub struct AppendBatch {
    /// The streams and their events; at most [`APPEND_STREAMS_MAX`], each stream once, at most
    /// [`APPEND_EVENTS_MAX`] events in all.
    pub appends: Vec<StreamAppend>,
    /// Who, why and when, shared by every event.
    pub metadata: EventMetadata,
    /// When set, the batch happens at most once for this key.
    pub idempotency: Option<Idempotency>,
}

impl From<AppendRequest> for AppendBatch {
    fn from(request: AppendRequest) -> AppendBatch {
        AppendBatch {
            appends: vec![StreamAppend {
                stream: request.stream,
                expected_version: request.expected_version,
                events: request.events,
            }],
            metadata: request.metadata,
            idempotency: request.idempotency,
        }
    }
}

/// What one stream's append wrote, or, for a replayed idempotency key, what the first one wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// The stream appended to.
    pub stream: StreamName,
    /// The global positions written, in order.
    pub positions: Vec<Position>,
    /// The stream's version after the append.
    pub stream_version: StreamVersion,
    /// True when nothing was written because the idempotency key had been seen with this request.
    pub replayed: bool,
}

impl AppendOutcome {
    /// The last position written: wait for projections to reach it to read your own write.
    pub fn last_position(&self) -> Position {
        self.positions.last().copied().unwrap_or(Position::START)
    }
}

/// What an atomic append wrote, one outcome per stream in the order of the batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// Per stream, in the batch's order.
    pub outcomes: Vec<AppendOutcome>,
}

impl BatchOutcome {
    /// The last position the batch wrote.
    pub fn last_position(&self) -> Position {
        self.outcomes
            .iter()
            .map(AppendOutcome::last_position)
            .max()
            .unwrap_or(Position::START)
    }

    /// True when the idempotency key answered with the first outcome and nothing was written.
    pub fn replayed(&self) -> bool {
        self.outcomes.iter().any(|o| o.replayed)
    }

    fn marked_replayed(mut self) -> BatchOutcome {
        for outcome in &mut self.outcomes {
            outcome.replayed = true;
        }
        self
    }
}

/// One event's columns as stored, its payload and metadata as the database's JSON text (see
/// [`EventStore::read_all_records`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The global position.
    pub global_position: i64,
    /// The stream's type.
    pub stream_type: String,
    /// The stream's id.
    pub stream_id: String,
    /// The version within the stream.
    pub stream_version: i64,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: i32,
    /// The payload, as the database's JSON text.
    pub payload: String,
    /// The metadata, as the database's JSON text.
    pub metadata: String,
    /// When it was recorded.
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

/// The columns of a record, in [`StoredRecord`]'s order, as both stores select them.
type RecordRow = (
    i64,
    String,
    String,
    i64,
    String,
    String,
    i32,
    String,
    String,
    chrono::DateTime<chrono::Utc>,
);

fn stored_record(row: RecordRow) -> StoredRecord {
    let (
        global_position,
        stream_type,
        stream_id,
        stream_version,
        event_id,
        event_type,
        schema_version,
        payload,
        metadata,
        recorded_at,
    ) = row;
    StoredRecord {
        global_position,
        stream_type,
        stream_id,
        stream_version,
        event_id,
        event_type,
        schema_version,
        payload,
        metadata,
        recorded_at,
    }
}

/// Asserts a page of records came back in strictly rising position order after `after`.
fn check_record_page(records: &[StoredRecord], after: Position) -> Result<(), StoreError> {
    let mut previous = after.0;
    for record in records {
        if record.global_position <= previous {
            return Err(StoreError::Invariant(format!(
                "position {} follows {previous} in a global read",
                record.global_position
            )));
        }
        previous = record.global_position;
    }
    Ok(())
}

/// Why the store refused or failed a request. Conflicts are typed so callers can retry them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the stream first.
    #[error("stream {stream} is at version {actual}, not the expected {expected}")]
    WrongExpectedVersion {
        /// The stream.
        stream: StreamName,
        /// The version the caller expected.
        expected: StreamVersion,
        /// The version the stream is at.
        actual: StreamVersion,
    },
    /// The idempotency key was first used with a different request.
    #[error("idempotency key {key:?} was already used with a different request")]
    IdempotencyKeyReused {
        /// The key.
        key: String,
    },
    /// The request breaks a documented limit or rule; nothing was written.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A stored event could not be upcast to the current schema.
    #[error(transparent)]
    Upcast(#[from] UpcastError),
    /// The projection's checkpoint moved under the runner (another runner, or a generation switch).
    #[error(
        "projection {projection} generation {generation} is no longer at checkpoint {expected}"
    )]
    CheckpointMoved {
        /// The projection.
        projection: String,
        /// The generation written.
        generation: i64,
        /// The checkpoint the runner started its batch from.
        expected: Position,
    },
    /// The projection generation no longer exists: a rebuild switched readers to a new one.
    #[error("projection {projection} generation {generation} was retired by a rebuild")]
    GenerationRetired {
        /// The projection.
        projection: String,
        /// The generation asked for.
        generation: i64,
    },
    /// A stored row breaks an invariant of the log; the ledger stops rather than guess.
    #[error("log invariant violated: {0}")]
    Invariant(String),
    /// Applying the schema migrations failed.
    #[error("migrating the database failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database failed.
    #[error("database error while {during}")]
    Database {
        /// What the store was doing.
        during: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    /// Whether the database could not be reached (down, restarting, the network cut, the pool
    /// exhausted past its wait): a retry later may succeed, and nothing was written.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database { source, .. } => database_unreachable(source),
            _ => false,
        }
    }
}

/// Whether a driver error means the database could not be reached (see
/// [`StoreError::is_unavailable`]).
pub fn database_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL's connection exceptions (08…), and an operator or crash shutdown (57P…).
        sqlx::Error::Database(error) => error
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// The documents of a `load_documents` answer whose first part is a key-less row standing for
/// the generation itself: without that row the generation was retired.
fn documents_of_live_generation(
    projection: &str,
    generation: i64,
    rows: Vec<(Option<String>, Option<serde_json::Value>)>,
) -> Result<HashMap<String, serde_json::Value>, StoreError> {
    let mut alive = false;
    let mut documents = HashMap::with_capacity(rows.len());
    for (key, body) in rows {
        match (key, body) {
            (Some(key), Some(body)) => {
                documents.insert(key, body);
            }
            _ => alive = true,
        }
    }
    if !alive {
        return Err(StoreError::GenerationRetired {
            projection: projection.to_owned(),
            generation,
        });
    }
    Ok(documents)
}

/// Attaches what the store was doing to a driver error.
pub(crate) trait DatabaseContext<T> {
    /// Wraps a driver error into [`StoreError::Database`].
    fn during(self, during: &'static str) -> Result<T, StoreError>;
}

impl<T> DatabaseContext<T> for Result<T, sqlx::Error> {
    fn during(self, during: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Database { during, source })
    }
}

/// Largest snapshot document kept, in bytes of JSON; a larger state is folded from the log.
pub const SNAPSHOT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A stream's folded state at one of its versions, kept so loads fold only the events after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The stream.
    pub stream: StreamName,
    /// The version of the state's shape and fold that wrote it (the decider's `SnapshotCodec`).
    pub state_version: i32,
    /// The stream version the state has folded up to.
    pub stream_version: StreamVersion,
    /// The state.
    pub state: serde_json::Value,
}

/// The JSON text of a snapshot to save, refused when it exceeds [`SNAPSHOT_BYTES_MAX`] or folds
/// nothing.
fn snapshot_text(snapshot: &Snapshot) -> Result<String, StoreError> {
    let text = snapshot.state.to_string();
    if text.len() > SNAPSHOT_BYTES_MAX || snapshot.stream_version == StreamVersion::EMPTY {
        return Err(StoreError::InvalidRequest(format!(
            "a snapshot of {} at version {} of {} bytes (at most {SNAPSHOT_BYTES_MAX}, of a version above 0)",
            snapshot.stream, snapshot.stream_version, text.len()
        )));
    }
    Ok(text)
}

/// The append-only log.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends to one or more streams at their expected versions, with the idempotency record, in
    /// one transaction. See [`AppendBatch`].
    async fn append_batch(&self, batch: AppendBatch) -> Result<BatchOutcome, StoreError>;

    /// Appends events to one stream at the expected version. See [`AppendRequest`].
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let stream = request.stream.clone();
        let outcome = self.append_batch(request.into()).await?;
        outcome
            .outcomes
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Invariant(format!("the append to {stream} has no outcome")))
    }

    /// Reads up to `limit` events of one stream with version ≥ `from_version`, upcast.
    async fn read_stream(
        &self,
        stream: &StreamName,
        from_version: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The events of positions `(after, through]` in global order, upcast, at most `limit`.
    /// `through` must be at most a head this store answered ([`EventStore::head_position`]):
    /// every position up to it is settled, so the read takes every event of the range, where
    /// [`EventStore::read_all`] may stop short for a moment (on PostgreSQL its visibility guard
    /// can hold a read back while another database's transaction ends). A rebuild reads the
    /// log below the head it took this way, several pages at once.
    async fn read_settled(
        &self,
        after: Position,
        through: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads up to `limit` events after `after` in global order, upcast. Never skips an event
    /// that commits later with an earlier position: such reads stop before it until it commits.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Like [`EventStore::read_all`], but every event exactly as stored, without upcasting: what
    /// the audit chain covers, so a new upcaster never changes a sealed or exported record.
    async fn read_all_stored(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Like [`EventStore::read_all_stored`], but each event's columns as the database keeps them,
    /// its payload and metadata as the database's JSON text, undecoded: what the auditor export
    /// chains.
    async fn read_all_records(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StoreError>;

    /// The position of the newest event a reader may see (0 for an empty log). Every position at
    /// or below it is settled: its event has committed, or no event will ever hold it (see
    /// [`EventStore::read_settled`]).
    async fn head_position(&self) -> Result<Position, StoreError>;

    /// A receiver that changes whenever this process appends, or (PostgreSQL) hears another process
    /// append. Wake-ups are hints; readers also poll.
    fn subscribe_appends(&self) -> watch::Receiver<Position>;

    /// What an idempotency key already stands for: `None` when unseen, the first outcome for the
    /// same request, [`StoreError::IdempotencyKeyReused`] for another.
    async fn idempotent_outcome(
        &self,
        idempotency: &Idempotency,
    ) -> Result<Option<BatchOutcome>, StoreError>;

    /// The snapshot of a stream's state at `state_version`, if one was saved.
    async fn read_snapshot(
        &self,
        stream: &StreamName,
        state_version: i32,
    ) -> Result<Option<Snapshot>, StoreError>;

    /// Saves a snapshot in place of the stream's older one (or one of the same version, which may
    /// no longer decode); a snapshot of the same state version at a later stream version stays.
    /// Refuses one larger than [`SNAPSHOT_BYTES_MAX`].
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;

    /// Deletes every snapshot (loads fold from the log until new ones are saved); returns how many.
    async fn delete_snapshots(&self) -> Result<u64, StoreError>;

    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Applies the schema migrations this binary carries; safe to run from several processes.
    async fn migrate(&self) -> Result<(), StoreError>;
}

/// A generation of a projection: its status and how far it has read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GenerationState {
    /// The projection.
    pub projection: String,
    /// The generation number; a rebuild writes a new one.
    pub generation: i64,
    /// `building`, `active` or `retired`.
    pub status: GenerationStatus,
    /// The last position folded into this generation.
    pub checkpoint: Position,
}

/// Where a generation is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationStatus {
    /// Being rebuilt from position 0; not yet served.
    Building,
    /// Served to readers and kept up to date.
    Active,
}

impl GenerationStatus {
    fn as_str(self) -> &'static str {
        match self {
            GenerationStatus::Building => "building",
            GenerationStatus::Active => "active",
        }
    }

    fn parse(status: &str) -> Result<GenerationStatus, StoreError> {
        match status {
            "building" => Ok(GenerationStatus::Building),
            "active" => Ok(GenerationStatus::Active),
            other => Err(StoreError::Invariant(format!(
                "unknown generation status {other:?}"
            ))),
        }
    }
}

/// One document change of a projection batch: `None` deletes the document.
#[derive(Clone, Debug, PartialEq)]
pub struct DocumentWrite {
    /// The document key.
    pub key: String,
    /// The new body, or `None` to delete.
    pub body: Option<serde_json::Value>,
    /// The position of the last event that changed it.
    pub position: Position,
}

/// Proof that this process is the one runner of a projection generation. Dropping it gives the
/// role up (on PostgreSQL by closing the connection that holds the advisory lock).
#[async_trait]
pub trait Leadership: Send {
    /// Checks the role is still held (on PostgreSQL: the lock's connection is alive).
    async fn still_leading(&mut self) -> bool;
}

/// Read-model storage: generations, checkpoints and documents, and the single-runner lock.
#[async_trait]
pub trait ProjectionStore: Send + Sync {
    /// Creates the projection's active generation 1 at checkpoint 0 unless it has a generation.
    async fn ensure_projection(&self, projection: &str) -> Result<(), StoreError>;

    /// The projection's generations: the active one, and a building one during a rebuild.
    async fn projection_generations(
        &self,
        projection: &str,
    ) -> Result<Vec<GenerationState>, StoreError>;

    /// Starts a new `building` generation at checkpoint 0 and with no documents, replacing any
    /// earlier unfinished one (its documents go with it).
    async fn begin_generation(&self, projection: &str) -> Result<i64, StoreError>;

    /// Makes a building generation the active one and deletes the documents of the one it replaces.
    async fn activate_generation(
        &self,
        projection: &str,
        generation: i64,
    ) -> Result<(), StoreError>;

    /// Loads the documents stored under `keys` in one generation.
    async fn load_documents(
        &self,
        projection: &str,
        generation: i64,
        keys: &[String],
    ) -> Result<HashMap<String, serde_json::Value>, StoreError>;

    /// Writes a batch's documents and moves the checkpoint from `from` to `to`, in one transaction.
    /// Fails with [`StoreError::CheckpointMoved`], writing nothing, unless the checkpoint is still at
    /// `from`.
    async fn commit_batch(
        &self,
        projection: &str,
        generation: i64,
        from: Position,
        to: Position,
        writes: &[DocumentWrite],
    ) -> Result<(), StoreError>;

    /// Reads one document of the active generation.
    async fn read_document(
        &self,
        projection: &str,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .read_document_at(projection, key)
            .await?
            .map(|(body, _)| body))
    }

    /// Reads one document of the active generation, with the position of the last event folded
    /// into it.
    async fn read_document_at(
        &self,
        projection: &str,
        key: &str,
    ) -> Result<Option<(serde_json::Value, Position)>, StoreError>;

    /// Reads one document of the active generation only if it has folded `stream` up to the
    /// stream's newest event, in one statement: a read model that lags never answers for it.
    async fn read_current_document(
        &self,
        projection: &str,
        key: &str,
        stream: &StreamName,
    ) -> Result<Option<serde_json::Value>, StoreError>;

    /// A page of the active generation's documents in key order, starting after the key `after`
    /// (from the first when `None`): at most `limit` (≤ [`READ_PAGE_MAX`]) key–document pairs.
    async fn list_documents(
        &self,
        projection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError>;

    /// Tries to become the single runner of a projection generation across every process sharing
    /// this database. `None` when another holds it.
    async fn try_lead(
        &self,
        projection: &str,
        generation: i64,
    ) -> Result<Option<Box<dyn Leadership>>, StoreError>;
}

/// A signed seal of the log's prefix up to `position` (see `crate::engine::audit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The last position sealed.
    pub position: Position,
    /// The audit chain's value after that position.
    pub chain_hash: String,
    /// How many events the prefix holds.
    pub count: i64,
    /// The key that signed it.
    pub key_id: String,
    /// The EdDSA JWT over `{position, chain_hash, count}`.
    pub signature: String,
    /// When it was made.
    pub sealed_at: chrono::DateTime<chrono::Utc>,
}

/// Most seals one read returns.
pub const SEAL_PAGE_MAX: usize = 1_000;

/// Storage of audit seals.
#[async_trait]
pub trait SealStore: Send + Sync {
    /// Saves a seal; a seal already made at the same position (by another process) is kept.
    async fn save_seal(&self, seal: &Seal) -> Result<(), StoreError>;

    /// Up to `limit` seals after `after`, by position.
    async fn seals_after(&self, after: Position, limit: usize) -> Result<Vec<Seal>, StoreError>;

    /// The newest seal.
    async fn latest_seal(&self) -> Result<Option<Seal>, StoreError>;
}

/// One per-person data key as stored: wrapped by the master key, or erased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonKey {
    /// The key's id, named by every value sealed under it.
    pub key_id: String,
    /// The person it belongs to (a keyed hash of their email).
    pub person_id: String,
    /// The data key wrapped by the master key; `None` once erased.
    pub wrapped_key: Option<Vec<u8>>,
}

/// Most person keys one erasure destroys: one live key per person, plus keys racing it.
pub const PERSON_KEYS_ERASED_MAX: usize = 100;

/// Storage of per-person data keys (see `crate::engine::personal_data`).
#[async_trait]
pub trait PersonKeyStore: Send + Sync {
    /// The person's live key, creating `candidate` as it when there is none. Two processes racing
    /// both get the one that was stored first.
    async fn live_person_key(&self, candidate: &PersonKey) -> Result<PersonKey, StoreError>;

    /// A key by id, live or erased.
    async fn person_key(&self, key_id: &str) -> Result<Option<PersonKey>, StoreError>;

    /// Destroys every live key of a person; the ids of the keys destroyed.
    async fn erase_person_keys(&self, person_id: &str) -> Result<Vec<String>, StoreError>;

    /// How many keys have been erased, by any process: a change means cached keys may be stale.
    async fn erased_person_keys(&self) -> Result<i64, StoreError>;

    /// Rewrites what the store's files may still hold of deleted and replaced rows, after an
    /// erasure: SQLite checkpoints and truncates its write-ahead log, rewrites the database file
    /// (`VACUUM`) and truncates the log again; PostgreSQL rewrites the tables that held
    /// plaintext or wrapped keys (`VACUUM FULL`), so their old row versions leave the table
    /// files. What stays outside them (PostgreSQL's WAL segments until recycled, backups) is
    /// the operator's to expire.
    async fn scrub_deleted_rows(&self) -> Result<(), StoreError>;
}

/// The whole store a service needs.
pub trait Store: EventStore + ProjectionStore + SealStore + PersonKeyStore {
    /// `postgres` or `sqlite`, for logs and metrics.
    fn backend(&self) -> &'static str;

    /// How many groups this process's append writer committed, and how many appends they held.
    fn append_groups(&self) -> AppendGroups;
}

/// Opens the store a URL names (`postgres://…`, `postgresql://…` or `sqlite:…`) and applies migrations.
pub async fn open(url: &str, upcasters: Arc<Upcasters>) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url, upcasters).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, upcasters).await?))
    } else {
        Err(StoreError::InvalidRequest(String::from(
            "database URL must start with postgres://, postgresql:// or sqlite:",
        )))
    }
}

/// Raises the local wake-up signal to `position` if it is newer than what it holds.
fn announce(appended: &watch::Sender<Position>, position: Position) {
    appended.send_if_modified(|head| {
        let moved = position > *head;
        if moved {
            *head = position;
        }
        moved
    });
}

/// Checks what no database needs to see: counts, sizes, key lengths, and version arithmetic.
fn validate_batch(batch: &AppendBatch) -> Result<(), StoreError> {
    let invalid = |message: String| Err(StoreError::InvalidRequest(message));
    if batch.appends.is_empty() || batch.appends.len() > APPEND_STREAMS_MAX {
        return invalid(format!(
            "an append touches 1 to {APPEND_STREAMS_MAX} streams"
        ));
    }
    let streams: std::collections::BTreeSet<_> = batch.appends.iter().map(|a| &a.stream).collect();
    if streams.len() != batch.appends.len() {
        return invalid(String::from("an append names each stream once"));
    }
    let total: usize = batch.appends.iter().map(|a| a.events.len()).sum();
    if total > APPEND_EVENTS_MAX {
        return invalid(format!(
            "an append carries at most {APPEND_EVENTS_MAX} events"
        ));
    }
    for append in &batch.appends {
        if append.events.is_empty() {
            return invalid(format!("the append to {} has no event", append.stream));
        }
        if append.expected_version.0 < 0 {
            return invalid(String::from("expected version must not be negative"));
        }
        append.events.iter().try_for_each(validate_event)?;
    }
    if let Some(idempotency) = &batch.idempotency {
        let key = &idempotency.key;
        if key.is_empty()
            || key.len() > IDEMPOTENCY_KEY_LEN_MAX
            || key.chars().any(char::is_control)
        {
            return invalid(format!(
                "idempotency key must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} printable characters"
            ));
        }
    }
    Ok(())
}

fn validate_event(event: &EncodedEvent) -> Result<(), StoreError> {
    let invalid = |message: String| Err(StoreError::InvalidRequest(message));
    let type_ok = !event.event_type.is_empty()
        && event.event_type.len() <= 128
        && event
            .event_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if !type_ok {
        return invalid(format!("invalid event type {:?}", event.event_type));
    }
    if event.schema_version < 1 {
        return invalid(format!(
            "schema version of {} must be at least 1",
            event.event_type
        ));
    }
    let payload_bytes = serde_json::to_vec(&event.payload)
        .map(|b| b.len())
        .unwrap_or(usize::MAX);
    if payload_bytes > EVENT_PAYLOAD_BYTES_MAX {
        return invalid(format!(
            "payload of {} is {payload_bytes} bytes; at most {EVENT_PAYLOAD_BYTES_MAX}",
            event.event_type
        ));
    }
    Ok(())
}

/// Checks a page size against [`READ_PAGE_MAX`].
fn validate_page(limit: usize) -> Result<i64, StoreError> {
    if limit == 0 || limit > READ_PAGE_MAX {
        return Err(StoreError::InvalidRequest(format!(
            "page size {limit} is outside 1..={READ_PAGE_MAX}"
        )));
    }
    Ok(limit as i64)
}

/// Checks a document batch against [`DOCUMENT_BATCH_MAX`].
fn validate_documents(count: usize) -> Result<(), StoreError> {
    if count > DOCUMENT_BATCH_MAX {
        return Err(StoreError::InvalidRequest(format!(
            "{count} documents in one batch; at most {DOCUMENT_BATCH_MAX}"
        )));
    }
    Ok(())
}

/// What the idempotency table holds for one key.
struct IdempotencyRecord {
    fingerprint: Vec<u8>,
    outcome: BatchOutcome,
}

impl IdempotencyRecord {
    /// Reads a stored record: the `outcome` column holds the whole batch's outcome.
    fn from_stored(fingerprint: Vec<u8>, outcome: &str) -> Result<IdempotencyRecord, StoreError> {
        let outcome = serde_json::from_str(outcome)
            .map_err(|e| StoreError::Invariant(format!("unreadable idempotency outcome: {e}")))?;
        Ok(IdempotencyRecord {
            fingerprint,
            outcome,
        })
    }

    /// Answers a repeated key: the first outcome for the same request, a refusal for another.
    fn replay(self, idempotency: &Idempotency) -> Result<BatchOutcome, StoreError> {
        if self.fingerprint != idempotency.fingerprint {
            return Err(StoreError::IdempotencyKeyReused {
                key: idempotency.key.clone(),
            });
        }
        Ok(self.outcome.marked_replayed())
    }
}

/// Checks what a batch wrote — positions contiguous across the whole batch, each stream's versions
/// rising by one from its expected version — and returns the outcome. `written` holds
/// `(position, stream, version)` triples.
fn checked_outcome(
    batch: &AppendBatch,
    mut written: Vec<(i64, StreamName, i64)>,
) -> Result<BatchOutcome, StoreError> {
    written.sort_unstable_by_key(|(position, _, _)| *position);
    let total: usize = batch.appends.iter().map(|a| a.events.len()).sum();
    let contiguous =
        written.len() == total && written.windows(2).all(|pair| pair[1].0 == pair[0].0 + 1);
    let mut outcomes = Vec::with_capacity(batch.appends.len());
    for append in &batch.appends {
        let mine: Vec<_> = written
            .iter()
            .filter(|(_, stream, _)| stream == &append.stream)
            .collect();
        let expected_versions =
            (1..=append.events.len() as i64).map(|offset| append.expected_version.0 + offset);
        let versions_ok = mine.len() == append.events.len()
            && mine.iter().map(|(_, _, v)| *v).eq(expected_versions);
        if !contiguous || !versions_ok {
            return Err(StoreError::Invariant(format!(
                "append to {} wrote (position, stream, version) triples {written:?}",
                append.stream
            )));
        }
        outcomes.push(AppendOutcome {
            stream: append.stream.clone(),
            positions: mine
                .iter()
                .map(|(position, _, _)| Position(*position))
                .collect(),
            stream_version: StreamVersion(append.expected_version.0 + append.events.len() as i64),
            replayed: false,
        });
    }
    Ok(BatchOutcome { outcomes })
}

/// The serialised outcome stored with an idempotency key.
fn stored_outcome(outcome: &BatchOutcome) -> String {
    serde_json::to_string(outcome).expect("an outcome serialises to JSON")
}

/// Asserts a stream read came back in version order without gaps, starting where asked.
fn check_stream_page(events: &[RecordedEvent], from: StreamVersion) -> Result<(), StoreError> {
    for (expected, event) in (from.0.max(1)..).zip(events) {
        if event.stream_version.0 != expected {
            return Err(StoreError::Invariant(format!(
                "stream {} has version {} where {expected} was expected",
                event.stream, event.stream_version
            )));
        }
    }
    Ok(())
}

/// Asserts a global read came back in strictly rising position order after `after`.
fn check_global_page(events: &[RecordedEvent], after: Position) -> Result<(), StoreError> {
    let mut previous = after;
    for event in events {
        if event.global_position <= previous {
            return Err(StoreError::Invariant(format!(
                "position {} follows {previous} in a global read",
                event.global_position
            )));
        }
        previous = event.global_position;
    }
    Ok(())
}

/// A seal from its stored columns.
fn person_key_from_row(row: (String, String, Option<Vec<u8>>)) -> PersonKey {
    let (key_id, person_id, wrapped_key) = row;
    PersonKey {
        key_id,
        person_id,
        wrapped_key,
    }
}

fn seal_from_row(
    row: (
        i64,
        String,
        i64,
        String,
        String,
        chrono::DateTime<chrono::Utc>,
    ),
) -> Seal {
    let (position, chain_hash, count, key_id, signature, sealed_at) = row;
    Seal {
        position: Position(position),
        chain_hash,
        count,
        key_id,
        signature,
        sealed_at,
    }
}
