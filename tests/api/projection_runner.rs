//! The projection runner: folding the log into documents, crash consistency, rebuilds into a new
//! generation, a single runner across processes, read-your-writes, on both stores.

use crate::helpers::{append, event, stream, Backend, TestDatabase};
use aggregates::log::{Position, RecordedEvent};
use projections::stream_index::StreamIndex;
use projections::FoldError;
use pulse_account::engine::projection::runner::{Runner, RunnerConfig, RunnerError, Step};
use pulse_account::engine::projection::{
    active_checkpoint, wait_for_position, ProjectionFold, Typed,
};
use pulse_account::engine::store::{DocumentWrite, GenerationStatus, Store, StoreError};
use pulse_account::metrics::Metrics;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

crate::on_both_stores!(
    the_runner_folds_every_stream_into_the_index_and_checkpoints_at_the_head,
    a_failure_mid_batch_leaves_checkpoint_and_documents_consistent_and_the_runner_resumes,
    a_rebuild_switches_readers_to_a_fresh_generation_and_the_live_runner_follows_it,
    a_live_runner_never_folds_documents_of_a_generation_a_rebuild_retired,
    a_rebuild_folds_each_batch_onto_what_the_batches_still_being_written_left,
    a_rebuild_stops_at_a_failed_write_reporting_only_what_committed,
    a_rebuild_reads_every_event_across_the_unused_positions_of_the_log,
    exactly_one_runner_leads_and_another_takes_over_when_it_dies,
    a_read_can_wait_for_its_own_write_within_a_bound,
    an_append_wakes_an_idle_runner_long_before_its_poll,
);

fn fold() -> Arc<dyn ProjectionFold> {
    Arc::new(Typed::<StreamIndex>::new())
}

fn config(batch_len: usize) -> RunnerConfig {
    RunnerConfig {
        batch_len,
        poll_interval: Duration::from_millis(50),
        leader_retry: Duration::from_millis(100),
        error_backoff: Duration::from_millis(50),
    }
}

fn runner(store: &Arc<dyn Store>, batch_len: usize, metrics: &Arc<Metrics>) -> Runner {
    Runner::new(
        Arc::clone(store),
        fold(),
        config(batch_len),
        Arc::clone(metrics),
    )
    .unwrap()
}

/// Appends `per_stream` events to each of `streams` license streams, interleaved round-robin.
async fn interleaved_history(store: &Arc<dyn Store>, streams: usize, per_stream: i64) {
    for version in 0..per_stream {
        for n in 0..streams {
            let license = stream("license", &format!("lic_{n:010}"));
            store
                .append(append(
                    &license,
                    version,
                    vec![event("touched", json!({ "n": n }))],
                ))
                .await
                .unwrap();
        }
    }
}

async fn all_events(db: &TestDatabase, store: &Arc<dyn Store>) -> Vec<RecordedEvent> {
    db.settled_head(store.as_ref()).await;
    store.read_all(Position::START, 1000).await.unwrap()
}

/// The documents a pure fold of `events` produces, sorted by key.
fn folded(events: &[RecordedEvent]) -> Vec<(String, serde_json::Value)> {
    let mut documents: Vec<_> = fold()
        .fold_batch(events, HashMap::new())
        .unwrap()
        .into_iter()
        .map(|write| (write.key, write.body.expect("the index never deletes")))
        .collect();
    documents.sort_by(|a, b| a.0.cmp(&b.0));
    documents
}

/// A projection of one counter per stream: `touched` counts, `removed` deletes the document (the
/// next `touched` starts it again at 1). Every event changes the document the one before changed.
struct Tally;

impl ProjectionFold for Tally {
    fn name(&self) -> &'static str {
        "tally"
    }

    fn document_keys(&self, event: &RecordedEvent) -> Vec<String> {
        vec![event.stream.to_string()]
    }

    fn fold_batch(
        &self,
        events: &[RecordedEvent],
        mut loaded: HashMap<String, serde_json::Value>,
    ) -> Result<Vec<DocumentWrite>, FoldError> {
        let mut changed = HashMap::new();
        for event in events {
            let key = event.stream.to_string();
            match event.event_type.as_str() {
                "removed" => {
                    loaded.remove(&key);
                }
                _ => {
                    let count = loaded
                        .get(&key)
                        .map_or(0, |body| body["count"].as_i64().unwrap());
                    loaded.insert(key.clone(), json!({ "count": count + 1 }));
                }
            }
            changed.insert(key, event.global_position);
        }
        Ok(changed
            .into_iter()
            .map(|(key, position)| DocumentWrite {
                body: loaded.get(&key).cloned(),
                key,
                position,
            })
            .collect())
    }
}

fn tally_runner(store: &Arc<dyn Store>, batch_len: usize) -> Runner {
    Runner::new(
        Arc::clone(store),
        Arc::new(Tally),
        config(batch_len),
        Arc::new(Metrics::default()),
    )
    .unwrap()
}

async fn run_to_idle(runner: &Runner, store: &Arc<dyn Store>) -> Result<Position, RunnerError> {
    store.ensure_projection("stream_index").await?;
    let generation = store.projection_generations("stream_index").await?[0].generation;
    let mut checkpoint = active_checkpoint(store.as_ref(), "stream_index").await?;
    while let Step::Advanced { to, .. } = runner.step(generation, checkpoint).await? {
        checkpoint = to;
    }
    Ok(checkpoint)
}

async fn the_runner_folds_every_stream_into_the_index_and_checkpoints_at_the_head(
    backend: Backend,
) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    interleaved_history(&store, 3, 4).await;
    let metrics = Arc::new(Metrics::default());
    let checkpoint = run_to_idle(&runner(&store, 5, &metrics), &store)
        .await
        .unwrap();
    assert_eq!(checkpoint, db.settled_head(store.as_ref()).await);
    assert_eq!(
        active_checkpoint(store.as_ref(), "stream_index")
            .await
            .unwrap(),
        checkpoint
    );
    let summary = store
        .read_document("stream_index", "license/lic_0000000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary["version"], json!(4));
    assert_eq!(summary["last_event_type"], json!("touched"));
    let license = aggregates::log::StreamName::parse("license", "lic_0000000001").unwrap();
    let (_, folded_up_to) = store
        .read_document_at("stream_index", "license/lic_0000000001")
        .await
        .unwrap()
        .unwrap();
    let newest = store
        .read_stream(&license, aggregates::log::StreamVersion(1), 100)
        .await
        .unwrap()
        .last()
        .unwrap()
        .global_position;
    assert_eq!(
        folded_up_to, newest,
        "a document says which event it folded last: here its stream's newest"
    );
    let current = |stream_id: &'static str| {
        let store = Arc::clone(&store);
        async move {
            let stream = aggregates::log::StreamName::parse("license", stream_id).unwrap();
            store
                .read_current_document("stream_index", "license/lic_0000000001", &stream)
                .await
                .unwrap()
        }
    };
    assert_eq!(current("lic_0000000001").await, Some(summary.clone()));
    assert_eq!(
        current("lic_0000000002").await,
        None,
        "folded up to another stream's newest event"
    );
    let documents = db.active_documents("stream_index").await;
    assert_eq!(documents, folded(&all_events(&db, &store).await));

    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_documents("stream_index", after.as_deref(), 2)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        after = page.last().map(|(key, _)| key.clone());
        paged.extend(page);
        if after.is_none() {
            break;
        }
    }
    assert_eq!(
        paged, documents,
        "paging in key order lists every document once"
    );
    assert!(store.list_documents("stream_index", None, 0).await.is_err());
    store
        .append(append(&license, 4, vec![event("unfolded", json!({}))]))
        .await
        .unwrap();
    assert_eq!(
        current("lic_0000000001").await,
        None,
        "a document behind its stream is not current"
    );
    db.cleanup().await;
}

async fn fail_writes_of(db: &TestDatabase, key: &str) {
    let sql = match db.backend {
        Backend::Sqlite => format!(
            "CREATE TRIGGER injected_insert BEFORE INSERT ON projection_documents WHEN NEW.doc_key = '{key}' \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END; \
             CREATE TRIGGER injected_update BEFORE UPDATE ON projection_documents WHEN NEW.doc_key = '{key}' \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        ),
        Backend::Postgres => format!(
            "CREATE FUNCTION injected() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.doc_key = '{key}' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER injected BEFORE INSERT OR UPDATE ON projection_documents \
                 FOR EACH ROW EXECUTE FUNCTION injected();"
        ),
    };
    db.execute(&sql).await;
}

async fn heal(db: &TestDatabase) {
    let sql = match db.backend {
        Backend::Sqlite => "DROP TRIGGER injected_insert; DROP TRIGGER injected_update;",
        Backend::Postgres => {
            "DROP TRIGGER injected ON projection_documents; DROP FUNCTION injected();"
        }
    };
    db.execute(sql).await;
}

async fn a_failure_mid_batch_leaves_checkpoint_and_documents_consistent_and_the_runner_resumes(
    backend: Backend,
) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    interleaved_history(&store, 10, 3).await;
    let events = all_events(&db, &store).await;
    // The 8th stream's first event is the 8th event: the batch of 3 holding it is the third.
    fail_writes_of(&db, "license/lic_0000000007").await;
    let metrics = Arc::new(Metrics::default());
    let error = run_to_idle(&runner(&store, 3, &metrics), &store)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("database error"), "{error}");

    let checkpoint = active_checkpoint(store.as_ref(), "stream_index")
        .await
        .unwrap();
    assert_eq!(
        checkpoint, events[5].global_position,
        "the two batches before the failure committed"
    );
    let folded_up_to_checkpoint: Vec<_> = events
        .iter()
        .take_while(|e| e.global_position <= checkpoint)
        .cloned()
        .collect();
    assert_eq!(
        db.active_documents("stream_index").await,
        folded(&folded_up_to_checkpoint),
        "the read model holds exactly the events up to its checkpoint"
    );

    // The live runner keeps failing on the same batch without moving, then resumes once healed.
    let (stop, stopped) = watch::channel(false);
    let live = tokio::spawn(runner(&store, 3, &metrics).run(stopped));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics
        .render(store.as_ref(), &[fold()])
        .await
        .unwrap()
        .contains("errors_total{projection=\"stream_index\"} 2")
    {
        assert!(
            Instant::now() < deadline,
            "the runner did not retry the failing batch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        active_checkpoint(store.as_ref(), "stream_index")
            .await
            .unwrap(),
        checkpoint
    );
    heal(&db).await;
    let head = db.settled_head(store.as_ref()).await;
    assert!(
        wait_for_position(store.as_ref(), "stream_index", head, Duration::from_secs(5))
            .await
            .unwrap()
    );
    let resumed = db.active_documents("stream_index").await;
    assert_eq!(
        resumed,
        folded(&events),
        "after resuming, the read model is the fold of the whole log"
    );
    stop.send(true).unwrap();
    live.await.unwrap();

    let report = runner(&store, 100, &metrics)
        .rebuild(&mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.events, events.len() as u64);
    assert_eq!(
        db.active_documents("stream_index").await,
        resumed,
        "identical to a full rebuild"
    );
    db.cleanup().await;
}

async fn a_rebuild_switches_readers_to_a_fresh_generation_and_the_live_runner_follows_it(
    backend: Backend,
) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    interleaved_history(&store, 4, 5).await;
    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = watch::channel(false);
    let live = tokio::spawn(runner(&store, 7, &metrics).run(stopped));
    let head = db.settled_head(store.as_ref()).await;
    assert!(
        wait_for_position(store.as_ref(), "stream_index", head, Duration::from_secs(5))
            .await
            .unwrap()
    );
    let before = db.active_documents("stream_index").await;

    let mut progress = Vec::new();
    let report = runner(&store, 6, &metrics)
        .rebuild(&mut |checkpoint, head| progress.push((checkpoint, head)))
        .await
        .unwrap();
    assert_eq!(report.generation, 2);
    assert_eq!(report.checkpoint, head);
    assert_eq!(progress.len(), 4, "20 events in batches of 6");
    assert_eq!(progress.last(), Some(&(head, head)));
    let generations = store.projection_generations("stream_index").await.unwrap();
    assert_eq!(generations.len(), 1, "the replaced generation is gone");
    assert_eq!(
        (generations[0].generation, generations[0].status),
        (2, GenerationStatus::Active)
    );
    assert_eq!(db.active_documents("stream_index").await, before);

    store
        .append(append(
            &stream("license", "lic_0000000000"),
            5,
            vec![event("after_rebuild", json!({}))],
        ))
        .await
        .unwrap();
    let head = db.settled_head(store.as_ref()).await;
    assert!(
        wait_for_position(store.as_ref(), "stream_index", head, Duration::from_secs(5))
            .await
            .unwrap(),
        "the live runner follows the new generation"
    );
    let summary = store
        .read_document("stream_index", "license/lic_0000000000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary["last_event_type"], json!("after_rebuild"));
    stop.send(true).unwrap();
    live.await.unwrap();
    db.cleanup().await;
}

async fn a_live_runner_never_folds_documents_of_a_generation_a_rebuild_retired(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = watch::channel(false);
    let live = tokio::spawn(runner(&store, 7, &metrics).run(stopped));
    // Another process rebuilds, again and again, while one long stream grows: each switch
    // retires the generation the live runner is folding, often between its load and its commit.
    let rebuilder_store = match backend {
        Backend::Postgres => db.open().await,
        Backend::Sqlite => Arc::clone(&store),
    };
    let rebuilds = tokio::spawn(async move {
        let rebuild_metrics = Arc::new(Metrics::default());
        for _ in 0..5 {
            runner(&rebuilder_store, 50, &rebuild_metrics)
                .rebuild(&mut |_, _| {})
                .await
                .expect("a rebuild completes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let license = stream("license", "lic_0000000007");
    for version in 0..300 {
        store
            .append(append(&license, version, vec![event("touched", json!({}))]))
            .await
            .unwrap();
    }
    rebuilds.await.unwrap();
    let head = db.settled_head(store.as_ref()).await;
    assert!(wait_for_position(
        store.as_ref(),
        "stream_index",
        head,
        Duration::from_secs(10)
    )
    .await
    .unwrap());
    let rendered = metrics.render(store.as_ref(), &[fold()]).await.unwrap();
    assert!(
        rendered.contains("pulse_account_projection_errors_total{projection=\"stream_index\"} 0"),
        "the live runner failed a batch: {rendered}"
    );
    let summary = store
        .read_document("stream_index", "license/lic_0000000007")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary["version"], json!(300), "{summary}");

    // What the runner relies on: the documents of a retired generation are never read as empty.
    let retired = store
        .load_documents("stream_index", 1, &[String::from("license/lic_0000000007")])
        .await;
    assert!(
        matches!(
            retired,
            Err(StoreError::GenerationRetired { generation: 1, .. })
        ),
        "{retired:?}"
    );
    stop.send(true).unwrap();
    live.await.unwrap();
    db.cleanup().await;
}

async fn a_rebuild_folds_each_batch_onto_what_the_batches_still_being_written_left(
    backend: Backend,
) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    // Two streams: one counts on, one is removed and started again every third event, so
    // neighbouring batches keep changing (and deleting) the same documents.
    let (counted, restarted) = (
        stream("license", "lic_0000000001"),
        stream("license", "lic_0000000002"),
    );
    for version in 0..30 {
        let kind = if version % 3 == 2 {
            "removed"
        } else {
            "touched"
        };
        for (target, kind) in [(&counted, "touched"), (&restarted, kind)] {
            store
                .append(append(target, version, vec![event(kind, json!({}))]))
                .await
                .unwrap();
        }
    }
    let expected = vec![(counted.to_string(), json!({ "count": 30 }))];
    for batch_len in [1, 2, 3, 7] {
        let report = tally_runner(&store, batch_len)
            .rebuild(&mut |_, _| {})
            .await
            .unwrap();
        assert_eq!(report.events, 60);
        assert_eq!(
            db.active_documents("tally").await,
            expected,
            "batches of {batch_len}: the count of every touch, and the removed stream gone"
        );
    }
    store
        .append(append(&restarted, 30, vec![event("touched", json!({}))]))
        .await
        .unwrap();
    tally_runner(&store, 1)
        .rebuild(&mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        db.active_documents("tally").await,
        vec![
            (counted.to_string(), json!({ "count": 30 })),
            (restarted.to_string(), json!({ "count": 1 })),
        ],
        "a touch after the last removal starts the count again"
    );
    db.cleanup().await;
}

async fn a_rebuild_stops_at_a_failed_write_reporting_only_what_committed(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    interleaved_history(&store, 10, 3).await;
    let events = all_events(&db, &store).await;
    let metrics = Arc::new(Metrics::default());
    let live = runner(&store, 100, &metrics)
        .rebuild(&mut |_, _| {})
        .await
        .unwrap();
    let before = db.active_documents("stream_index").await;

    // The 8th event's batch of 3 is the third; the fold has gone past it by the time it fails.
    fail_writes_of(&db, "license/lic_0000000007").await;
    let mut progress = Vec::new();
    let error = runner(&store, 3, &metrics)
        .rebuild(&mut |checkpoint, _| progress.push(checkpoint))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("database error"), "{error}");
    assert_eq!(
        progress,
        vec![events[2].global_position, events[5].global_position],
        "progress names the two batches that committed, and no later one"
    );
    let generations = store.projection_generations("stream_index").await.unwrap();
    let active: Vec<_> = generations
        .iter()
        .filter(|g| g.status == GenerationStatus::Active)
        .map(|g| g.generation)
        .collect();
    assert_eq!(
        active,
        vec![live.generation],
        "the failed rebuild is never made active"
    );
    assert_eq!(db.active_documents("stream_index").await, before);

    heal(&db).await;
    let report = runner(&store, 3, &metrics)
        .rebuild(&mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.events, events.len() as u64);
    assert_eq!(db.active_documents("stream_index").await, before);
    db.cleanup().await;
}

/// Leaves the next `positions` positions of the log unused, as appends that failed after taking
/// their positions do.
async fn skip_positions(db: &TestDatabase, positions: i64) {
    let sql = match db.backend {
        Backend::Sqlite => {
            format!("UPDATE sqlite_sequence SET seq = seq + {positions} WHERE name = 'events'")
        }
        Backend::Postgres => format!(
            "SELECT nextval(pg_get_serial_sequence('events', 'global_position')) \
             FROM generate_series(1, {positions})"
        ),
    };
    db.execute(&sql).await;
}

async fn a_rebuild_reads_every_event_across_the_unused_positions_of_the_log(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    // Runs of events with unused positions after each: below the head, the rebuild's reader reads
    // pages of positions at once, and some of them hold fewer events than a batch, or none.
    let mut appended = 0;
    for (run, unused) in [(4, 1), (2, 7), (5, 2), (3, 3)] {
        for _ in 0..run {
            let license = stream("license", &format!("lic_{appended:010}"));
            store
                .append(append(&license, 0, vec![event("touched", json!({}))]))
                .await
                .unwrap();
            appended += 1;
        }
        skip_positions(&db, unused).await;
    }
    let head = db.settled_head(store.as_ref()).await;
    let metrics = Arc::new(Metrics::default());
    assert_eq!(
        run_to_idle(&runner(&store, 100, &metrics), &store)
            .await
            .unwrap(),
        head
    );
    let live = db.active_documents("stream_index").await;
    assert_eq!(live.len(), appended);
    for batch_len in [1, 2, 3, 7, 100] {
        let report = runner(&store, batch_len, &metrics)
            .rebuild(&mut |_, _| {})
            .await
            .unwrap();
        assert_eq!(
            (report.events, report.checkpoint),
            (appended as u64, head),
            "batches of {batch_len}: every event, up to the head"
        );
        assert_eq!(
            db.active_documents("stream_index").await,
            live,
            "batches of {batch_len}: the documents the live runner folded"
        );
    }
    db.cleanup().await;
}

async fn leads(metrics: &Metrics, store: &Arc<dyn Store>) -> bool {
    metrics
        .render(store.as_ref(), &[fold()])
        .await
        .unwrap()
        .contains("pulse_account_projection_leader{projection=\"stream_index\"} 1")
}

async fn exactly_one_runner_leads_and_another_takes_over_when_it_dies(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store_a = db.open().await;
    // On PostgreSQL the second runner has its own pool, as another process would; SQLite's
    // leadership is in-process, so there both runners share the one store of the one process.
    let store_b = match backend {
        Backend::Postgres => db.open().await,
        Backend::Sqlite => Arc::clone(&store_a),
    };
    let (metrics_a, metrics_b) = (Arc::new(Metrics::default()), Arc::new(Metrics::default()));
    let (_stop, stopped) = watch::channel(false);
    let task_a = tokio::spawn(runner(&store_a, 10, &metrics_a).run(stopped.clone()));
    let task_b = tokio::spawn(runner(&store_b, 10, &metrics_b).run(stopped.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(leads(&metrics_a, &store_a).await || leads(&metrics_b, &store_b).await) {
        assert!(Instant::now() < deadline, "nobody became the runner");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..10 {
        let (a, b) = (
            leads(&metrics_a, &store_a).await,
            leads(&metrics_b, &store_b).await,
        );
        assert!(a != b, "exactly one runner leads (a: {a}, b: {b})");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    interleaved_history(&store_a, 2, 2).await;
    let head = db.settled_head(store_a.as_ref()).await;
    assert!(wait_for_position(
        store_a.as_ref(),
        "stream_index",
        head,
        Duration::from_secs(5)
    )
    .await
    .unwrap());

    let a_led = leads(&metrics_a, &store_a).await;
    let (leader, survivor, survivor_store, survivor_metrics) = if a_led {
        (task_a, task_b, &store_b, &metrics_b)
    } else {
        (task_b, task_a, &store_a, &metrics_a)
    };
    leader.abort();
    let _ = leader.await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !leads(survivor_metrics, survivor_store).await {
        assert!(Instant::now() < deadline, "the survivor did not take over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    survivor_store
        .append(append(
            &stream("license", "lic_0000000000"),
            2,
            vec![event("after_takeover", json!({}))],
        ))
        .await
        .unwrap();
    let head = db.settled_head(survivor_store.as_ref()).await;
    assert!(wait_for_position(
        survivor_store.as_ref(),
        "stream_index",
        head,
        Duration::from_secs(5)
    )
    .await
    .unwrap());
    survivor.abort();
    let _ = survivor.await;
    drop((store_a, store_b));
    db.cleanup().await;
}

async fn a_read_can_wait_for_its_own_write_within_a_bound(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    store.ensure_projection("stream_index").await.unwrap();
    let written = store
        .append(append(
            &stream("handoff", "cph_0000000001"),
            0,
            vec![event("handoff_created", json!({}))],
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let reached = wait_for_position(
        store.as_ref(),
        "stream_index",
        written.last_position(),
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    assert!(!reached, "no runner is running, so the wait gives up");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the wait is bounded"
    );

    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = watch::channel(false);
    let live = tokio::spawn(runner(&store, 10, &metrics).run(stopped));
    let reached = wait_for_position(
        store.as_ref(),
        "stream_index",
        written.last_position(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(reached);
    let document = store
        .read_document("stream_index", "handoff/cph_0000000001")
        .await
        .unwrap();
    assert!(
        document.is_some(),
        "after the wait, the read sees the write"
    );
    stop.send(true).unwrap();
    live.await.unwrap();
    assert!(matches!(
        Runner::new(Arc::clone(&store), fold(), config(0), metrics),
        Err(StoreError::InvalidRequest(_))
    ));
    db.cleanup().await;
}

async fn an_append_wakes_an_idle_runner_long_before_its_poll(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    // On PostgreSQL the append comes from another pool, as from another process: the wake-up
    // travels by LISTEN/NOTIFY. On SQLite it is the in-process signal.
    let writer = match backend {
        Backend::Postgres => db.open().await,
        Backend::Sqlite => Arc::clone(&store),
    };
    let metrics = Arc::new(Metrics::default());
    let slow_poll = RunnerConfig {
        poll_interval: Duration::from_secs(60),
        ..config(10)
    };
    let runner = Runner::new(Arc::clone(&store), fold(), slow_poll, Arc::clone(&metrics)).unwrap();
    let (stop, stopped) = watch::channel(false);
    let live = tokio::spawn(runner.run(stopped));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !leads(&metrics, &store).await {
        assert!(Instant::now() < deadline, "the runner never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the runner find the log empty and go idle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = writer
        .append(append(
            &stream("license", "lic_0000000042"),
            0,
            vec![event("woken", json!({}))],
        ))
        .await
        .unwrap();
    let started = Instant::now();
    assert!(wait_for_position(
        store.as_ref(),
        "stream_index",
        written.last_position(),
        Duration::from_secs(5)
    )
    .await
    .unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the append, not by the 60 s poll"
    );
    stop.send(true).unwrap();
    live.await.unwrap();
    drop((store, writer));
    db.cleanup().await;
}
