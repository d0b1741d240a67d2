//! The decision runner: every use case that changes the log goes through [`run`].
//!
//! A use case supplies one [`Attempt`]: it loads the streams it reads through [`Reads`] (which
//! remembers the version each was at), decides with a pure function over what it loaded, and
//! returns a [`Decision`] — the events for each stream it changes, and what to answer. The runner
//! owns everything around that:
//!
//! - the idempotency pre-check: a key seen before answers [`Decided::Replayed`] with the
//!   recorded outcome, before the attempt runs (so nothing random is drawn for a retry);
//! - the atomic append of every stream the decision changes, each at the version it was loaded at
//!   (a stream created by the decision must be empty), with the idempotency record;
//! - the bounded retry: a lost race (another writer appended to a stream the decision changes)
//!   pauses a random moment and runs the attempt again on fresh state, at most
//!   [`COMMAND_ATTEMPTS_MAX`] times, so each of many concurrent writers gets the domain's answer;
//! - a replay discovered at the append (a concurrent duplicate under the same key won);
//! - the newest position written, for a caller inside [`tracking_writes`] (read-your-writes).
//!
//! Concurrency: streams the attempt only read are not checked at the append; a decision that
//! depends on a stream must change it, or read it from an index that never changes once written.

use super::command::{pause_before_retry, CommandError, COMMAND_ATTEMPTS_MAX};
use super::store::{AppendBatch, BatchOutcome, EventStore, Idempotency, StoreError, StreamAppend};
use aggregates::decider::{encode, CodecError, Decider, EncodedEvent};
use aggregates::log::{EventMetadata, Position, StreamName, StreamVersion};
use async_trait::async_trait;
use std::collections::BTreeMap;

/// The streams an attempt loaded, and the version each was at.
pub struct Reads<'s> {
    store: &'s dyn EventStore,
    versions: BTreeMap<StreamName, StreamVersion>,
}

impl<'s> Reads<'s> {
    fn new(store: &'s dyn EventStore) -> Reads<'s> {
        Reads {
            store,
            versions: BTreeMap::new(),
        }
    }

    /// Loads and folds a stream of decider `D`, remembering its version for the append.
    pub async fn load<D: Decider>(
        &mut self,
        stream: &StreamName,
    ) -> Result<D::State, CommandError<D::Error>> {
        Ok(self.load_versioned::<D>(stream).await?.0)
    }

    /// Like [`Reads::load`], also answering the version the stream is at.
    pub async fn load_versioned<D: Decider>(
        &mut self,
        stream: &StreamName,
    ) -> Result<(D::State, StreamVersion), CommandError<D::Error>> {
        let (state, version) = super::command::load::<D>(self.store, stream).await?;
        self.versions.insert(stream.clone(), version);
        Ok((state, version))
    }
}

/// What one attempt decided: the events for each stream it changes, and its answer.
#[derive(Debug)]
pub struct Decision<T> {
    changes: Vec<Change>,
    answer: T,
}

#[derive(Debug)]
struct Change {
    stream: StreamName,
    created: bool,
    events: Vec<EncodedEvent>,
}

impl<T> Decision<T> {
    /// A decision that answers `answer`; add the streams it changes with [`Decision::append`] and
    /// [`Decision::create`].
    pub fn answer(answer: T) -> Decision<T> {
        Decision {
            changes: Vec::new(),
            answer,
        }
    }

    /// Appends `events` to a stream the attempt loaded, at the version it was loaded at. No
    /// events, no change.
    pub fn append<D: Decider>(
        mut self,
        stream: StreamName,
        events: &[D::Event],
    ) -> Result<Decision<T>, CodecError> {
        self.push::<D>(stream, false, events)?;
        Ok(self)
    }

    /// Starts a stream that must not exist yet with `events` (a new license, a new index entry).
    pub fn create<D: Decider>(
        mut self,
        stream: StreamName,
        events: &[D::Event],
    ) -> Result<Decision<T>, CodecError> {
        self.push::<D>(stream, true, events)?;
        Ok(self)
    }

    fn push<D: Decider>(
        &mut self,
        stream: StreamName,
        created: bool,
        events: &[D::Event],
    ) -> Result<(), CodecError> {
        if events.is_empty() {
            return Ok(());
        }
        self.changes.push(Change {
            stream,
            created,
            events: events.iter().map(encode).collect::<Result<_, _>>()?,
        });
        Ok(())
    }

    /// The same decision with its answer mapped.
    pub fn map_answer<U>(self, f: impl FnOnce(T) -> U) -> Decision<U> {
        Decision {
            changes: self.changes,
            answer: f(self.answer),
        }
    }

    /// Whether the decision changes nothing.
    pub fn is_unchanged(&self) -> bool {
        self.changes.is_empty()
    }
}

/// What the runner did with a decision.
#[derive(Debug)]
pub enum Decided<T> {
    /// The decision's events were appended, atomically.
    Appended {
        /// The attempt's answer.
        answer: T,
        /// Where each stream's events landed.
        outcome: BatchOutcome,
    },
    /// The decision changed nothing; nothing was written.
    Unchanged(T),
    /// The idempotency key was seen with this request before: what that request wrote.
    Replayed(BatchOutcome),
}

/// Why the runner gave up.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store failed or refused (an idempotency key reused with another request included).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every attempt lost a race to a concurrent writer.
    #[error("{stream} kept changing; gave up after {COMMAND_ATTEMPTS_MAX} attempts")]
    Contended {
        /// The stream the last attempt lost on.
        stream: StreamName,
    },
    /// The attempt changed a stream it never loaded: a bug in the use case.
    #[error("the decision changes {0}, which it never loaded")]
    NotLoaded(StreamName),
}

/// One attempt of a use case: the loads it needs and its decision over them. It may run several
/// times (after a lost race), each time on fresh state; it must not write.
#[async_trait]
pub trait Attempt: Sync {
    /// What the use case answers.
    type Answer: Send;
    /// How it fails (the runner's own failures included).
    type Error: From<RunError> + Send;

    /// Loads through `reads`, decides, and returns the decision.
    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<Self::Answer>, Self::Error>;
}

tokio::task_local! {
    /// The newest position the decisions of one task (a request) wrote or replayed.
    static WRITTEN: std::cell::Cell<Position>;
}

/// Runs `task`, answering with the newest log position its decisions wrote (or, for a replayed
/// idempotency key, had written): what a client passes back to read its own writes.
pub async fn tracking_writes<F: std::future::Future>(task: F) -> (F::Output, Option<Position>) {
    let (output, written) = WRITTEN
        .scope(std::cell::Cell::new(Position::START), async {
            let output = task.await;
            (output, WRITTEN.with(std::cell::Cell::get))
        })
        .await;
    (output, (written > Position::START).then_some(written))
}

fn note_written(outcome: &BatchOutcome) {
    let position = outcome.last_position();
    let _ = WRITTEN.try_with(|written| written.set(written.get().max(position)));
}

/// Runs `attempt` until its decision is appended, changes nothing, or is refused; see the module
/// documentation for what the runner owns.
pub async fn run<A: Attempt>(
    store: &dyn EventStore,
    metadata: &EventMetadata,
    idempotency: Option<&Idempotency>,
    attempt: &A,
) -> Result<Decided<A::Answer>, A::Error> {
    if let Some(idempotency) = idempotency {
        if let Some(previous) = store
            .idempotent_outcome(idempotency)
            .await
            .map_err(RunError::from)?
        {
            note_written(&previous);
            return Ok(Decided::Replayed(previous));
        }
    }
    let mut contended = None;
    for round in 1..=COMMAND_ATTEMPTS_MAX {
        pause_before_retry(round).await;
        let mut reads = Reads::new(store);
        let decision = attempt.attempt(&mut reads).await?;
        if decision.is_unchanged() {
            return Ok(Decided::Unchanged(decision.answer));
        }
        let batch = batch_of(&reads, decision.changes, metadata, idempotency)?;
        match store.append_batch(batch).await {
            Ok(outcome) if outcome.replayed() => {
                note_written(&outcome);
                return Ok(Decided::Replayed(outcome));
            }
            Ok(outcome) => {
                note_written(&outcome);
                return Ok(Decided::Appended {
                    answer: decision.answer,
                    outcome,
                });
            }
            Err(StoreError::WrongExpectedVersion { stream, .. }) => {
                tracing::debug!(round, %stream, "lost a race; deciding again");
                contended = Some(stream);
            }
            Err(error) => return Err(RunError::Store(error).into()),
        }
    }
    Err(RunError::Contended {
        stream: contended.expect("every round that did not return lost a race"),
    }
    .into())
}

fn batch_of(
    reads: &Reads<'_>,
    changes: Vec<Change>,
    metadata: &EventMetadata,
    idempotency: Option<&Idempotency>,
) -> Result<AppendBatch, RunError> {
    let appends = changes
        .into_iter()
        .map(|change| {
            let expected_version = match reads.versions.get(&change.stream) {
                Some(version) => *version,
                None if change.created => StreamVersion::EMPTY,
                None => return Err(RunError::NotLoaded(change.stream)),
            };
            Ok(StreamAppend {
                stream: change.stream,
                expected_version,
                events: change.events,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(AppendBatch {
        appends,
        metadata: metadata.clone(),
        idempotency: idempotency.cloned(),
    })
}
