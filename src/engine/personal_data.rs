//! Personal data at rest. [`PERSONAL_FIELDS`] names every event field that holds personal data
//! (emails and instance names); [`PersonalDataStore`] wraps a [`Store`] so that those fields are
//! sealed under their person's data key as events are appended and opened as they are read.
//! Everything above it — deciders, projections, support replay — sees plaintext; the log holds
//! only sealed values, and once a person's keys are erased their values read as erased
//! placeholders ([`PersonalKind::erased`]). What is derived from the log (read models, stream
//! snapshots) holds plaintext and is rebuilt or deleted by the erasure job (`crate::flows::erasure`).
//!
//! The audit chain reads the log as stored ([`EventStore::read_all_stored`] passes through
//! untouched), so neither sealing nor erasure changes a sealed or exported record.
//!
//! Keys are cached. An erasure made by this process takes effect at once; one made by another
//! process sharing the database (the `erase` command) within [`ERASURE_CHECK_INTERVAL`]: that often,
//! at most, a process counts the erased keys and forgets every cached key when the count moved.

use crate::crypto::personal::{self, DataKey, PersonalKind, Sealed};
use crate::crypto::KeyMaterial;
use crate::engine::store::{
    AppendBatch, AppendGroups, BatchOutcome, DocumentWrite, EventStore, GenerationState,
    Idempotency, Leadership, PersonKey, PersonKeyStore, ProjectionStore, Seal, SealStore, Snapshot,
    Store, StoreError, StoredRecord, StreamAppend,
};
use aggregates::log::{Position, RecordedEvent, StreamName, StreamVersion};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Whose personal data a field holds.
#[derive(Clone, Copy, Debug)]
pub enum Owner {
    /// The field is the person's email.
    Itself,
    /// The person whose email is the field `field` of the stream's first event (an installation's
    /// name belongs to the license's owner).
    StreamOwner {
        /// The owner's email field of the stream's first event.
        field: &'static str,
    },
}

/// One event field holding personal data.
#[derive(Clone, Copy, Debug)]
pub struct PersonalField {
    /// The event type.
    pub event_type: &'static str,
    /// The path of the field inside the payload.
    pub path: &'static [&'static str],
    /// What it holds.
    pub kind: PersonalKind,
    /// Whose it is.
    pub owner: Owner,
}

const fn email(event_type: &'static str, path: &'static [&'static str]) -> PersonalField {
    PersonalField {
        event_type,
        path,
        kind: PersonalKind::Email,
        owner: Owner::Itself,
    }
}

/// Every event field that holds personal data. An event type not listed holds none.
pub const PERSONAL_FIELDS: &[PersonalField] = &[
    email("license_issued", &["owner_email"]),
    email("grant_issued", &["claims", "email"]),
    email("lease_issued", &["claims", "email"]),
    email("member_invited", &["email"]),
    email("member_joined", &["email"]),
    email("legacy_exchange_succeeded", &["email"]),
    email("magic_link_issued", &["email"]),
    email("email_code_issued", &["email"]),
    email("user_registered", &["email"]),
    email("signup_started", &["email"]),
    PersonalField {
        event_type: "installation_activated",
        path: &["instance_name"],
        kind: PersonalKind::Text,
        owner: Owner::StreamOwner {
            field: "owner_email",
        },
    },
];

fn fields_of(event_type: &str) -> impl Iterator<Item = &'static PersonalField> + '_ {
    PERSONAL_FIELDS
        .iter()
        .filter(move |field| field.event_type == event_type)
}

fn field_mut<'a>(payload: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter()
        .try_fold(payload, |value, name| value.get_mut(*name))
}

/// How often, at most, a process asks whether any key was erased since it last looked.
pub const ERASURE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Most keys cached; the cache starts over when full.
const KEY_CACHE_MAX: usize = 10_000;

/// Keys already fetched: by key id (`None` once erased) and each person's live key; and the count
/// of erased keys they were fetched under.
#[derive(Default)]
struct KeyCache {
    by_id: HashMap<String, Option<Arc<DataKey>>>,
    live: HashMap<String, (String, Arc<DataKey>)>,
    erased_seen: Option<i64>,
    checked_at: Option<Instant>,
}

impl KeyCache {
    fn key(&self, key_id: &str) -> Option<Option<Arc<DataKey>>> {
        self.by_id.get(key_id).cloned()
    }

    fn live(&self, person_id: &str) -> Option<(String, Arc<DataKey>)> {
        self.live.get(person_id).cloned()
    }

    fn remember(&mut self, key_id: &str, key: Option<Arc<DataKey>>) {
        if self.by_id.len() >= KEY_CACHE_MAX {
            self.by_id.clear();
        }
        self.by_id.insert(key_id.to_owned(), key);
    }

    fn remember_live(&mut self, person_id: &str, key_id: &str, key: Arc<DataKey>) {
        if self.live.len() >= KEY_CACHE_MAX {
            self.live.clear();
        }
        self.remember(key_id, Some(Arc::clone(&key)));
        self.live
            .insert(person_id.to_owned(), (key_id.to_owned(), key));
    }

    fn check_due(&self) -> bool {
        self.checked_at
            .is_none_or(|at| at.elapsed() >= ERASURE_CHECK_INTERVAL)
    }

    /// Takes the latest count of erased keys: forgets every key if it moved.
    fn checked(&mut self, erased: i64) {
        if self.erased_seen != Some(erased) {
            self.by_id.clear();
            self.live.clear();
            self.erased_seen = Some(erased);
        }
        self.checked_at = Some(Instant::now());
    }
}

/// A [`Store`] that seals personal data on the way in and opens it on the way out.
pub struct PersonalDataStore {
    inner: Arc<dyn Store>,
    keys: Arc<KeyMaterial>,
    cache: Mutex<KeyCache>,
}

impl PersonalDataStore {
    /// Wraps `inner`, sealing with keys wrapped by `keys.master`.
    pub fn new(inner: Arc<dyn Store>, keys: Arc<KeyMaterial>) -> PersonalDataStore {
        PersonalDataStore {
            inner,
            keys,
            cache: Mutex::default(),
        }
    }

    /// The person an email belongs to.
    pub fn person_id(&self, email: &str) -> String {
        personal::person_id(&self.keys.hasher, email)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets every cached key if another process erased one since the last check.
    async fn notice_erasures(&self) -> Result<(), StoreError> {
        if self.cache().check_due() {
            let erased = self.inner.erased_person_keys().await?;
            self.cache().checked(erased);
        }
        Ok(())
    }

    fn unwrap_key(&self, key_id: &str, wrapped: &[u8]) -> Result<Arc<DataKey>, StoreError> {
        self.keys
            .master
            .unwrap(key_id, wrapped)
            .map(Arc::new)
            .map_err(|_| {
                StoreError::Invariant(format!(
                    "person key {key_id} does not unwrap under the configured master key"
                ))
            })
    }

    /// The person's live key, made on first use.
    async fn live_key(&self, person_id: &str) -> Result<(String, Arc<DataKey>), StoreError> {
        if let Some(live) = self.cache().live(person_id) {
            return Ok(live);
        }
        let candidate_key = DataKey::generate();
        let candidate_id = personal::new_key_id();
        let stored = self
            .inner
            .live_person_key(&PersonKey {
                wrapped_key: Some(self.keys.master.wrap(&candidate_id, &candidate_key)),
                key_id: candidate_id,
                person_id: person_id.to_owned(),
            })
            .await?;
        let wrapped = stored.wrapped_key.as_deref().ok_or_else(|| {
            StoreError::Invariant(format!("live person key {} has no key", stored.key_id))
        })?;
        let key = self.unwrap_key(&stored.key_id, wrapped)?;
        self.cache()
            .remember_live(person_id, &stored.key_id, Arc::clone(&key));
        Ok((stored.key_id, key))
    }

    /// A key by id: `None` once erased.
    async fn key_by_id(&self, key_id: &str) -> Result<Option<Arc<DataKey>>, StoreError> {
        if let Some(key) = self.cache().key(key_id) {
            return Ok(key);
        }
        let stored = self
            .inner
            .person_key(key_id)
            .await?
            .ok_or_else(|| StoreError::Invariant(format!("no person key {key_id}")))?;
        let key = stored
            .wrapped_key
            .map(|wrapped| self.unwrap_key(key_id, &wrapped))
            .transpose()?;
        self.cache().remember(key_id, key.clone());
        Ok(key)
    }

    /// The person a stored or about-to-be-stored personal value belongs to.
    async fn person_of(&self, value: &str) -> Result<String, StoreError> {
        match Sealed::parse(value) {
            Some(sealed) => Ok(self
                .inner
                .person_key(sealed.key_id)
                .await?
                .ok_or_else(|| StoreError::Invariant(format!("no person key {}", sealed.key_id)))?
                .person_id),
            None => Ok(self.person_id(value)),
        }
    }

    /// The owner of a stream: the person of `field` in its first event, looked for among the
    /// events of this append first.
    async fn stream_owner(
        &self,
        append: &StreamAppend,
        index: usize,
        field: &str,
    ) -> Result<String, StoreError> {
        let in_batch = append.events[..index]
            .iter()
            .find_map(|event| event.payload.get(field)?.as_str().map(str::to_owned));
        let owner = match in_batch {
            Some(value) => Some(value),
            None => self
                .inner
                .read_stream(&append.stream, StreamVersion(1), 1)
                .await?
                .into_iter()
                .next()
                .and_then(|first| first.payload.get(field)?.as_str().map(str::to_owned)),
        };
        let owner = owner.ok_or_else(|| {
            StoreError::InvalidRequest(format!(
                "stream {} has no owner ({field}) for its personal data",
                append.stream
            ))
        })?;
        self.person_of(&owner).await
    }

    /// Seals every personal field of the batch's events in place.
    async fn seal(&self, batch: &mut AppendBatch) -> Result<(), StoreError> {
        self.notice_erasures().await?;
        for append in &mut batch.appends {
            for index in 0..append.events.len() {
                let fields: Vec<_> = fields_of(&append.events[index].event_type).collect();
                for field in fields {
                    let Some(plaintext) = field_mut(&mut append.events[index].payload, field.path)
                        .and_then(|value| value.as_str())
                        .filter(|value| Sealed::parse(value).is_none())
                        .map(str::to_owned)
                    else {
                        continue;
                    };
                    let person_id = match field.owner {
                        Owner::Itself => self.person_id(&plaintext),
                        Owner::StreamOwner { field } => {
                            self.stream_owner(append, index, field).await?
                        }
                    };
                    let (key_id, key) = self.live_key(&person_id).await?;
                    let sealed = key.seal(field.kind, &key_id, &plaintext);
                    if let Some(value) = field_mut(&mut append.events[index].payload, field.path) {
                        *value = Value::String(sealed);
                    }
                }
            }
        }
        Ok(())
    }

    /// Opens every personal field of `events` in place; erased ones read as placeholders.
    async fn open(&self, mut events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>, StoreError> {
        self.notice_erasures().await?;
        for event in &mut events {
            for field in fields_of(&event.event_type) {
                let Some(value) = field_mut(&mut event.payload, field.path) else {
                    continue;
                };
                let Some(text) = value.as_str() else {
                    continue;
                };
                let Some(sealed) = Sealed::parse(text) else {
                    continue;
                };
                let opened = match self.key_by_id(sealed.key_id).await? {
                    Some(key) => key.open(&sealed).map_err(|error| {
                        StoreError::Invariant(format!(
                            "{} of event {} does not open: {error}",
                            field.path.join("."),
                            event.event_id
                        ))
                    })?,
                    None => sealed.kind.erased(sealed.key_id),
                };
                *value = Value::String(opened);
            }
        }
        Ok(events)
    }
}

#[async_trait]
impl EventStore for PersonalDataStore {
    async fn append_batch(&self, mut batch: AppendBatch) -> Result<BatchOutcome, StoreError> {
        self.seal(&mut batch).await?;
        self.inner.append_batch(batch).await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from_version: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_stream(stream, from_version, limit).await?;
        self.open(events).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_all(after, limit).await?;
        self.open(events).await
    }

    async fn read_settled(
        &self,
        after: Position,
        through: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_settled(after, through, limit).await?;
        self.open(events).await
    }

    async fn read_all_stored(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all_stored(after, limit).await
    }

    async fn read_all_records(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        self.inner.read_all_records(after, limit).await
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        self.inner.head_position().await
    }

    async fn read_snapshot(
        &self,
        stream: &StreamName,
        state_version: i32,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.inner.read_snapshot(stream, state_version).await
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn delete_snapshots(&self) -> Result<u64, StoreError> {
        self.inner.delete_snapshots().await
    }

    fn subscribe_appends(&self) -> watch::Receiver<Position> {
        self.inner.subscribe_appends()
    }

    async fn idempotent_outcome(
        &self,
        idempotency: &Idempotency,
    ) -> Result<Option<BatchOutcome>, StoreError> {
        self.inner.idempotent_outcome(idempotency).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
}

#[async_trait]
impl ProjectionStore for PersonalDataStore {
    async fn ensure_projection(&self, projection: &str) -> Result<(), StoreError> {
        self.inner.ensure_projection(projection).await
    }

    async fn projection_generations(
        &self,
        projection: &str,
    ) -> Result<Vec<GenerationState>, StoreError> {
        self.inner.projection_generations(projection).await
    }

    async fn begin_generation(&self, projection: &str) -> Result<i64, StoreError> {
        self.inner.begin_generation(projection).await
    }

    async fn activate_generation(
        &self,
        projection: &str,
        generation: i64,
    ) -> Result<(), StoreError> {
        self.inner.activate_generation(projection, generation).await
    }

    async fn load_documents(
        &self,
        projection: &str,
        generation: i64,
        keys: &[String],
    ) -> Result<HashMap<String, Value>, StoreError> {
        self.inner
            .load_documents(projection, generation, keys)
            .await
    }

    async fn commit_batch(
        &self,
        projection: &str,
        generation: i64,
        from: Position,
        to: Position,
        writes: &[DocumentWrite],
    ) -> Result<(), StoreError> {
        self.inner
            .commit_batch(projection, generation, from, to, writes)
            .await
    }

    async fn read_document_at(
        &self,
        projection: &str,
        key: &str,
    ) -> Result<Option<(Value, Position)>, StoreError> {
        self.inner.read_document_at(projection, key).await
    }

    async fn read_current_document(
        &self,
        projection: &str,
        key: &str,
        stream: &StreamName,
    ) -> Result<Option<Value>, StoreError> {
        self.inner
            .read_current_document(projection, key, stream)
            .await
    }

    async fn list_documents(
        &self,
        projection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        self.inner.list_documents(projection, after, limit).await
    }

    async fn try_lead(
        &self,
        projection: &str,
        generation: i64,
    ) -> Result<Option<Box<dyn Leadership>>, StoreError> {
        self.inner.try_lead(projection, generation).await
    }
}

#[async_trait]
impl SealStore for PersonalDataStore {
    async fn save_seal(&self, seal: &Seal) -> Result<(), StoreError> {
        self.inner.save_seal(seal).await
    }

    async fn seals_after(&self, after: Position, limit: usize) -> Result<Vec<Seal>, StoreError> {
        self.inner.seals_after(after, limit).await
    }

    async fn latest_seal(&self) -> Result<Option<Seal>, StoreError> {
        self.inner.latest_seal().await
    }
}

#[async_trait]
impl PersonKeyStore for PersonalDataStore {
    async fn live_person_key(&self, candidate: &PersonKey) -> Result<PersonKey, StoreError> {
        self.inner.live_person_key(candidate).await
    }

    async fn person_key(&self, key_id: &str) -> Result<Option<PersonKey>, StoreError> {
        self.inner.person_key(key_id).await
    }

    async fn erased_person_keys(&self) -> Result<i64, StoreError> {
        self.inner.erased_person_keys().await
    }

    async fn scrub_deleted_rows(&self) -> Result<(), StoreError> {
        self.inner.scrub_deleted_rows().await
    }

    /// Destroys the keys and forgets them here at once.
    async fn erase_person_keys(&self, person_id: &str) -> Result<Vec<String>, StoreError> {
        let erased = self.inner.erase_person_keys(person_id).await?;
        let mut cache = self.cache();
        cache.live.remove(person_id);
        for key_id in &erased {
            cache.remember(key_id, None);
        }
        Ok(erased)
    }
}

impl Store for PersonalDataStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn append_groups(&self) -> AppendGroups {
        self.inner.append_groups()
    }
}
