//! Group commit, from the store's callers: appends that queue while a commit is in flight are
//! committed together, and each caller gets its own answer. One append's conflict, replayed key or
//! reused key never changes its neighbours' answers; the log holds exactly what was acknowledged,
//! in order (and contiguous, with one commit slot).

use crate::helpers::{append, event, metadata, stream, Backend, TestDatabase};
use aggregates::log::{Position, StreamVersion};
use pulse_account::engine::store::{
    AppendBatch, AppendRequest, BatchOutcome, Idempotency, Store, StoreError, StreamAppend,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

crate::on_both_stores!(
    a_group_answers_each_append_on_its_own,
    appends_queued_behind_a_commit_share_the_next_one,
);

/// How long the tests give queued appends to reach the writer before letting it go.
const SETTLE: Duration = Duration::from_millis(150);

fn keyed(request: AppendRequest, key: &str, body: serde_json::Value) -> AppendBatch {
    AppendBatch {
        idempotency: Some(Idempotency::for_request(key, &body)),
        ..request.into()
    }
}

fn touch(stream_id: &str, expected: i64) -> AppendBatch {
    append(
        &stream("license", stream_id),
        expected,
        vec![event("touched", json!({ "at": expected }))],
    )
    .into()
}

/// Starts one append per commit slot of the store's writer, one after the other, each on a
/// stream `<prefix>_<n>`, so that with writes held every slot is busy and what follows queues.
async fn plug_every_slot(
    store: &Arc<dyn Store>,
    prefix: &str,
) -> Vec<tokio::task::JoinHandle<Result<BatchOutcome, StoreError>>> {
    let mut plugs = Vec::new();
    for n in 0..store.append_groups().in_flight_max {
        let (store, id) = (store.clone(), format!("{prefix}_{n}"));
        plugs.push(tokio::spawn(async move {
            store.append_batch(touch(&id, 0)).await
        }));
        tokio::time::sleep(SETTLE).await;
    }
    plugs
}

fn positions(outcome: &BatchOutcome) -> Vec<Position> {
    outcome
        .outcomes
        .iter()
        .flat_map(|o| o.positions.clone())
        .collect()
}

async fn a_group_answers_each_append_on_its_own(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    // Given a license at version 1 and a keyed append already recorded.
    let moved = store.append_batch(touch("lic_GMOVED", 0)).await.unwrap();
    let recorded = keyed(
        append(
            &stream("license", "lic_GKEYED"),
            0,
            vec![event("touched", json!({}))],
        ),
        "http:group-recorded",
        json!({"body": 1}),
    );
    let first = store.append_batch(recorded.clone()).await.unwrap();
    let before = store.append_groups();

    // When every commit slot of the writer is held on an append and these queue behind them, in
    // this order.
    let hold = db.hold_writes().await;
    let plugs = plug_every_slot(&store, "lic_GPLUG").await;
    let fresh_key = || {
        keyed(
            append(
                &stream("license", "lic_GFRESH"),
                0,
                vec![event("touched", json!({}))],
            ),
            "http:group-fresh",
            json!({"body": 2}),
        )
    };
    let mut reused = recorded.clone();
    reused.idempotency = Some(Idempotency::for_request(
        "http:group-recorded",
        &json!({"body": "another"}),
    ));
    let queued = vec![
        // one stream twice, each after the other (first in the queue, so in the first group
        // however the queue is shared over commit slots)
        touch("lic_GNEXT", 0),
        touch("lic_GNEXT", 1),
        touch("lic_GA", 0),
        // a stream that moved: refused alone
        touch("lic_GMOVED", 0),
        // the recorded key again: its first outcome
        recorded.clone(),
        // the recorded key with another request: refused
        reused,
        // two streams at once
        AppendBatch {
            appends: vec![
                StreamAppend {
                    stream: stream("license", "lic_GB"),
                    expected_version: StreamVersion(0),
                    events: vec![event("touched", json!({})), event("touched", json!({}))],
                },
                StreamAppend {
                    stream: stream("license", "lic_GC"),
                    expected_version: StreamVersion(0),
                    events: vec![event("touched", json!({}))],
                },
            ],
            metadata: metadata(),
            idempotency: None,
        },
        // one stream twice at the same version: the second sees the first's write
        touch("lic_GTWICE", 0),
        touch("lic_GTWICE", 0),
        // a new key twice: written once, answered twice
        fresh_key(),
        fresh_key(),
    ];
    let queued_count = queued.len();
    let answers = {
        let store = store.clone();
        tokio::spawn(async move {
            futures_util::future::join_all(queued.into_iter().map(|b| store.append_batch(b))).await
        })
    };
    tokio::time::sleep(SETTLE).await;
    hold.release().await;
    let mut acknowledged: Vec<Position> = positions(&moved);
    acknowledged.extend(positions(&first));
    for plug in plugs {
        acknowledged.extend(positions(
            &plug.await.unwrap().expect("a held append is written"),
        ));
    }
    let answers = answers.await.unwrap();

    // Then each append has its own answer.
    let written = |i: usize| -> &BatchOutcome {
        answers[i]
            .as_ref()
            .unwrap_or_else(|e| panic!("append {i} should be written: {e}"))
    };
    assert!(!written(2).replayed());
    assert!(
        matches!(&answers[3], Err(StoreError::WrongExpectedVersion { actual, expected, .. })
            if *actual == StreamVersion(1) && *expected == StreamVersion(0)),
        "{:?}",
        answers[3]
    );
    assert!(written(4).replayed());
    assert_eq!(positions(written(4)), positions(&first));
    assert!(
        matches!(&answers[5], Err(StoreError::IdempotencyKeyReused { key }) if key == "http:group-recorded"),
        "{:?}",
        answers[5]
    );
    assert_eq!(written(6).outcomes.len(), 2);
    assert_eq!(written(7).outcomes[0].stream_version, StreamVersion(1));
    assert!(
        matches!(&answers[8], Err(StoreError::WrongExpectedVersion { actual, .. }) if *actual == StreamVersion(1)),
        "{:?}",
        answers[8]
    );
    assert_eq!(written(0).outcomes[0].stream_version, StreamVersion(1));
    assert_eq!(written(1).outcomes[0].stream_version, StreamVersion(2));
    // (which of the two writes is not said: with several commit slots they may race)
    assert_eq!(
        [written(9).replayed(), written(10).replayed()]
            .iter()
            .filter(|replayed| **replayed)
            .count(),
        1
    );
    assert_eq!(positions(written(10)), positions(written(9)));

    // And the queued appends shared commits. With one commit slot (SQLite) the count is exact:
    // the held append, the queue up to the reused key, the queue from it (a key waits for the
    // next group, so that it answers from the stored record) up to the repeated new key, and that
    // key's replay.
    let after = store.append_groups();
    let (groups, appends) = (after.groups - before.groups, after.appends - before.appends);
    let slots = after.in_flight_max as u64;
    assert_eq!(
        appends,
        slots + queued_count as u64,
        "{before:?} → {after:?}"
    );
    assert!(groups < appends, "{before:?} → {after:?}");
    if slots == 1 {
        assert_eq!(groups, 4, "{before:?} → {after:?}");
    }

    // And the log holds exactly what was acknowledged, in order. With one commit slot it is
    // contiguous too. With several (PostgreSQL), the two appends of one new key (9 and 10) may sit
    // in groups in flight at once: the later group's statement then fails on the key, its appends
    // are made one by one, and the positions its statement had taken stay unused, as any failed
    // append's do (readers never rely on contiguity; see `gap_safety`).
    for answer in answers.iter().flatten().filter(|o| !o.replayed()) {
        acknowledged.extend(positions(answer));
    }
    db.settled_head(store.as_ref()).await;
    let log: Vec<Position> = store
        .read_all(Position::START, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.global_position)
        .collect();
    acknowledged.sort();
    assert_eq!(log, acknowledged);
    if slots == 1 {
        assert!(log.windows(2).all(|p| p[1].0 == p[0].0 + 1), "{log:?}");
    }
    db.cleanup().await;
}

async fn appends_queued_behind_a_commit_share_the_next_one(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let before = store.append_groups();
    let hold = db.hold_writes().await;
    let plugs = plug_every_slot(&store, "lic_SPLUG").await;
    let writers: Vec<_> = (0..40)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.append_batch(touch(&format!("lic_S{n:03}"), 0)).await })
        })
        .collect();
    tokio::time::sleep(SETTLE).await;
    hold.release().await;
    for plug in plugs {
        plug.await.unwrap().unwrap();
    }
    for writer in writers {
        writer
            .await
            .unwrap()
            .expect("distinct streams never conflict");
    }
    let after = store.append_groups();
    let slots = after.in_flight_max as u64;
    assert_eq!(after.appends - before.appends, slots + 40);
    assert!(
        after.groups - before.groups <= 2 * slots,
        "the 40 appends that queued behind the held ones took at most one commit per slot: \
         {before:?} → {after:?}"
    );
    db.settled_head(store.as_ref()).await;
    assert_eq!(
        store.read_all(Position::START, 100).await.unwrap().len() as u64,
        slots + 40
    );
    db.cleanup().await;
}
