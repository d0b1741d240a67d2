//! Group commit: one writer task per store commits the appends that arrive while the previous
//! commit is in flight in one transaction, and answers each caller with its own outcome.
//!
//! There is no added wait: a lone append is taken at once and committed alone, so one writer pays
//! only a channel hop; a few commits may be in flight at once (each store says how many); once
//! they all are, the appends that queue share the next free one, and the per-commit cost (a round
//! trip, the transaction, the WAL flush, the append lock) is paid once for many. Each store decides how a group is written ([`GroupWriter`]); both keep one command's
//! conflict from failing its neighbours. This module owns the queue, the grouping rules and their
//! bounds.

use super::{AppendBatch, BatchOutcome, StoreError};
use async_trait::async_trait;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most appends waiting for the writer; a caller past this waits for room (backpressure), so
/// memory stays bounded however many requests arrive.
pub(super) const QUEUE_LEN_MAX: usize = 1_024;
/// Most appends one group commits.
pub(super) const GROUP_BATCHES_MAX: usize = 64;
/// Most events one group commits, across its appends.
pub(super) const GROUP_EVENTS_MAX: usize = 1_000;

/// Writes one group of appends, answering each in the group's order.
#[async_trait]
pub(super) trait GroupWriter: Send + Sync + 'static {
    /// Commits `group` (1 to [`GROUP_BATCHES_MAX`] validated appends, no two with one idempotency
    /// key). Returns one answer per append, in order. An append refused for its own reasons (a
    /// moved stream, a replayed or reused key, a row the database rejects) must not change its
    /// neighbours' answers.
    async fn write_group(&self, group: &[AppendBatch]) -> Vec<Result<BatchOutcome, StoreError>>;
}

/// One append waiting for the writer, and where its answer goes.
struct Pending {
    batch: AppendBatch,
    answer: oneshot::Sender<Result<BatchOutcome, StoreError>>,
}

impl Pending {
    fn events(&self) -> usize {
        self.batch.appends.iter().map(|a| a.events.len()).sum()
    }

    fn key(&self) -> Option<&str> {
        self.batch.idempotency.as_ref().map(|i| i.key.as_str())
    }
}

/// How many groups this process's writer committed, and how many appends they held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendGroups {
    /// Groups written (each one statement on PostgreSQL, one transaction on SQLite).
    pub groups: u64,
    /// Appends those groups held.
    pub appends: u64,
    /// Most groups the writer commits at once.
    pub in_flight_max: usize,
}

#[derive(Default)]
struct Counters {
    groups: AtomicU64,
    appends: AtomicU64,
}

/// The handle callers append through; the writer task stops when the handle is dropped.
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Pending>,
    writer: tokio::task::JoinHandle<()>,
    counters: Arc<Counters>,
    in_flight_max: usize,
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

impl GroupCommit {
    /// Starts the writer task, with at most `in_flight_max` (at least 1) groups committing at
    /// once.
    pub(super) fn start(writer: Arc<dyn GroupWriter>, in_flight_max: usize) -> GroupCommit {
        let in_flight_max = in_flight_max.max(1);
        let (queue, pending) = mpsc::channel(QUEUE_LEN_MAX);
        let counters = Arc::new(Counters::default());
        GroupCommit {
            queue,
            writer: tokio::spawn(write_groups(
                pending,
                writer,
                Arc::clone(&counters),
                in_flight_max,
            )),
            counters,
            in_flight_max,
        }
    }

    /// What the writer has committed so far.
    pub(super) fn groups(&self) -> AppendGroups {
        AppendGroups {
            groups: self.counters.groups.load(Ordering::Relaxed),
            appends: self.counters.appends.load(Ordering::Relaxed),
            in_flight_max: self.in_flight_max,
        }
    }

    /// Appends one validated batch in the next group and returns its own outcome. A caller that
    /// stops waiting does not stop the append: once queued, it is written or refused as if the
    /// caller had stayed.
    pub(super) async fn append(&self, batch: AppendBatch) -> Result<BatchOutcome, StoreError> {
        let (answer, answered) = oneshot::channel();
        let stopped = || StoreError::Invariant(String::from("the append writer has stopped"));
        self.queue
            .send(Pending { batch, answer })
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// The writer task. It commits in up to `in_flight_max` slots at once and shares what is queued
/// over the free ones: appends at low concurrency each get a slot and run side by side as they
/// would without grouping (and one append stalled on a lock does not hold up the next); under
/// load, the appends that waited for a slot share its commit.
async fn write_groups(
    mut pending: mpsc::Receiver<Pending>,
    writer: Arc<dyn GroupWriter>,
    counters: Arc<Counters>,
    in_flight_max: usize,
) {
    let mut in_flight = tokio::task::JoinSet::new();
    let mut carried: Option<Pending> = None;
    loop {
        if in_flight.len() >= in_flight_max {
            // Every slot is busy: wait for one; a commit task that panicked has already dropped
            // its callers' answers, which they see as a stopped writer.
            in_flight.join_next().await;
            continue;
        }
        let first = match carried.take() {
            Some(first) => first,
            None => {
                tokio::select! {
                    next = pending.recv() => match next {
                        Some(first) => first,
                        None => break,
                    },
                    Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
                }
            }
        };
        // The queue is shared out over the free slots: with as many free slots as appends
        // waiting, each goes alone; with one free slot, it takes them all.
        let free = in_flight_max - in_flight.len();
        let share = (pending.len() + 1).div_ceil(free);
        let mut group = vec![first];
        carried = fill_group(&mut group, &mut pending, share);
        let (writer, counters) = (Arc::clone(&writer), Arc::clone(&counters));
        in_flight.spawn(commit_group(group, writer, counters));
    }
    while in_flight.join_next().await.is_some() {}
}

/// Adds what is queued to `group` until it holds `share` appends, within the bounds; returns the
/// append that must wait for the next group (it repeats a key of this one, or would pass the event
/// bound), if one was taken.
fn fill_group(
    group: &mut Vec<Pending>,
    pending: &mut mpsc::Receiver<Pending>,
    share: usize,
) -> Option<Pending> {
    let mut events: usize = group.iter().map(Pending::events).sum();
    let mut keys: HashSet<String> = group
        .iter()
        .filter_map(|p| p.key().map(str::to_owned))
        .collect();
    while group.len() < share.min(GROUP_BATCHES_MAX) {
        let Ok(next) = pending.try_recv() else { break };
        let repeats_key = next.key().is_some_and(|key| keys.contains(key));
        if repeats_key || events + next.events() > GROUP_EVENTS_MAX {
            // A key seen in this group is answered by a later one, from the stored record.
            return Some(next);
        }
        events += next.events();
        keys.extend(next.key().map(str::to_owned));
        group.push(next);
    }
    None
}

/// Commits one group and answers its callers.
async fn commit_group(group: Vec<Pending>, writer: Arc<dyn GroupWriter>, counters: Arc<Counters>) {
    let (batches, answers): (Vec<AppendBatch>, Vec<_>) =
        group.into_iter().map(|p| (p.batch, p.answer)).unzip();
    let results = writer.write_group(&batches).await;
    counters.groups.fetch_add(1, Ordering::Relaxed);
    counters
        .appends
        .fetch_add(batches.len() as u64, Ordering::Relaxed);
    debug_assert_eq!(results.len(), answers.len());
    for (answer, result) in answers.into_iter().zip(results) {
        // A caller that stopped waiting has dropped its receiver; its append stands.
        let _ = answer.send(result);
    }
}

/// One error for every append of a group that failed as a whole because the database could not
/// be reached: the same class ([`StoreError::is_unavailable`]) and message for each.
pub(super) fn unavailable_for_each(
    error: &StoreError,
    count: usize,
) -> Vec<Result<BatchOutcome, StoreError>> {
    let message = match error {
        StoreError::Database { source, .. } => format!("{error}: {source}"),
        other => other.to_string(),
    };
    (0..count)
        .map(|_| {
            Err(StoreError::Database {
                during: "committing a group of appends",
                source: sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    message.clone(),
                )),
            })
        })
        .collect()
}
