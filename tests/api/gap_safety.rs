//! Gap safety on PostgreSQL: a transaction that took an earlier position but commits later is never
//! skipped by a reader that has already seen a later commit. (SQLite serialises writers, so there
//! position order is commit order by construction.)

mod postgres {
    use crate::helpers::{append, event, stream, Backend, TestDatabase};
    use aggregates::log::Position;
    use pulse_account::store::{AppendRequest, Idempotency};
    use serde_json::json;
    use sqlx::Connection;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Waits until some session of this database is blocked on a lock.
    async fn wait_until_blocked(db: &TestDatabase) {
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
            if blocked > 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the first append never blocked");
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
        wait_until_blocked(&db).await;

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
}
