//! The projection runner: feeds the log to one projection, batch by batch, exactly once.
//!
//! Each batch reads `read_all` after the checkpoint, folds the events into the documents they touch,
//! and writes those documents and the new checkpoint in one transaction, so a crash leaves the read
//! model exactly at its checkpoint. Only the process holding the projection's lock runs it (an
//! advisory lock on PostgreSQL); the others retry and take over when the holder dies, and the
//! checkpoint compare-and-set makes a stale holder's batch fail rather than write twice.
//! A rebuild folds the whole log into a fresh generation and switches readers to it, reading,
//! folding and writing in three tasks at once.

use super::{keys_that_fit, ProjectionFold};
use crate::engine::store::{
    DocumentWrite, GenerationStatus, Leadership, Store, StoreError, READ_PAGE_MAX,
};
use crate::metrics::Metrics;
use aggregates::log::{Position, RecordedEvent};
use projections::FoldError;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Why a batch failed. Nothing of a failed batch is written.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The store failed (or the checkpoint moved under us).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The fold refused an event; the runner stops at it rather than skip it.
    #[error("projection fold failed: {0}")]
    Fold(#[from] FoldError),
    /// Another process is rebuilding this projection.
    #[error("projection {0} is already being rebuilt by another process")]
    RebuildInProgress(String),
}

/// How a runner paces itself.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Events per batch, at most [`READ_PAGE_MAX`].
    pub batch_len: usize,
    /// How often an idle runner polls when no append wake-up arrives.
    pub poll_interval: Duration,
    /// How often a process that is not the runner tries to become it.
    pub leader_retry: Duration,
    /// How long the runner waits after a failed batch before retrying it.
    pub error_backoff: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            batch_len: 500,
            poll_interval: Duration::from_secs(1),
            leader_retry: Duration::from_secs(2),
            error_backoff: Duration::from_secs(1),
        }
    }
}

impl RunnerConfig {
    /// For a rebuild: the largest batches the store allows.
    pub fn rebuild() -> RunnerConfig {
        RunnerConfig {
            batch_len: READ_PAGE_MAX,
            ..RunnerConfig::default()
        }
    }
}

/// What one batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Folded `events` events, up to position `to`.
    Advanced {
        /// The new checkpoint.
        to: Position,
        /// How many events the batch folded.
        events: usize,
    },
    /// Nothing new to fold.
    Idle,
}

/// What a rebuild produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildReport {
    /// The generation now active.
    pub generation: i64,
    /// The position it was built up to.
    pub checkpoint: Position,
    /// How many events were folded.
    pub events: u64,
    /// Where the time went, summed over the batches (each phase runs beside the others).
    pub phases: BatchPhases,
}

/// The time batches spent in each phase. A rebuild reads ahead, loads and folds, and writes in
/// three tasks at once, so the phases overlap: their sum exceeds the time the rebuild took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchPhases {
    /// Reading the log: the query, decoding rows, upcasting, opening personal data. In a rebuild,
    /// whose reader has pages on their way at once, the time it waited for the next one.
    pub read: Duration,
    /// Loading the documents the batch touches.
    pub load: Duration,
    /// Folding: decoding the loaded documents, applying the events, encoding the documents.
    pub fold: Duration,
    /// Writing the documents and the checkpoint in one transaction.
    pub write: Duration,
}

/// Runs one projection against one store.
pub struct Runner {
    store: Arc<dyn Store>,
    fold: Arc<dyn ProjectionFold>,
    config: RunnerConfig,
    metrics: Arc<Metrics>,
}

impl Runner {
    /// A runner for `fold`. Refuses a batch length outside `1..=READ_PAGE_MAX`.
    pub fn new(
        store: Arc<dyn Store>,
        fold: Arc<dyn ProjectionFold>,
        config: RunnerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Runner, StoreError> {
        if config.batch_len == 0 || config.batch_len > READ_PAGE_MAX {
            return Err(StoreError::InvalidRequest(format!(
                "batch length {} is outside 1..={READ_PAGE_MAX}",
                config.batch_len
            )));
        }
        Ok(Runner {
            store,
            fold,
            config,
            metrics,
        })
    }

    /// The projection's name.
    pub fn name(&self) -> &'static str {
        self.fold.name()
    }

    /// Folds one batch after `checkpoint` into `generation` and commits it with the new checkpoint.
    #[tracing::instrument(skip(self), fields(projection = self.fold.name()))]
    pub async fn step(&self, generation: i64, checkpoint: Position) -> Result<Step, RunnerError> {
        let events = self
            .store
            .read_all(checkpoint, self.config.batch_len)
            .await?;
        if events.is_empty() {
            return Ok(Step::Idle);
        }
        let (to, folded, _) = self.apply(generation, checkpoint, &events).await?;
        Ok(Step::Advanced { to, events: folded })
    }

    /// Folds as many of `events` (read after `checkpoint`) as one batch holds, and commits them with
    /// the new checkpoint; returns that checkpoint and how many events it folded.
    async fn apply(
        &self,
        generation: i64,
        checkpoint: Position,
        events: &[RecordedEvent],
    ) -> Result<(Position, usize, BatchPhases), RunnerError> {
        let mut phases = BatchPhases::default();
        let started = Instant::now();
        let (fitting, keys) = keys_that_fit(self.fold.as_ref(), events)?;
        let events = &events[..fitting];
        let loaded = self
            .store
            .load_documents(self.name(), generation, &keys)
            .await?;
        phases.load = started.elapsed();
        let started = Instant::now();
        let writes = self.fold.fold_batch(events, loaded)?;
        phases.fold = started.elapsed();
        let started = Instant::now();
        let to = events[events.len() - 1].global_position;
        self.store
            .commit_batch(self.name(), generation, checkpoint, to, &writes)
            .await?;
        phases.write = started.elapsed();
        self.metrics.record_batch(self.name(), events.len());
        Ok((to, events.len(), phases))
    }

    /// Keeps the active generation up to date until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut appended = self.store.subscribe_appends();
        while !*shutdown.borrow() {
            let pause = match self.lead_active().await {
                Ok(Some((leadership, generation, checkpoint))) => {
                    self.metrics.set_leading(self.name(), true);
                    let pause = self
                        .follow(
                            leadership,
                            generation,
                            checkpoint,
                            &mut appended,
                            &mut shutdown,
                        )
                        .await;
                    self.metrics.set_leading(self.name(), false);
                    pause
                }
                Ok(None) => self.config.leader_retry,
                Err(error) => {
                    self.metrics.record_error(self.name());
                    tracing::error!(projection = self.name(), error = %error, "cannot start the projection runner");
                    self.config.error_backoff
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Becomes the runner of the active generation, if no other process is.
    async fn lead_active(
        &self,
    ) -> Result<Option<(Box<dyn Leadership>, i64, Position)>, StoreError> {
        self.store.ensure_projection(self.name()).await?;
        let generations = self.store.projection_generations(self.name()).await?;
        let Some(active) = generations
            .iter()
            .find(|g| g.status == GenerationStatus::Active)
        else {
            return Ok(None);
        };
        let Some(leadership) = self.store.try_lead(self.name(), active.generation).await? else {
            return Ok(None);
        };
        // Read the checkpoint again now that we lead: the previous holder may have moved it.
        let generations = self.store.projection_generations(self.name()).await?;
        let current = generations
            .iter()
            .find(|g| g.generation == active.generation);
        Ok(current.map(|g| (leadership, g.generation, g.checkpoint)))
    }

    /// Runs batches while leading; returns how long to pause before trying to lead again.
    async fn follow(
        &self,
        mut leadership: Box<dyn Leadership>,
        generation: i64,
        mut checkpoint: Position,
        appended: &mut watch::Receiver<Position>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Duration {
        tracing::info!(projection = self.name(), generation, %checkpoint, "running projection");
        while !*shutdown.borrow() {
            if !leadership.still_leading().await {
                tracing::warn!(projection = self.name(), "lost the projection lock");
                return self.config.leader_retry;
            }
            match self.step(generation, checkpoint).await {
                Ok(Step::Advanced { to, .. }) => checkpoint = to,
                Ok(Step::Idle) => {
                    tokio::select! {
                        _ = appended.changed() => {}
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(RunnerError::Store(
                    StoreError::CheckpointMoved { .. } | StoreError::GenerationRetired { .. },
                )) => {
                    tracing::info!(
                        projection = self.name(),
                        generation,
                        "generation switched; following the new one"
                    );
                    return Duration::ZERO;
                }
                Err(error) => {
                    self.metrics.record_error(self.name());
                    tracing::error!(projection = self.name(), %checkpoint, error = %error, "projection batch failed; retrying");
                    return self.config.error_backoff;
                }
            }
        }
        Duration::ZERO
    }

    /// Folds the whole log into a fresh generation, then makes it the active one. `progress` is
    /// called after each batch commits, with the checkpoint reached and the head seen at the start.
    ///
    /// A rebuild is a pipeline of three tasks, so that each runs on its own core while the others
    /// work: a reader reads the log ahead of the fold (two pages at once up to the head), this
    /// task loads and folds each batch, and a writer commits the batches in order. A batch is
    /// folded while the previous ones may still be on their way to the store, so the documents
    /// they wrote are taken from them rather than from the store ([`RecentWrites`]), and only
    /// keys it wrote before are loaded from the store at all ([`WrittenKeys`]). The first failure
    /// of any of the three stops the rebuild; the generation it was building is never activated.
    pub async fn rebuild(
        &self,
        progress: &mut (dyn FnMut(Position, Position) + Send),
    ) -> Result<RebuildReport, RunnerError> {
        self.store.ensure_projection(self.name()).await?;
        let generation = self.store.begin_generation(self.name()).await?;
        let Some(_leadership) = self.store.try_lead(self.name(), generation).await? else {
            return Err(RunnerError::RebuildInProgress(self.name().to_owned()));
        };
        let head = self.store.head_position().await?;
        let (pages, reading) = read_ahead(Arc::clone(&self.store), self.config.batch_len, head);
        let (batches, queued) = mpsc::channel(1);
        // Unbounded, yet it holds at most the batches in flight: the folder drains it after each
        // batch it hands over.
        let (committed, mut commits) = mpsc::unbounded_channel();
        let writing = tokio::spawn(write_in_order(
            Arc::clone(&self.store),
            self.name(),
            generation,
            queued,
            committed,
        ));
        let mut report_commits = |commits: &mut mpsc::UnboundedReceiver<Position>| {
            while let Ok(checkpoint) = commits.try_recv() {
                progress(checkpoint, head);
            }
        };
        let folded = self
            .fold_pages(
                generation,
                pages,
                batches,
                &mut commits,
                &mut report_commits,
            )
            .await;
        let written = writing.await.expect("the rebuild's writer does not panic");
        let read = reading.await.expect("the rebuild's reader does not panic");
        report_commits(&mut commits);
        let (mut phases, checkpoint, events) = match (folded, written) {
            (_, Err(error)) | (Err(Some(error)), Ok(_)) => return Err(error),
            (Err(None), Ok(_)) => unreachable!("the writer stops early only by failing"),
            (Ok(folded), Ok(write)) => {
                let (mut phases, checkpoint, events) = folded;
                phases.write = write;
                (phases, checkpoint, events)
            }
        };
        phases.read = read;
        self.store
            .activate_generation(self.name(), generation)
            .await?;
        Ok(RebuildReport {
            generation,
            checkpoint,
            events,
            phases,
        })
    }

    /// The rebuild's middle task: loads and folds the pages as they arrive, in batches that fit,
    /// and hands each batch to the writer. Answers the phases it spent, the checkpoint and the
    /// events folded; `Err(None)` when the writer stopped taking batches (its own error says why).
    async fn fold_pages(
        &self,
        generation: i64,
        mut pages: mpsc::Receiver<Result<Vec<RecordedEvent>, StoreError>>,
        batches: mpsc::Sender<Batch>,
        commits: &mut mpsc::UnboundedReceiver<Position>,
        report_commits: &mut (dyn FnMut(&mut mpsc::UnboundedReceiver<Position>) + Send),
    ) -> Result<(BatchPhases, Position, u64), Option<RunnerError>> {
        let mut phases = BatchPhases::default();
        let mut checkpoint = Position::START;
        let mut events = 0_u64;
        let mut recent = RecentWrites::default();
        let mut written = WrittenKeys::default();
        while let Some(page) = pages.recv().await {
            let page = page.map_err(|error| Some(error.into()))?;
            let mut rest = &page[..];
            while !rest.is_empty() {
                let started = Instant::now();
                let (fitting, keys) =
                    keys_that_fit(self.fold.as_ref(), rest).map_err(|e| Some(e.into()))?;
                let batch = &rest[..fitting];
                let (pending, older): (Vec<String>, Vec<String>) =
                    keys.into_iter().partition(|key| recent.holds(key));
                let stored: Vec<String> = older
                    .into_iter()
                    .filter(|key| written.may_hold(key))
                    .collect();
                let mut loaded = if stored.is_empty() {
                    HashMap::new()
                } else {
                    self.store
                        .load_documents(self.name(), generation, &stored)
                        .await
                        .map_err(|error| Some(error.into()))?
                };
                loaded.extend(pending.iter().filter_map(|key| recent.body(key)));
                phases.load += started.elapsed();
                let started = Instant::now();
                let writes = Arc::new(
                    self.fold
                        .fold_batch(batch, loaded)
                        .map_err(|error| Some(error.into()))?,
                );
                phases.fold += started.elapsed();
                let to = batch[batch.len() - 1].global_position;
                written.note(&writes);
                recent.push(Arc::clone(&writes));
                let handed = Batch {
                    from: checkpoint,
                    to,
                    writes,
                };
                batches.send(handed).await.map_err(|_| None)?;
                self.metrics.record_batch(self.name(), fitting);
                events += fitting as u64;
                checkpoint = to;
                report_commits(commits);
                rest = &rest[fitting..];
            }
        }
        Ok((phases, checkpoint, events))
    }
}

/// One folded batch on its way to the rebuild's writer.
struct Batch {
    from: Position,
    to: Position,
    writes: Arc<Vec<DocumentWrite>>,
}

/// The batches a rebuild handed to its writer that may not be committed yet: the one being
/// written and the one waiting in the writer's one-slot channel. (The folder hands a third only
/// once the writer took the second, that is, committed the first.)
const BATCHES_UNCOMMITTED_MAX: usize = 2;

/// The documents of the batches that may not be committed yet, newest first: a batch that
/// touches one of them folds onto this copy, since the store may not hold it yet.
#[derive(Default)]
struct RecentWrites {
    batches: VecDeque<IndexedWrites>,
}

/// One batch's writes, and where each key's write is among them.
struct IndexedWrites {
    writes: Arc<Vec<DocumentWrite>>,
    at: HashMap<String, usize>,
}

impl RecentWrites {
    fn push(&mut self, writes: Arc<Vec<DocumentWrite>>) {
        let at = writes
            .iter()
            .enumerate()
            .map(|(at, write)| (write.key.clone(), at))
            .collect();
        self.batches.push_front(IndexedWrites { writes, at });
        self.batches.truncate(BATCHES_UNCOMMITTED_MAX);
    }

    fn latest(&self, key: &str) -> Option<&DocumentWrite> {
        self.batches
            .iter()
            .find_map(|batch| batch.at.get(key).map(|&at| &batch.writes[at]))
    }

    fn holds(&self, key: &str) -> bool {
        self.latest(key).is_some()
    }

    /// The document as the newest batch left it, or `None` if it deleted it.
    fn body(&self, key: &str) -> Option<(String, serde_json::Value)> {
        let write = self.latest(key)?;
        write.body.clone().map(|body| (write.key.clone(), body))
    }
}

/// Most document keys a rebuild remembers having written. Past it, the rebuild loads every key
/// its batches touch, as if it remembered none.
const WRITTEN_KEYS_MAX: usize = 200_000;

/// The keys a rebuild has written into its generation, which started empty: a key it never
/// wrote is in no stored document, so loading it would find nothing.
#[derive(Default)]
struct WrittenKeys {
    keys: std::collections::HashSet<String>,
    overflowed: bool,
}

impl WrittenKeys {
    fn note(&mut self, writes: &[DocumentWrite]) {
        if self.overflowed {
            return;
        }
        self.keys
            .extend(writes.iter().map(|write| write.key.clone()));
        if self.keys.len() > WRITTEN_KEYS_MAX {
            self.overflowed = true;
            self.keys = Default::default();
        }
    }

    /// Whether the store may hold a document under `key` in this generation.
    fn may_hold(&self, key: &str) -> bool {
        self.overflowed || self.keys.contains(key)
    }
}

/// How many pages below the head the rebuild's reader has on their way at once: while one is
/// decoded the next is already being read, so the store's work and the decoding overlap.
const READS_IN_FLIGHT: usize = 2;

/// The rebuild's reader: reads the log ahead of the fold until a page past the head comes back
/// empty or the fold stops taking them. Answers the time it waited for its pages.
///
/// Up to `head` it reads [`READS_IN_FLIGHT`] pages of `batch_len` positions at once, each with
/// [`EventStore::read_settled`]: every position at or below a head the store answered is
/// settled, so each page can be read on its own, whole, and they are handed on in order. Past
/// the head it reads one page after the other with `read_all`, as the log grows.
///
/// [`EventStore::read_settled`]: crate::engine::store::EventStore::read_settled
fn read_ahead(
    store: Arc<dyn Store>,
    batch_len: usize,
    head: Position,
) -> (
    mpsc::Receiver<Result<Vec<RecordedEvent>, StoreError>>,
    JoinHandle<Duration>,
) {
    let (pages, read) = mpsc::channel(1);
    let reading = tokio::spawn(async move {
        let mut settled = (0..head.0).step_by(batch_len).map(|from| {
            let to = from.saturating_add(batch_len as i64).min(head.0);
            (Position(from), Position(to))
        });
        let mut in_flight = VecDeque::with_capacity(READS_IN_FLIGHT);
        let mut after = Position::START;
        let mut spent = Duration::ZERO;
        loop {
            let room = READS_IN_FLIGHT - in_flight.len();
            in_flight.extend(settled.by_ref().take(room).map(|(from, to)| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.read_settled(from, to, batch_len).await })
            }));
            let started = Instant::now();
            let (page, past_head) = match in_flight.pop_front() {
                Some(read) => (read.await.expect("a page read does not panic"), false),
                None => (store.read_all(after, batch_len).await, true),
            };
            spent += started.elapsed();
            match page {
                Ok(page) if page.is_empty() => {
                    if past_head {
                        break;
                    }
                }
                Ok(page) => {
                    after = page[page.len() - 1].global_position;
                    if pages.send(Ok(page)).await.is_err() {
                        break;
                    }
                }
                Err(error) => {
                    let _ = pages.send(Err(error)).await;
                    break;
                }
            }
        }
        for read in in_flight {
            read.abort();
        }
        spent
    });
    (read, reading)
}

/// The rebuild's writer: commits each batch with its checkpoint, in the order handed, reporting
/// each checkpoint committed. Stops at the first failure (dropping the batches still queued) and
/// otherwise when the folder is done; answers the time it spent writing.
async fn write_in_order(
    store: Arc<dyn Store>,
    projection: &'static str,
    generation: i64,
    mut batches: mpsc::Receiver<Batch>,
    committed: mpsc::UnboundedSender<Position>,
) -> Result<Duration, RunnerError> {
    let mut spent = Duration::ZERO;
    while let Some(batch) = batches.recv().await {
        let started = Instant::now();
        store
            .commit_batch(projection, generation, batch.from, batch.to, &batch.writes)
            .await?;
        spent += started.elapsed();
        let _ = committed.send(batch.to);
    }
    Ok(spent)
}

#[cfg(test)]
mod tests {
    use super::{DocumentWrite, WrittenKeys, WRITTEN_KEYS_MAX};
    use aggregates::log::Position;

    fn writes(keys: impl Iterator<Item = usize>) -> Vec<DocumentWrite> {
        keys.map(|n| DocumentWrite {
            key: format!("doc_{n}"),
            body: None,
            position: Position(1),
        })
        .collect()
    }

    #[test]
    fn a_rebuild_loads_only_the_keys_it_wrote_until_it_remembers_too_many() {
        let mut written = WrittenKeys::default();
        written.note(&writes(0..3));
        assert!(written.may_hold("doc_2"), "a key it wrote, deleted or not");
        assert!(
            !written.may_hold("doc_3"),
            "a key it never wrote is in no document"
        );

        written.note(&writes(3..WRITTEN_KEYS_MAX + 1));
        assert!(
            written.may_hold("never_written"),
            "past the bound it loads every key, as if it remembered none"
        );
        assert!(written.keys.is_empty(), "and it keeps none");
    }
}
