//! Projections in the service: the registry of read models, the adapter from a pure
//! [`DocumentProjection`] to the runner, and read-your-writes waiting.
//!
//! The folds themselves live in the `projections` crate; the runner that feeds them lives in
//! [`runner`]. This module is the seam between the two: typed documents in, JSON documents out.

pub mod runner;

use crate::engine::store::{DocumentWrite, ProjectionStore, StoreError, DOCUMENT_BATCH_MAX};
use aggregates::log::{Position, RecordedEvent};
use projections::accounts::{Accounts, AccountsByMemberEmail};
use projections::licenses::{Licenses, LicensesByEmail};
use projections::mail_outbox::MailOutbox;
use projections::stream_index::StreamIndex;
use projections::subject_streams::SubjectStreams;
use projections::tenant_work::TenantWork;
use projections::{DocumentProjection, FoldError};
use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Longest a read may wait for projections to reach its position: past this the caller gets the
/// state as it is (and learns it is behind) rather than holding a connection open.
pub const READ_YOUR_WRITES_WAIT_MAX: Duration = Duration::from_secs(5);
/// How often a waiting read checks the checkpoint.
const READ_YOUR_WRITES_POLL: Duration = Duration::from_millis(10);

/// A projection as the runner sees it: names its documents and folds a batch into them.
pub trait ProjectionFold: Send + Sync {
    /// The projection's stable name.
    fn name(&self) -> &'static str;

    /// The keys of the documents `event` changes.
    fn document_keys(&self, event: &RecordedEvent) -> Vec<String>;

    /// Folds `events` into the `loaded` documents and returns the writes to store, one per
    /// changed document.
    fn fold_batch(
        &self,
        events: &[RecordedEvent],
        loaded: HashMap<String, serde_json::Value>,
    ) -> Result<Vec<DocumentWrite>, FoldError>;
}

/// Runs a typed [`DocumentProjection`] on JSON documents, decoding each loaded document once and
/// encoding each changed one once per batch.
pub struct Typed<P>(PhantomData<fn() -> P>);

impl<P> Typed<P> {
    /// The adapter for `P`.
    pub fn new() -> Typed<P> {
        Typed(PhantomData)
    }
}

impl<P> Default for Typed<P> {
    fn default() -> Self {
        Typed::new()
    }
}

impl<P: DocumentProjection> ProjectionFold for Typed<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn document_keys(&self, event: &RecordedEvent) -> Vec<String> {
        P::document_keys(event)
    }

    fn fold_batch(
        &self,
        events: &[RecordedEvent],
        loaded: HashMap<String, serde_json::Value>,
    ) -> Result<Vec<DocumentWrite>, FoldError> {
        let mut documents: HashMap<String, Option<P::Document>> =
            HashMap::with_capacity(loaded.len());
        for (key, body) in loaded {
            let document = serde_json::from_value(body).map_err(|e| {
                FoldError::new(format!("stored document {key:?} is unreadable: {e}"))
            })?;
            documents.insert(key, Some(document));
        }
        let mut changed: HashMap<String, Position> = HashMap::new();
        for event in events {
            for key in P::document_keys(event) {
                let slot = documents.entry(key.clone()).or_insert(None);
                *slot = P::apply(&key, slot.take(), event)?;
                changed.insert(key, event.global_position);
            }
        }
        changed
            .into_iter()
            .map(|(key, position)| {
                let body = match documents.remove(&key).flatten() {
                    Some(document) => Some(serde_json::to_value(document).map_err(|e| {
                        FoldError::new(format!("document {key:?} does not serialise: {e}"))
                    })?),
                    None => None,
                };
                Ok(DocumentWrite {
                    key,
                    body,
                    position,
                })
            })
            .collect()
    }
}

/// Every projection the service runs.
pub fn registry() -> Vec<Arc<dyn ProjectionFold>> {
    vec![
        Arc::new(Typed::<StreamIndex>::new()),
        Arc::new(Typed::<Licenses>::new()),
        Arc::new(Typed::<LicensesByEmail>::new()),
        Arc::new(Typed::<Accounts>::new()),
        Arc::new(Typed::<AccountsByMemberEmail>::new()),
        Arc::new(Typed::<TenantWork>::new()),
        Arc::new(Typed::<SubjectStreams>::new()),
        Arc::new(Typed::<MailOutbox>::new()),
    ]
}

/// The keys a run of events touches, in order, stopping before the event that would take the
/// batch past [`DOCUMENT_BATCH_MAX`] documents. Returns how many events fit and their keys.
pub fn keys_that_fit(
    fold: &dyn ProjectionFold,
    events: &[RecordedEvent],
) -> Result<(usize, Vec<String>), FoldError> {
    let mut keys = BTreeSet::new();
    for (index, event) in events.iter().enumerate() {
        let event_keys = fold.document_keys(event);
        let added = event_keys.iter().filter(|key| !keys.contains(*key)).count();
        if keys.len() + added > DOCUMENT_BATCH_MAX {
            if index == 0 {
                return Err(FoldError::new(format!(
                    "event at position {} touches {} documents; at most {DOCUMENT_BATCH_MAX}",
                    event.global_position, added
                )));
            }
            return Ok((index, keys.into_iter().collect()));
        }
        keys.extend(event_keys);
    }
    Ok((events.len(), keys.into_iter().collect()))
}

/// The active generation's checkpoint of a projection (0 before its first batch).
pub async fn active_checkpoint(
    store: &dyn ProjectionStore,
    projection: &str,
) -> Result<Position, StoreError> {
    let generations = store.projection_generations(projection).await?;
    Ok(generations
        .iter()
        .find(|generation| generation.status == crate::engine::store::GenerationStatus::Active)
        .map_or(Position::START, |generation| generation.checkpoint))
}

/// Waits until the projection's active generation has folded `position`, for at most `timeout`
/// (capped at [`READ_YOUR_WRITES_WAIT_MAX`]). Returns whether it got there.
pub async fn wait_for_position(
    store: &dyn ProjectionStore,
    projection: &str,
    position: Position,
    timeout: Duration,
) -> Result<bool, StoreError> {
    let deadline = Instant::now() + timeout.min(READ_YOUR_WRITES_WAIT_MAX);
    loop {
        if active_checkpoint(store, projection).await? >= position {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(READ_YOUR_WRITES_POLL.min(deadline - now)).await;
    }
}
