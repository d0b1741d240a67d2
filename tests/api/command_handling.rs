//! The command handler: load → fold → decide → append, with conflict retries and idempotent
//! commands, on both stores. The decider here is a small test counter, so the tests are about the
//! handler, not about any business rule.

use crate::helpers::{metadata, Backend, TestDatabase};
use aggregates::catalog::Catalog;
use aggregates::decider::{encode, Context, Decider, DomainEvent, SnapshotCodec};
use aggregates::log::{StreamName, StreamVersion};
use chrono::{TimeZone, Utc};
use pulse_account::engine::command::{
    handle, load, load_until, Command, CommandError, SNAPSHOT_EVERY, STREAM_EVENTS_MAX,
};
use pulse_account::engine::store::{AppendRequest, Idempotency, StoreError, APPEND_EVENTS_MAX};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

crate::on_both_stores!(
    a_command_appends_what_the_decider_decides_at_the_loaded_version,
    a_refused_command_writes_nothing,
    concurrent_commands_on_one_stream_are_retried_until_each_decides_on_fresh_state,
    a_repeated_idempotent_command_returns_the_first_outcome_without_deciding_again,
    a_long_stream_loads_from_its_latest_snapshot_and_folds_only_the_events_after_it,
);

/// A tally of ticks that keeps snapshots, as the long-lived streams (accounts, licenses) do.
struct Tally;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Ticks {
    events: u64,
}

struct Tick;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
enum TallyEvent {
    Ticked,
}

impl DomainEvent for TallyEvent {}

impl Decider for Tally {
    const STREAM_TYPE: &'static str = "tally";
    type State = Ticks;
    type Command = Tick;
    type Event = TallyEvent;
    type Error = std::convert::Infallible;
    const SNAPSHOTS: Option<SnapshotCodec<Ticks>> = Some(SnapshotCodec::serde(1));

    fn decide(_: &Ticks, _: &Tick, _: &Context) -> Result<Vec<TallyEvent>, Self::Error> {
        Ok(vec![TallyEvent::Ticked])
    }

    fn evolve(state: Ticks, _: &TallyEvent) -> Ticks {
        Ticks {
            events: state.events + 1,
        }
    }
}

/// A counter that may not exceed ten.
struct Counter;

#[derive(Clone, Default)]
struct Total(u32);

enum CounterCommand {
    Add(u32),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
enum CounterEvent {
    Added { amount: u32, total: u32 },
}

impl DomainEvent for CounterEvent {}

#[derive(Debug, PartialEq)]
enum CounterError {
    WouldExceedTen,
}

impl Decider for Counter {
    const STREAM_TYPE: &'static str = "counter";
    type State = Total;
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;

    fn decide(
        state: &Total,
        command: &CounterCommand,
        _: &Context,
    ) -> Result<Vec<CounterEvent>, CounterError> {
        let CounterCommand::Add(amount) = command;
        let total = state.0 + amount;
        if total > 10 {
            return Err(CounterError::WouldExceedTen);
        }
        Ok(vec![CounterEvent::Added {
            amount: *amount,
            total,
        }])
    }

    fn evolve(_: Total, event: &CounterEvent) -> Total {
        match event {
            CounterEvent::Added { total, .. } => Total(*total),
        }
    }
}

fn command<'a>(
    stream_id: &'a str,
    add: &'a CounterCommand,
    key: Option<&str>,
) -> Command<'a, Counter> {
    static CATALOG: std::sync::LazyLock<Catalog> = std::sync::LazyLock::new(Catalog::v1);
    Command {
        stream_id,
        command: add,
        context: Context::new(Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(), &CATALOG),
        metadata: metadata(),
        idempotency: key.map(|key| Idempotency::for_request(key, &json!({ "stream": stream_id }))),
    }
}

async fn a_command_appends_what_the_decider_decides_at_the_loaded_version(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let first = handle(store.as_ref(), command("c1", &CounterCommand::Add(3), None))
        .await
        .unwrap();
    assert_eq!(
        first.events,
        vec![CounterEvent::Added {
            amount: 3,
            total: 3
        }]
    );
    let second = handle(store.as_ref(), command("c1", &CounterCommand::Add(4), None))
        .await
        .unwrap();
    assert_eq!(
        second.events,
        vec![CounterEvent::Added {
            amount: 4,
            total: 7
        }]
    );
    assert_eq!(second.stream_version, StreamVersion(2));
    let appended = second.appended.unwrap();
    assert!(appended.positions[0] > first.appended.unwrap().positions[0]);
    let stream = aggregates::log::StreamName::parse("counter", "c1").unwrap();
    let (total, version) = load::<Counter>(store.as_ref(), &stream).await.unwrap();
    assert_eq!((total.0, version), (7, StreamVersion(2)));
    db.cleanup().await;
}

async fn a_refused_command_writes_nothing(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    handle(store.as_ref(), command("c2", &CounterCommand::Add(9), None))
        .await
        .unwrap();
    let refused = handle(store.as_ref(), command("c2", &CounterCommand::Add(2), None))
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        CommandError::Domain(CounterError::WouldExceedTen)
    ));
    let invalid = handle(
        store.as_ref(),
        command("no spaces", &CounterCommand::Add(1), None),
    )
    .await
    .unwrap_err();
    assert!(matches!(invalid, CommandError::StreamName(_)));
    let head = db.settled_head(store.as_ref()).await;
    assert_eq!(head.0, first_position(&store).await);
    db.cleanup().await;
}

async fn first_position(store: &Arc<dyn pulse_account::engine::store::Store>) -> i64 {
    let events = store
        .read_all(aggregates::log::Position::START, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    events[0].global_position.0
}

async fn concurrent_commands_on_one_stream_are_retried_until_each_decides_on_fresh_state(
    backend: Backend,
) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            handle(store.as_ref(), command("c3", &CounterCommand::Add(2), None)).await
        }));
    }
    for task in tasks {
        task.await
            .unwrap()
            .expect("three writers, three attempts each: all succeed");
    }
    let stream = aggregates::log::StreamName::parse("counter", "c3").unwrap();
    let events = store
        .read_stream(&stream, StreamVersion(1), 10)
        .await
        .unwrap();
    let totals: Vec<_> = events
        .iter()
        .map(|e| e.payload["total"].as_u64().unwrap())
        .collect();
    assert_eq!(
        totals,
        [2, 4, 6],
        "each decision saw the state its predecessor left"
    );
    db.cleanup().await;
}

async fn a_repeated_idempotent_command_returns_the_first_outcome_without_deciding_again(
    backend: Backend,
) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let add = CounterCommand::Add(6);
    let first = handle(store.as_ref(), command("c4", &add, Some("http:add-6")))
        .await
        .unwrap();
    // Deciding again would be refused (6 + 6 > 10); the key answers with the first outcome instead.
    let again = handle(store.as_ref(), command("c4", &add, Some("http:add-6")))
        .await
        .unwrap();
    assert!(again.events.is_empty());
    let (first, again) = (first.appended.unwrap(), again.appended.unwrap());
    assert!(again.replayed);
    assert_eq!(again.positions, first.positions);
    let reused = handle(store.as_ref(), command("c5", &add, Some("http:add-6")))
        .await
        .unwrap_err();
    assert!(matches!(
        reused,
        CommandError::Store(StoreError::IdempotencyKeyReused { .. })
    ));
    assert_eq!(db.settled_head(store.as_ref()).await, first.positions[0]);
    db.cleanup().await;
}

async fn a_long_stream_loads_from_its_latest_snapshot_and_folds_only_the_events_after_it(
    backend: Backend,
) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let stream = StreamName::parse("tally", "t1").unwrap();
    let written = 6 * APPEND_EVENTS_MAX as i64;
    assert!(written > 2 * SNAPSHOT_EVERY);
    for batch in 0..6 {
        append_ticks(store.as_ref(), &stream, batch * APPEND_EVENTS_MAX as i64).await;
    }
    let ticks = |events: u64| Ticks { events };
    let version = StreamVersion(written);

    // The first load folds the whole stream and leaves a snapshot where it ended.
    let loaded = load::<Tally>(store.as_ref(), &stream).await.unwrap();
    assert_eq!(loaded, (ticks(written as u64), version));
    let snapshot = store.read_snapshot(&stream, 1).await.unwrap().unwrap();
    assert_eq!(snapshot.stream_version, version);
    assert_eq!(snapshot.state, json!({ "events": written }));
    assert!(store.read_snapshot(&stream, 2).await.unwrap().is_none());

    // A command loads from it; a later load starts from it and folds only what follows. (The
    // snapshot is edited here to tell the two apart.)
    let catalog = Catalog::v1();
    let command = Command::<Tally> {
        stream_id: "t1",
        command: &Tick,
        context: Context::new(Utc::now(), &catalog),
        metadata: metadata(),
        idempotency: None,
    };
    handle(store.as_ref(), command).await.unwrap();
    let after_tick = StreamVersion(written + 1);
    db.execute("UPDATE stream_snapshots SET state = '{\"events\": 1000000}'")
        .await;
    assert_eq!(
        load::<Tally>(store.as_ref(), &stream).await.unwrap(),
        (ticks(1_000_001), after_tick)
    );

    // A past state never comes from a later snapshot.
    assert_eq!(
        load_until::<Tally>(store.as_ref(), &stream, StreamVersion(5))
            .await
            .unwrap(),
        (ticks(5), StreamVersion(5))
    );

    // A snapshot of another state version, or one that no longer decodes, is passed over: the
    // whole stream is folded, and a fresh snapshot replaces the passed-over one.
    let mut edits = vec![
        "UPDATE stream_snapshots SET state_version = 2",
        "UPDATE stream_snapshots SET state = '\"not a tally\"'",
    ];
    if backend == Backend::Sqlite {
        // SQLite keeps the document as text, which can stop being JSON at all.
        edits.push("UPDATE stream_snapshots SET state = 'not json'");
    }
    for edit in edits {
        db.execute(edit).await;
        assert_eq!(
            load::<Tally>(store.as_ref(), &stream).await.unwrap(),
            (ticks(written as u64 + 1), after_tick),
            "after {edit}"
        );
    }
    let fresh = store.read_snapshot(&stream, 1).await.unwrap().unwrap();
    assert_eq!(
        (fresh.stream_version, fresh.state),
        (after_tick, json!({ "events": written + 1 }))
    );
    assert_eq!(store.delete_snapshots().await.unwrap(), 1);
    assert!(store.read_snapshot(&stream, 1).await.unwrap().is_none());

    // A stream with snapshots has no length bound: once its snapshots are gone (as after an
    // erasure), a load folds past STREAM_EVENTS_MAX events and saves a snapshot for the next.
    let mut version = after_tick.0;
    while version as usize <= STREAM_EVENTS_MAX {
        append_ticks(store.as_ref(), &stream, version).await;
        version += APPEND_EVENTS_MAX as i64;
    }
    assert_eq!(
        load::<Tally>(store.as_ref(), &stream).await.unwrap(),
        (ticks(version as u64), StreamVersion(version))
    );
    let saved = store.read_snapshot(&stream, 1).await.unwrap().unwrap();
    assert_eq!(saved.stream_version, StreamVersion(version));
    db.cleanup().await;
}

/// Appends the most ticks one append may hold to a tally at `version`.
async fn append_ticks(
    store: &dyn pulse_account::engine::store::Store,
    stream: &StreamName,
    version: i64,
) {
    store
        .append(AppendRequest {
            stream: stream.clone(),
            expected_version: StreamVersion(version),
            events: (0..APPEND_EVENTS_MAX)
                .map(|_| encode(&TallyEvent::Ticked).unwrap())
                .collect(),
            metadata: metadata(),
            idempotency: None,
        })
        .await
        .unwrap();
}
