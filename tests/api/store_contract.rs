//! The store contract: every behaviour of the event log, checked identically on SQLite and
//! PostgreSQL. A store implementation is correct when this whole module passes on it.

use crate::helpers::{append, event, metadata, stream, Backend, TestDatabase};
use aggregates::log::{Position, StreamVersion};
use pulse_account::engine::store::upcast::Upcasters;
use pulse_account::engine::store::{
    AppendBatch, AppendRequest, Idempotency, StoreError, StreamAppend, APPEND_EVENTS_MAX,
    APPEND_STREAMS_MAX, EVENT_PAYLOAD_BYTES_MAX, READ_PAGE_MAX,
};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

crate::on_both_stores!(
    appended_events_read_back_in_order_on_both_read_paths,
    a_settled_read_takes_exactly_the_range_below_the_head_it_names,
    a_stale_expected_version_is_a_typed_conflict_that_writes_nothing,
    two_writers_at_the_same_expected_version_exactly_one_wins,
    concurrent_writers_on_distinct_streams_lose_and_duplicate_nothing,
    replaying_an_idempotency_key_returns_the_first_positions_and_writes_nothing,
    an_idempotency_key_reused_with_another_request_is_refused,
    concurrent_appends_with_one_key_take_effect_once,
    invalid_appends_are_refused_and_write_nothing,
    reads_refuse_page_sizes_outside_the_bound_and_page_through_everything,
    upcasters_apply_on_stream_reads_and_global_reads,
    a_failing_upcaster_is_an_error_not_a_silent_skip,
    the_log_refuses_updates_and_deletes,
    an_atomic_append_to_several_streams_writes_all_of_them_contiguously,
    a_conflict_on_any_stream_of_a_batch_writes_none_of_it,
    a_batch_must_name_each_stream_once_and_stay_within_its_bounds,
    a_replayed_batch_answers_with_every_streams_first_outcome,
);

async fn appended_events_read_back_in_order_on_both_read_paths(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let license = stream("license", "lic_AAAAAAAAAA");
    let first = store
        .append(append(
            &license,
            0,
            vec![
                event("license_issued", json!({"tier": "pro"})),
                event("grant_issued", json!({"jti": "j1"})),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(first.stream_version, StreamVersion(2));
    assert_eq!(first.positions.len(), 2);
    assert!(!first.replayed);
    let second = store
        .append(append(
            &license,
            2,
            vec![event("license_revoked", json!({}))],
        ))
        .await
        .unwrap();
    assert!(second.positions[0] > first.positions[1]);

    let by_stream = store
        .read_stream(&license, StreamVersion(1), 100)
        .await
        .unwrap();
    let types: Vec<_> = by_stream.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["license_issued", "grant_issued", "license_revoked"]);
    assert_eq!(by_stream[0].payload, json!({"tier": "pro"}));
    assert_eq!(by_stream[0].metadata, metadata());
    assert_eq!(by_stream[1].stream_version, StreamVersion(2));
    let from_two = store
        .read_stream(&license, StreamVersion(2), 100)
        .await
        .unwrap();
    assert_eq!(from_two.len(), 2);

    assert_eq!(db.settled_head(store.as_ref()).await, second.positions[0]);
    let all = store.read_all(Position::START, 100).await.unwrap();
    assert_eq!(all, by_stream, "both read paths return the same events");
    let ids: HashSet<_> = all.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), 3, "event ids are unique");
    db.cleanup().await;
}

async fn a_stale_expected_version_is_a_typed_conflict_that_writes_nothing(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let license = stream("license", "lic_BBBBBBBBBB");
    store
        .append(append(&license, 0, vec![event("a", json!({}))]))
        .await
        .unwrap();
    for stale in [0, 2] {
        let error = store
            .append(append(&license, stale, vec![event("b", json!({}))]))
            .await
            .unwrap_err();
        match error {
            StoreError::WrongExpectedVersion {
                expected, actual, ..
            } => {
                assert_eq!(expected, StreamVersion(stale));
                assert_eq!(actual, StreamVersion(1));
            }
            other => panic!("expected a version conflict, got {other:?}"),
        }
    }
    db.settled_head(store.as_ref()).await;
    assert_eq!(store.read_all(Position::START, 10).await.unwrap().len(), 1);
    db.cleanup().await;
}

async fn two_writers_at_the_same_expected_version_exactly_one_wins(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let license = stream("license", "lic_CCCCCCCCCC");
    store
        .append(append(&license, 0, vec![event("opened", json!({}))]))
        .await
        .unwrap();
    let writers = 8;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = Arc::clone(&store);
        let request = append(
            &license,
            1,
            vec![event("changed", json!({ "writer": writer }))],
        );
        tasks.push(tokio::spawn(async move { store.append(request).await }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(outcome) => winners.push(outcome),
            Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                assert_eq!(actual, StreamVersion(2))
            }
            Err(other) => panic!("a losing writer must get the typed conflict, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins");
    let events = store
        .read_stream(&license, StreamVersion(1), 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "no event lost or duplicated");
    assert_eq!(events[1].global_position, winners[0].positions[0]);
    db.settled_head(store.as_ref()).await;
    assert_eq!(store.read_all(Position::START, 100).await.unwrap().len(), 2);
    db.cleanup().await;
}

async fn concurrent_writers_on_distinct_streams_lose_and_duplicate_nothing(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let (writers, appends_each) = (16, 15);
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let account = stream("account", &format!("a_{writer:010}"));
            let mut positions = Vec::new();
            for version in 0..appends_each {
                let request = append(
                    &account,
                    version,
                    vec![event("touched", json!({ "n": version }))],
                );
                positions.extend(
                    store
                        .append(request)
                        .await
                        .expect("distinct streams never conflict")
                        .positions,
                );
            }
            positions
        }));
    }
    let mut written = Vec::new();
    for task in tasks {
        written.extend(task.await.unwrap());
    }
    db.settled_head(store.as_ref()).await;
    let mut read = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 37).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.global_position;
        read.extend(page.into_iter().map(|e| e.global_position));
    }
    assert_eq!(
        read.len(),
        (writers * appends_each) as usize,
        "every acknowledged event is read once"
    );
    assert!(
        read.windows(2).all(|pair| pair[0] < pair[1]),
        "global order strictly rises"
    );
    written.sort();
    assert_eq!(
        read, written,
        "the reader sees exactly the positions the writers were given"
    );
    db.cleanup().await;
}

fn keyed(request: AppendRequest, key: &str, fingerprint_of: serde_json::Value) -> AppendRequest {
    AppendRequest {
        idempotency: Some(Idempotency::for_request(key, &fingerprint_of)),
        ..request
    }
}

async fn replaying_an_idempotency_key_returns_the_first_positions_and_writes_nothing(
    backend: Backend,
) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let handoff = stream("handoff", "cph_DDDDDDDDDD");
    let request = || {
        keyed(
            append(&handoff, 0, vec![event("handoff_created", json!({}))]),
            "http:k1",
            json!({"body": 1}),
        )
    };
    let first = store.append(request()).await.unwrap();
    assert!(!first.replayed);
    for _ in 0..3 {
        let again = store.append(request()).await.unwrap();
        assert!(again.replayed);
        assert_eq!(again.positions, first.positions);
        assert_eq!(again.stream_version, first.stream_version);
    }
    // A replay is answered even though the stream has moved on since.
    store
        .append(append(
            &handoff,
            1,
            vec![event("handoff_resolved", json!({}))],
        ))
        .await
        .unwrap();
    let later = store.append(request()).await.unwrap();
    assert_eq!(later.positions, first.positions);
    db.settled_head(store.as_ref()).await;
    assert_eq!(
        store.read_all(Position::START, 10).await.unwrap().len(),
        2,
        "replays wrote nothing"
    );
    let known = store
        .idempotent_outcome(&Idempotency::for_request("http:k1", &json!({"body": 1})))
        .await
        .unwrap();
    assert_eq!(
        known.map(|o| o.outcomes[0].positions.clone()),
        Some(first.positions)
    );
    db.cleanup().await;
}

async fn an_idempotency_key_reused_with_another_request_is_refused(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let handoff = stream("handoff", "cph_EEEEEEEEEE");
    store
        .append(keyed(
            append(&handoff, 0, vec![event("a", json!({}))]),
            "http:k2",
            json!({"body": 1}),
        ))
        .await
        .unwrap();
    let other = stream("handoff", "cph_FFFFFFFFFF");
    let error = store
        .append(keyed(
            append(&other, 0, vec![event("a", json!({}))]),
            "http:k2",
            json!({"body": 2}),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::IdempotencyKeyReused { ref key } if key == "http:k2"),
        "{error:?}"
    );
    db.settled_head(store.as_ref()).await;
    assert_eq!(
        store.read_all(Position::START, 10).await.unwrap().len(),
        1,
        "the refused append wrote nothing"
    );
    db.cleanup().await;
}

async fn concurrent_appends_with_one_key_take_effect_once(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let mut tasks = Vec::new();
    for attempt in 0..8 {
        let store = Arc::clone(&store);
        // Different streams, so only the key can stop the duplicates.
        let request = keyed(
            append(
                &stream("receipt", &format!("r{attempt}")),
                0,
                vec![event("stripe_event_received", json!({}))],
            ),
            "stripe:evt_1",
            json!({"event": "evt_1"}),
        );
        tasks.push(tokio::spawn(async move { store.append(request).await }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(
            task.await
                .unwrap()
                .expect("same key and request: every caller gets the first outcome"),
        );
    }
    let written: Vec<_> = outcomes.iter().filter(|o| !o.replayed).collect();
    assert_eq!(written.len(), 1, "exactly one append wrote");
    assert!(outcomes.iter().all(|o| o.positions == written[0].positions));
    db.settled_head(store.as_ref()).await;
    assert_eq!(store.read_all(Position::START, 100).await.unwrap().len(), 1);
    db.cleanup().await;
}

async fn invalid_appends_are_refused_and_write_nothing(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let license = stream("license", "lic_GGGGGGGGGG");
    let too_big = json!({ "blob": "x".repeat(EVENT_PAYLOAD_BYTES_MAX) });
    let mut bad_key = append(&license, 0, vec![event("a", json!({}))]);
    bad_key.idempotency = Some(Idempotency::for_request("k".repeat(256), &json!({})));
    let mut bad_schema = event("a", json!({}));
    bad_schema.schema_version = 0;
    let invalid = [
        append(&license, 0, vec![]),
        append(
            &license,
            0,
            (0..=APPEND_EVENTS_MAX)
                .map(|_| event("a", json!({})))
                .collect(),
        ),
        append(&license, 0, vec![event("a", too_big)]),
        append(&license, 0, vec![event("Not A Type", json!({}))]),
        append(&license, 0, vec![bad_schema]),
        append(&license, -1, vec![event("a", json!({}))]),
        bad_key,
    ];
    for request in invalid {
        let error = store.append(request).await.unwrap_err();
        assert!(matches!(error, StoreError::InvalidRequest(_)), "{error:?}");
    }
    assert!(store
        .read_all(Position::START, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(db.settled_head(store.as_ref()).await, Position::START);
    db.cleanup().await;
}

async fn reads_refuse_page_sizes_outside_the_bound_and_page_through_everything(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let license = stream("license", "lic_HHHHHHHHHH");
    for limit in [0, READ_PAGE_MAX + 1] {
        assert!(matches!(
            store.read_all(Position::START, limit).await,
            Err(StoreError::InvalidRequest(_))
        ));
        assert!(matches!(
            store.read_stream(&license, StreamVersion(1), limit).await,
            Err(StoreError::InvalidRequest(_))
        ));
    }
    let events = (0..APPEND_EVENTS_MAX)
        .map(|n| event("tick", json!({ "n": n })))
        .collect();
    store.append(append(&license, 0, events)).await.unwrap();
    let mut version = StreamVersion(1);
    let mut seen = 0;
    loop {
        let page = store.read_stream(&license, version, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 7);
        seen += page.len();
        version = last.stream_version.next();
    }
    assert_eq!(seen, APPEND_EVENTS_MAX);
    db.cleanup().await;
}

async fn a_settled_read_takes_exactly_the_range_below_the_head_it_names(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let license = stream("license", "lic_SSSSSSSSSS");
    let events = (0..10).map(|n| event("tick", json!({ "n": n }))).collect();
    store.append(append(&license, 0, events)).await.unwrap();
    let head = db.settled_head(store.as_ref()).await;
    let all = store.read_all(Position::START, 100).await.unwrap();
    let positions = |events: &[aggregates::log::RecordedEvent]| -> Vec<i64> {
        events.iter().map(|e| e.global_position.0).collect()
    };

    let whole = store
        .read_settled(Position::START, head, 100)
        .await
        .unwrap();
    assert_eq!(
        whole, all,
        "up to the head: every event, as the guarded read has them"
    );
    let first = all[0].global_position.0;
    let range = store
        .read_settled(Position(first + 2), Position(first + 5), 100)
        .await
        .unwrap();
    assert_eq!(
        positions(&range),
        vec![first + 3, first + 4, first + 5],
        "after the start, up to and with the end"
    );
    let limited = store.read_settled(Position::START, head, 4).await.unwrap();
    assert_eq!(
        positions(&limited),
        positions(&all[..4]),
        "at most the limit, from the start"
    );
    for limit in [0, READ_PAGE_MAX + 1] {
        assert!(matches!(
            store.read_settled(Position::START, head, limit).await,
            Err(StoreError::InvalidRequest(_))
        ));
    }
    db.cleanup().await;
}

fn rename_plan_field(mut payload: serde_json::Value) -> Result<serde_json::Value, String> {
    let plan = payload.get("plan").cloned().ok_or("no plan field")?;
    let fields = payload.as_object_mut().ok_or("payload is not an object")?;
    fields.remove("plan");
    fields.insert(String::from("plan_version"), plan);
    Ok(payload)
}

fn add_source_field(mut payload: serde_json::Value) -> Result<serde_json::Value, String> {
    payload["source"] = json!("upcast");
    Ok(payload)
}

async fn upcasters_apply_on_stream_reads_and_global_reads(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let license = stream("license", "lic_IIIIIIIIII");
    {
        let writer = db.open().await;
        let mut old = event("plan_changed", json!({ "plan": "pro" }));
        old.schema_version = 1;
        let mut current = event(
            "plan_changed",
            json!({ "plan_version": "relay", "source": "new" }),
        );
        current.schema_version = 3;
        writer
            .append(append(&license, 0, vec![old, current]))
            .await
            .unwrap();
    }
    let upcasters = Upcasters::default()
        .register("plan_changed", 1, rename_plan_field)
        .register("plan_changed", 2, add_source_field);
    let store = db.open_with(upcasters).await;
    let expected_first = json!({ "plan_version": "pro", "source": "upcast" });
    let by_stream = store
        .read_stream(&license, StreamVersion(1), 10)
        .await
        .unwrap();
    db.settled_head(store.as_ref()).await;
    let all = store.read_all(Position::START, 10).await.unwrap();
    for events in [&by_stream, &all] {
        assert_eq!(events[0].schema_version, 3);
        assert_eq!(events[0].payload, expected_first);
        assert_eq!(events[1].schema_version, 3, "a current event is left alone");
        assert_eq!(
            events[1].payload,
            json!({ "plan_version": "relay", "source": "new" })
        );
    }
    let stored = store.read_all_stored(Position::START, 10).await.unwrap();
    assert_eq!(
        stored[0].schema_version, 1,
        "the stored read is what was written"
    );
    assert_eq!(stored[0].payload, json!({ "plan": "pro" }));
    db.cleanup().await;
}

async fn a_failing_upcaster_is_an_error_not_a_silent_skip(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let license = stream("license", "lic_JJJJJJJJJJ");
    db.open()
        .await
        .append(append(&license, 0, vec![event("plan_changed", json!({}))]))
        .await
        .unwrap();
    let store = db
        .open_with(Upcasters::default().register("plan_changed", 1, rename_plan_field))
        .await;
    // On PostgreSQL a committed event is hidden while an older transaction anywhere in the
    // cluster may still run (other tests): wait until readers see it.
    db.settled_head(store.as_ref()).await;
    for result in [
        store.read_all(Position::START, 10).await,
        store.read_stream(&license, StreamVersion(1), 10).await,
    ] {
        match result {
            Err(StoreError::Upcast(error)) => assert_eq!(error.reason, "no plan field"),
            other => panic!("expected an upcast error, got {other:?}"),
        }
    }
    db.cleanup().await;
}

async fn the_log_refuses_updates_and_deletes(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    store
        .append(append(
            &stream("license", "lic_KKKKKKKKKK"),
            0,
            vec![event("a", json!({"v": 1}))],
        ))
        .await
        .unwrap();
    let update = db
        .try_execute("UPDATE events SET event_type = 'b'")
        .await
        .unwrap_err();
    assert!(update.to_string().contains("append-only"), "{update}");
    let delete = db.try_execute("DELETE FROM events").await.unwrap_err();
    assert!(delete.to_string().contains("append-only"), "{delete}");
    db.settled_head(store.as_ref()).await;
    assert_eq!(
        store.read_all(Position::START, 10).await.unwrap()[0].event_type,
        "a"
    );
    db.cleanup().await;
}

fn part(stream_id: &str, expected: i64, count: usize) -> StreamAppend {
    StreamAppend {
        stream: stream("license", stream_id),
        expected_version: StreamVersion(expected),
        events: (0..count)
            .map(|n| event("touched", json!({ "n": n })))
            .collect(),
    }
}

fn batch(appends: Vec<StreamAppend>) -> AppendBatch {
    AppendBatch {
        appends,
        metadata: metadata(),
        idempotency: None,
    }
}

async fn an_atomic_append_to_several_streams_writes_all_of_them_contiguously(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    store
        .append(append(
            &stream("license", "lic_B1"),
            0,
            vec![event("a", json!({}))],
        ))
        .await
        .unwrap();
    let outcome = store
        .append_batch(batch(vec![part("lic_B1", 1, 2), part("lic_B2", 0, 3)]))
        .await
        .unwrap();
    assert_eq!(outcome.outcomes.len(), 2);
    assert_eq!(outcome.outcomes[0].stream_version, StreamVersion(3));
    assert_eq!(outcome.outcomes[1].stream_version, StreamVersion(3));
    let positions: Vec<_> = outcome
        .outcomes
        .iter()
        .flat_map(|o| o.positions.clone())
        .collect();
    assert!(
        positions.windows(2).all(|p| p[1].0 == p[0].0 + 1),
        "contiguous in batch order: {positions:?}"
    );
    assert_eq!(outcome.last_position(), *positions.last().unwrap());
    db.settled_head(store.as_ref()).await;
    assert_eq!(store.read_all(Position::START, 100).await.unwrap().len(), 6);
    db.cleanup().await;
}

async fn a_conflict_on_any_stream_of_a_batch_writes_none_of_it(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    store
        .append(append(
            &stream("license", "lic_C2"),
            0,
            vec![event("a", json!({}))],
        ))
        .await
        .unwrap();
    let error = store
        .append_batch(batch(vec![part("lic_C1", 0, 1), part("lic_C2", 0, 1)]))
        .await
        .unwrap_err();
    match error {
        StoreError::WrongExpectedVersion {
            stream: conflicted,
            actual,
            ..
        } => {
            assert_eq!(conflicted, stream("license", "lic_C2"));
            assert_eq!(actual, StreamVersion(1));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    db.settled_head(store.as_ref()).await;
    assert_eq!(
        store.read_all(Position::START, 100).await.unwrap().len(),
        1,
        "the first stream got nothing"
    );
    db.cleanup().await;
}

async fn a_batch_must_name_each_stream_once_and_stay_within_its_bounds(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let too_many = (0..=APPEND_STREAMS_MAX)
        .map(|n| part(&format!("lic_M{n}"), 0, 1))
        .collect();
    let refused = [
        batch(vec![]),
        batch(vec![part("lic_D1", 0, 1), part("lic_D1", 1, 1)]),
        batch(too_many),
        batch(vec![part("lic_D1", 0, 1), part("lic_D2", 0, 0)]),
        batch(vec![
            part("lic_D1", 0, APPEND_EVENTS_MAX),
            part("lic_D2", 0, 1),
        ]),
    ];
    for request in refused {
        assert!(matches!(
            store.append_batch(request).await,
            Err(StoreError::InvalidRequest(_))
        ));
    }
    assert!(store
        .read_all(Position::START, 10)
        .await
        .unwrap()
        .is_empty());
    db.cleanup().await;
}

async fn a_replayed_batch_answers_with_every_streams_first_outcome(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let keyed_batch = || AppendBatch {
        idempotency: Some(Idempotency::for_request(
            "stripe:evt_batch",
            &json!({"id": "evt_batch"}),
        )),
        ..batch(vec![part("lic_E1", 0, 1), part("lic_E2", 0, 2)])
    };
    let first = store.append_batch(keyed_batch()).await.unwrap();
    let again = store.append_batch(keyed_batch()).await.unwrap();
    assert!(!first.replayed() && again.replayed());
    let positions = |o: &pulse_account::engine::store::BatchOutcome| {
        o.outcomes
            .iter()
            .map(|x| x.positions.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(positions(&again), positions(&first));
    db.settled_head(store.as_ref()).await;
    assert_eq!(store.read_all(Position::START, 10).await.unwrap().len(), 3);
    db.cleanup().await;
}
