//! Command handling: loading a stream (folded from its snapshot when it keeps them, see [`load`]),
//! and [`handle`], one command on one stream as an attempt of the decision runner
//! ([`super::decision`]). A version conflict means another writer appended between our load and
//! our append; the decision may no longer hold, so the runner reloads and decides again, at most
//! [`COMMAND_ATTEMPTS_MAX`] times.

use super::decision::{run, Attempt, Decided, Decision, Reads, RunError};
use crate::engine::store::{
    AppendOutcome, BatchOutcome, EventStore, Idempotency, Snapshot, StoreError, READ_PAGE_MAX,
};
use aggregates::decider::{decode, CodecError, Context, Decider, SnapshotCodec};
use aggregates::log::{EventMetadata, StreamName, StreamNameError, StreamVersion};

/// The most writers deciding on one stream at once that a command is sized to outlast: an
/// installation's runtimes activating together, a burst of retries from one client.
pub const CONCURRENT_WRITERS_SIZED_FOR: usize = 16;
/// Attempts per command before a conflict is returned to the caller. Every round of a race has
/// a winner, so a command among `n` concurrent writers succeeds or gets the domain's answer
/// within `n` attempts; twice [`CONCURRENT_WRITERS_SIZED_FOR`] leaves room for writers that
/// arrive while it retries. `concurrent_update` past this means a hot spot, not bad luck.
pub const COMMAND_ATTEMPTS_MAX: usize = 2 * CONCURRENT_WRITERS_SIZED_FOR;
/// Longest pause before a retry, in milliseconds: a random pause up to this spreads writers that
/// lost together so they do not meet again on the next attempt.
const RETRY_JITTER_MS_MAX: u64 = 8;

/// Waits a random moment before retrying after a lost race (attempt 1 waits nothing).
pub async fn pause_before_retry(attempt: usize) {
    if attempt <= 1 {
        return;
    }
    let upper = RETRY_JITTER_MS_MAX.min(1 << attempt.min(3));
    let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=upper);
    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
}
/// Most events one load of a stream without snapshots may fold: streams are per handoff, index
/// entry, trial, …, and one this long means a modelling bug. Streams with snapshots (accounts,
/// licenses) have no such bound: a load after their snapshots were deleted (by erasure, or when a
/// state version is raised) folds the whole stream once, and saves a snapshot for the next.
pub const STREAM_EVENTS_MAX: usize = 10_000;
/// Events a load folds past its snapshot (or from the start) before it saves a new snapshot. A
/// load's cost is its rows (about 30 µs each to read, open and fold here), so this and the probe
/// bound the slowest load of a long stream to 32 + 49 rows (2–3 ms); a snapshot costs one more
/// write per fifty events of the stream.
pub const SNAPSHOT_EVERY: i64 = 50;
/// A load asks for a stream's snapshot only once the stream's first page, this long, came back
/// full: most streams are shorter and pay nothing for snapshots, a long one reads this many events
/// it then passes over.
const SNAPSHOT_PROBE_AFTER: usize = 32;

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E> {
    /// The domain refused the command.
    #[error("the command was refused")]
    Domain(E),
    /// The stream name is invalid.
    #[error(transparent)]
    StreamName(#[from] StreamNameError),
    /// A stored event does not decode into the decider's events.
    #[error(transparent)]
    Decode(#[from] CodecError),
    /// Loading the stream, which keeps no snapshots, would fold more than [`STREAM_EVENTS_MAX`]
    /// events.
    #[error("stream {0} has more than {STREAM_EVENTS_MAX} events to fold")]
    StreamTooLong(StreamName),
    /// Every attempt met a concurrent writer.
    #[error("stream {stream} kept changing; gave up after {COMMAND_ATTEMPTS_MAX} attempts")]
    Contended {
        /// The stream.
        stream: StreamName,
    },
    /// The store failed or refused the append.
    #[error(transparent)]
    Store(StoreError),
}

/// What a command did.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandOutcome<Event> {
    /// The events the decision produced (for a replayed idempotency key: none, see `appended`).
    pub events: Vec<Event>,
    /// What was appended; `None` when the decision produced no events.
    pub appended: Option<AppendOutcome>,
    /// The stream's version after the command.
    pub stream_version: StreamVersion,
}

/// One command for a decider's stream.
pub struct Command<'a, D: Decider> {
    /// The stream id (the stream type is the decider's).
    pub stream_id: &'a str,
    /// What is asked.
    pub command: &'a D::Command,
    /// Time and the catalog in force for the decision.
    pub context: Context<'a>,
    /// Who, why and when, recorded with the events.
    pub metadata: EventMetadata,
    /// When set, the command takes effect at most once for this key.
    pub idempotency: Option<Idempotency>,
}

/// Loads a stream and folds it into the decider's state; returns the state and its version.
/// For a decider with snapshots, folds from the stream's latest snapshot, and saves a new one when
/// it had to fold [`SNAPSHOT_EVERY`] events or more.
pub async fn load<D: Decider>(
    store: &dyn EventStore,
    stream: &StreamName,
) -> Result<(D::State, StreamVersion), CommandError<D::Error>> {
    let loaded = fold_stream::<D>(store, stream, StreamVersion(i64::MAX)).await?;
    if let (Some(codec), true) = (&D::SNAPSHOTS, loaded.folded >= SNAPSHOT_EVERY) {
        save_snapshot(store, stream, codec, &loaded.state, loaded.version).await;
    }
    Ok((loaded.state, loaded.version))
}

/// Like [`load`], folding only the events up to `until` (inclusive): the state as it was then.
pub async fn load_until<D: Decider>(
    store: &dyn EventStore,
    stream: &StreamName,
    until: StreamVersion,
) -> Result<(D::State, StreamVersion), CommandError<D::Error>> {
    let loaded = fold_stream::<D>(store, stream, until).await?;
    Ok((loaded.state, loaded.version))
}

/// A folded stream, and how many events were folded after the snapshot it started from (all of
/// them when it started from none).
struct Loaded<S> {
    state: S,
    version: StreamVersion,
    folded: i64,
}

async fn fold_stream<D: Decider>(
    store: &dyn EventStore,
    stream: &StreamName,
    until: StreamVersion,
) -> Result<Loaded<D::State>, CommandError<D::Error>> {
    let mut loaded = Loaded {
        state: D::State::default(),
        version: StreamVersion::EMPTY,
        folded: 0,
    };
    let mut page_len = match D::SNAPSHOTS {
        Some(_) => SNAPSHOT_PROBE_AFTER,
        None => READ_PAGE_MAX,
    };
    while loaded.version < until {
        let len = page_len.min((until.0 - loaded.version.0) as usize);
        page_len = READ_PAGE_MAX;
        let page = store
            .read_stream(stream, loaded.version.next(), len)
            .await
            .map_err(CommandError::Store)?;
        let full_page = page.len() == len;
        if let (Some(codec), true, true) = (
            &D::SNAPSHOTS,
            full_page,
            loaded.version == StreamVersion::EMPTY,
        ) {
            let page_end = page
                .last()
                .map_or(StreamVersion::EMPTY, |e| e.stream_version);
            if let Some((state, version)) = from_snapshot(store, stream, codec, until).await? {
                if version > page_end {
                    loaded = Loaded {
                        state,
                        version,
                        folded: 0,
                    };
                    continue;
                }
            }
        }
        for recorded in &page {
            let event: D::Event = decode(&recorded.event_type, &recorded.payload)?;
            loaded.state = D::evolve(loaded.state, &event);
            loaded.version = recorded.stream_version;
            loaded.folded += 1;
        }
        if D::SNAPSHOTS.is_none() && loaded.folded as usize > STREAM_EVENTS_MAX {
            return Err(CommandError::StreamTooLong(stream.clone()));
        }
        if !full_page {
            break;
        }
    }
    Ok(loaded)
}

/// The state and version of the stream's snapshot, when there is one of the codec's state version
/// at or before `until`. A snapshot that no longer decodes is passed over.
async fn from_snapshot<S, E>(
    store: &dyn EventStore,
    stream: &StreamName,
    codec: &SnapshotCodec<S>,
    until: StreamVersion,
) -> Result<Option<(S, StreamVersion)>, CommandError<E>> {
    let snapshot = store
        .read_snapshot(stream, codec.state_version)
        .await
        .map_err(CommandError::Store)?;
    let Some(snapshot) = snapshot.filter(|s| s.stream_version <= until) else {
        return Ok(None);
    };
    match (codec.decode)(snapshot.state) {
        Ok(state) => Ok(Some((state, snapshot.stream_version))),
        Err(error) => {
            tracing::warn!(%stream, %error, "unreadable snapshot; folding the whole stream");
            Ok(None)
        }
    }
}

/// Saves a snapshot of a loaded state. A snapshot only saves work, so a failure is logged and the
/// command goes on.
async fn save_snapshot<S>(
    store: &dyn EventStore,
    stream: &StreamName,
    codec: &SnapshotCodec<S>,
    state: &S,
    version: StreamVersion,
) {
    let saved = match (codec.encode)(state) {
        Ok(state) => {
            store
                .save_snapshot(&Snapshot {
                    stream: stream.clone(),
                    state_version: codec.state_version,
                    stream_version: version,
                    state,
                })
                .await
        }
        Err(error) => Err(StoreError::Invariant(format!("unencodable state: {error}"))),
    };
    if let Err(error) = saved {
        tracing::warn!(%stream, %error, "could not save a snapshot; loads fold from the log");
    }
}

/// The events an append wrote to its stream, decoded: how a replayed idempotent request rebuilds
/// the answer it gave the first time.
pub async fn recorded_events<D: Decider>(
    store: &dyn EventStore,
    appended: &AppendOutcome,
) -> Result<Vec<D::Event>, CommandError<D::Error>> {
    let count = appended.positions.len();
    let from = StreamVersion(appended.stream_version.0 - count as i64 + 1);
    let page = store
        .read_stream(&appended.stream, from, count.clamp(1, READ_PAGE_MAX))
        .await
        .map_err(CommandError::Store)?;
    page.iter()
        .take(count)
        .map(|recorded| Ok(decode(&recorded.event_type, &recorded.payload)?))
        .collect()
}

/// Every event of a run of decisions, and the state they leave.
pub type DecidedAll<D> = (Vec<<D as Decider>::Event>, <D as Decider>::State);

/// Decides `commands` one after another, each on the state the previous one's events left;
/// returns every event and the final state. One command's refusal refuses them all.
pub fn decide_all<D: Decider>(
    state: D::State,
    commands: &[D::Command],
    context: &Context<'_>,
) -> Result<DecidedAll<D>, D::Error> {
    let mut events = Vec::new();
    let mut state = state;
    for command in commands {
        let decided = D::decide(&state, command, context)?;
        state = decided.iter().fold(state, D::evolve);
        events.extend(decided);
    }
    Ok((events, state))
}

/// Handles one command on one stream through the decision runner: load → fold → decide → append at
/// the loaded version, retrying lost races; a repeated idempotency key answers what it recorded.
#[tracing::instrument(skip_all, fields(stream_type = D::STREAM_TYPE, stream_id = request.stream_id))]
pub async fn handle<D>(
    store: &dyn EventStore,
    request: Command<'_, D>,
) -> Result<CommandOutcome<D::Event>, CommandError<D::Error>>
where
    D: Decider,
{
    let stream = StreamName::parse(D::STREAM_TYPE, request.stream_id)?;
    let attempt = OneCommand::<D> {
        stream: stream.clone(),
        command: request.command,
        context: request.context,
    };
    let decided = run(
        store,
        &request.metadata,
        request.idempotency.as_ref(),
        &attempt,
    )
    .await?;
    let stream_outcome = |outcome: BatchOutcome| {
        outcome
            .outcomes
            .into_iter()
            .find(|o| o.stream == stream)
            .ok_or_else(|| StoreError::IdempotencyKeyReused {
                key: request
                    .idempotency
                    .as_ref()
                    .map(|i| i.key.clone())
                    .unwrap_or_default(),
            })
    };
    match decided {
        Decided::Unchanged((events, version)) => Ok(CommandOutcome {
            events,
            appended: None,
            stream_version: version,
        }),
        Decided::Appended {
            answer: (events, _),
            outcome,
        } => {
            let appended = stream_outcome(outcome).map_err(CommandError::Store)?;
            Ok(CommandOutcome {
                stream_version: appended.stream_version,
                events,
                appended: Some(appended),
            })
        }
        Decided::Replayed(outcome) => {
            let appended = stream_outcome(outcome).map_err(CommandError::Store)?;
            Ok(CommandOutcome {
                events: Vec::new(),
                stream_version: appended.stream_version,
                appended: Some(appended),
            })
        }
    }
}

/// One command on one stream, as an attempt of the decision runner; answers the events and the
/// version the stream was decided at.
struct OneCommand<'a, D: Decider> {
    stream: StreamName,
    command: &'a D::Command,
    context: Context<'a>,
}

#[async_trait::async_trait]
impl<D> Attempt for OneCommand<'_, D>
where
    D: Decider,
{
    type Answer = (Vec<D::Event>, StreamVersion);
    type Error = CommandError<D::Error>;

    async fn attempt(
        &self,
        reads: &mut Reads<'_>,
    ) -> Result<Decision<Self::Answer>, CommandError<D::Error>> {
        let (state, version) = reads.load_versioned::<D>(&self.stream).await?;
        let events =
            D::decide(&state, self.command, &self.context).map_err(CommandError::Domain)?;
        let decision = Decision::answer(version).append::<D>(self.stream.clone(), &events)?;
        Ok(decision.map_answer(|version| (events, version)))
    }
}

impl<E> From<RunError> for CommandError<E> {
    fn from(error: RunError) -> CommandError<E> {
        match error {
            RunError::Store(store) => CommandError::Store(store),
            RunError::Contended { stream } => CommandError::Contended { stream },
            not_loaded @ RunError::NotLoaded(_) => {
                CommandError::Store(StoreError::Invariant(not_loaded.to_string()))
            }
        }
    }
}
