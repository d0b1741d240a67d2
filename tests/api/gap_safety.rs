//! Gap safety on PostgreSQL: a transaction that took an earlier position but commits later is never
//! skipped by a reader that has already seen a later commit; a group commit overtaken by another
//! process's writer writes nothing of the group and is appended one by one. (SQLite serialises writers, so there
//! position order is commit order by construction.)

mod postgres {
    use crate::helpers::{append, event, stream, Backend, TestDatabase};
    use aggregates::log::{Position, StreamVersion};
    use pulse_account::engine::store::{AppendBatch, AppendRequest, Idempotency, StoreError};
    use serde_json::json;
    use sqlx::Connection;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Waits until `sessions` sessions of this database are blocked on a lock.
    async fn wait_until_blocked(db: &TestDatabase, sessions: i64) {
        let mut monitor = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let blocked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut monitor)
            .await
            .unwrap();
            if blocked >= sessions {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{blocked} of {sessions} appends blocked"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_late_commit_with_an_earlier_position_is_delivered_not_skipped() {
        let db = TestDatabase::new(Backend::Postgres).await;
        let store = db.open().await;

        // A session that holds a lock the first append needs *after* it has inserted its events:
        // LOCK TABLE takes no transaction id, so the only running writer is the first append.
        let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql("BEGIN; LOCK TABLE idempotency_keys IN SHARE MODE")
            .execute(&mut blocker)
            .await
            .unwrap();

        let early = AppendRequest {
            idempotency: Some(Idempotency::for_request("gap:t1", &json!({}))),
            ..append(
                &stream("license", "lic_T1T1T1T1T1"),
                0,
                vec![event("t1", json!({}))],
            )
        };
        let first = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.append(early).await })
        };
        wait_until_blocked(&db, 1).await;

        // The second append takes a later position and commits first.
        let second = store
            .append(append(
                &stream("license", "lic_T2T2T2T2T2"),
                0,
                vec![event("t2", json!({}))],
            ))
            .await
            .unwrap();

        // A reader running now must stop before the open transaction's position.
        let seen = store.read_all(Position::START, 100).await.unwrap();
        assert!(
            seen.is_empty(),
            "the reader passed an uncommitted earlier position: {seen:?}"
        );
        assert_eq!(store.head_position().await.unwrap(), Position::START);
        let checkpoint = seen.last().map_or(Position::START, |e| e.global_position);

        sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();
        let first = first
            .await
            .unwrap()
            .expect("the first append commits once unblocked");
        assert!(
            first.positions[0] < second.positions[0],
            "the first append took the earlier position"
        );

        db.settled_head(store.as_ref()).await;
        let delivered = store.read_all(checkpoint, 100).await.unwrap();
        let positions: Vec<_> = delivered.iter().map(|e| e.global_position).collect();
        assert_eq!(
            positions,
            vec![first.positions[0], second.positions[0]],
            "nothing skipped, in order"
        );
        drop(store);
        db.cleanup().await;
    }

    /// Asserts that no session holds this database's append lock: a writer that lost a race
    /// released it, though its pooled session stays open. (Advisory locks are per database; other
    /// tests' databases hold theirs.)
    async fn assert_append_lock_free(db: &TestDatabase) {
        let mut monitor = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let holders: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = 8103502347400866919",
        )
        .fetch_one(&mut monitor)
        .await
        .unwrap();
        assert_eq!(holders, 0, "a losing writer still holds the append lock");
    }

    /// Holds the append lock (the key `append_batch` takes) from another session.
    async fn hold_append_lock(db: &TestDatabase) -> sqlx::PgConnection {
        let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("SELECT pg_advisory_lock(8103502347400866919)")
            .execute(&mut holder)
            .await
            .unwrap();
        holder
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_writer_that_loses_a_race_after_the_checks_writes_nothing_and_frees_the_lock() {
        let db = TestDatabase::new(Backend::Postgres).await;
        let store = db.open().await;
        let spawn = |request: AppendRequest| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.append(request).await })
        };

        // Two writers at the same version both pass the version check, then wait for the lock.
        let mut holder = hold_append_lock(&db).await;
        let contested = stream("license", "lic_RACERACE01");
        let writers = [
            spawn(append(&contested, 0, vec![event("first", json!({}))])),
            spawn(append(&contested, 0, vec![event("second", json!({}))])),
        ];
        wait_until_blocked(&db, 2).await;
        drop(holder);
        let mut won = 0;
        for writer in writers {
            match writer.await.unwrap() {
                Ok(_) => won += 1,
                Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                    assert_eq!(actual, StreamVersion(1));
                }
                Err(other) => panic!("the loser got {other:?}, not a version conflict"),
            }
        }
        assert_eq!(won, 1, "exactly one writer of the version");
        assert_append_lock_free(&db).await;

        // Two writers with one key on different streams both pass the key check.
        holder = hold_append_lock(&db).await;
        let keyed = |id: &str| AppendRequest {
            idempotency: Some(Idempotency::for_request("race:key", &json!({"n": 1}))),
            ..append(
                &stream("receipt", id),
                0,
                vec![event("received", json!({}))],
            )
        };
        let writers = [spawn(keyed("r_race_1")), spawn(keyed("r_race_2"))];
        wait_until_blocked(&db, 2).await;
        drop(holder);
        let mut outcomes = Vec::new();
        for writer in writers {
            outcomes.push(
                writer
                    .await
                    .unwrap()
                    .expect("the loser answers the winner's outcome"),
            );
        }
        assert_eq!(outcomes.iter().filter(|o| !o.replayed).count(), 1);
        assert_eq!(outcomes[0].positions, outcomes[1].positions);
        assert_append_lock_free(&db).await;

        let next = store
            .append(append(
                &stream("license", "lic_RACERACE02"),
                0,
                vec![event("after", json!({}))],
            ))
            .await
            .unwrap();
        assert_eq!(db.settled_head(store.as_ref()).await, next.positions[0]);
        let log = store.read_all(Position::START, 100).await.unwrap();
        assert_eq!(log.len(), 3, "one event of each race, and the last append");
        drop(store);
        db.cleanup().await;
    }

    fn touch(stream_id: &str, expected: i64) -> AppendBatch {
        append(
            &stream("license", stream_id),
            expected,
            vec![event("touched", json!({ "at": expected }))],
        )
        .into()
    }

    /// A writer of another process takes the version a grouped append was about to write, after the
    /// group checked it: the group's statement fails on the unique constraint and writes nothing, and
    /// its appends are made one by one, so only the overtaken one is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_group_overtaken_by_another_process_is_appended_one_by_one() {
        let db = TestDatabase::new(Backend::Postgres).await;
        let store = db.open().await;
        let before = store.append_groups();
        let slots = before.in_flight_max;

        // Every commit slot holds a keyed append that has inserted its events and waits to record
        // its key.
        let mut keys_lock = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql("BEGIN; LOCK TABLE idempotency_keys IN SHARE MODE")
            .execute(&mut keys_lock)
            .await
            .unwrap();
        let mut plugs = Vec::new();
        for n in 0..slots {
            let store = Arc::clone(&store);
            let mut plug = touch(&format!("lic_OPLUG{n}"), 0);
            plug.idempotency = Some(Idempotency::for_request(format!("plug:{n}"), &n));
            plugs.push(tokio::spawn(async move { store.append_batch(plug).await }));
            wait_until_blocked(&db, n as i64 + 1).await;
        }
        // These queue for a slot, and will be one group.
        let group = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                futures_util::future::join_all(
                    ["lic_OTAKEN", "lic_O1", "lic_O2"]
                        .into_iter()
                        .map(|id| store.append_batch(touch(id, 0))),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Another process asks to keep inserts out; it is granted once the plugs commit, before
        // the group inserts, so the group checks its versions, then waits.
        let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let other_lock = tokio::spawn(async move {
            for statement in ["BEGIN", "LOCK TABLE events IN SHARE MODE"] {
                sqlx::query(statement).execute(&mut other).await.unwrap();
            }
            other
        });
        wait_until_blocked(&db, slots as i64 + 1).await;
        sqlx::raw_sql("COMMIT")
            .execute(&mut keys_lock)
            .await
            .unwrap();
        for plug in plugs {
            plug.await.unwrap().expect("a plug is written");
        }
        let mut other = other_lock.await.unwrap();
        wait_until_blocked(&db, 1).await;
        // The other process writes the version the group's first append checked.
        sqlx::raw_sql(
            "INSERT INTO events (stream_type, stream_id, stream_version, event_id, event_type, \
                 schema_version, payload, metadata, recorded_at) \
             VALUES ('license', 'lic_OTAKEN', 1, gen_random_uuid(), 'touched', 1, '{}', \
                 '{\"actor\": \"other\", \"effective_at\": \"2026-04-01T12:00:00Z\"}', now()); \
             COMMIT",
        )
        .execute(&mut other)
        .await
        .unwrap();
        let answers = group.await.unwrap();
        assert!(
            matches!(&answers[0], Err(StoreError::WrongExpectedVersion { actual, .. }) if *actual == StreamVersion(1)),
            "{:?}",
            answers[0]
        );
        assert!(answers[1].is_ok() && answers[2].is_ok(), "{answers:?}");
        let after = store.append_groups();
        assert_eq!(
            (after.groups - before.groups, after.appends - before.appends),
            (slots as u64 + 1, slots as u64 + 3),
            "the plugs alone, then the three together"
        );
        assert_append_lock_free(&db).await;
        db.settled_head(store.as_ref()).await;
        let streams: Vec<String> = store
            .read_all(Position::START, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.stream.stream_id().to_owned())
            .collect();
        assert_eq!(streams.len(), slots + 3);
        assert_eq!(streams[slots..], ["lic_OTAKEN", "lic_O1", "lic_O2"]);
        drop(store);
        db.cleanup().await;
    }
}
