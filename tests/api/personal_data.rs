//! Personal data at rest (issue 5, last part): emails and instance names reach the log sealed under
//! a key of the person they are about, and read back in the clear; erasure (the `erase` command)
//! destroys the person's keys and records it, after which no table of the database holds their
//! email or their instance's name, the read models show them as erased, and every export and seal
//! — made before or after — still verifies.

use crate::cli::run;
use crate::helpers::{Backend, TestApp};
use crate::hosted::bought_msp;
use crate::installation_flows::{activate_as, bought, get_with_token};
use crate::on_both_stores;
use crate::staff::caught_up;
use aggregates::log::{Position, StreamName, StreamVersion};
use pulse_account::engine::audit::{check, export_jsonl, seal, verify_jsonl};
use pulse_account::engine::personal_data::{ERASURE_CHECK_INTERVAL, PERSONAL_FIELDS};
use pulse_account::engine::store::Snapshot;
use serde_json::{json, Value};

on_both_stores!(
    personal_data_is_sealed_in_the_log_and_reads_back_in_the_clear,
    a_hosted_owners_email_is_sealed_in_the_log_too,
    erasure_leaves_no_plaintext_anywhere_and_every_export_still_verifies,
);

const EMAIL: &str = "buyer@example.com";
const INSTANCE: &str = "zephyr-rack-7";

/// Buys Pro as `EMAIL`, activates an installation named `INSTANCE`; returns its token.
async fn bought_and_activated(app: &TestApp) -> String {
    let (_, result) = bought(app).await;
    activate_as(app, result["activation_key"].as_str().unwrap(), INSTANCE).await
}

async fn personal_data_is_sealed_in_the_log_and_reads_back_in_the_clear(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = bought_and_activated(&app).await;
    caught_up(&app).await;

    let tables = app.db.tables_containing(EMAIL).await;
    assert!(
        tables.iter().all(|(table, _)| table != "events"),
        "the log holds the email only sealed: {tables:?}"
    );
    let tables = app.db.tables_containing(INSTANCE).await;
    assert!(
        tables.iter().all(|(table, _)| table != "events"),
        "the log holds the instance name only sealed: {tables:?}"
    );

    let events = app.all_events().await;
    let issued = events
        .iter()
        .find(|e| e.event_type == "license_issued")
        .unwrap();
    assert_eq!(issued.payload["owner_email"], EMAIL);
    let activated = events
        .iter()
        .find(|e| e.event_type == "installation_activated")
        .unwrap();
    assert_eq!(activated.payload["instance_name"], INSTANCE);
    let stored = app
        .state
        .store
        .read_all_stored(Position::START, 1_000)
        .await
        .unwrap();
    let stored_issue = stored
        .iter()
        .find(|e| e.event_type == "license_issued")
        .unwrap();
    assert!(
        stored_issue.payload["owner_email"]
            .as_str()
            .unwrap()
            .starts_with("pii1.e.pk_"),
        "{}",
        stored_issue.payload
    );

    let (status, entitlements) = get_with_token(&app, "/v1/entitlements", &token).await;
    assert_eq!(status, 200, "{entitlements}");
    assert_eq!(entitlements["licensed_email"], EMAIL);
    app.stop().await;
}

async fn a_hosted_owners_email_is_sealed_in_the_log_too(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (account_id, _) = bought_msp(&app).await;
    caught_up(&app).await;
    let tables = app.db.tables_containing("ops@msp.example").await;
    assert!(
        tables.iter().all(|(table, _)| table != "events"),
        "the member's email is sealed in the log: {tables:?}"
    );
    let joined = app
        .all_events()
        .await
        .into_iter()
        .find(|e| e.event_type == "member_joined" && e.stream.stream_id() == account_id)
        .unwrap();
    assert_eq!(joined.payload["email"], "ops@msp.example");
    app.stop().await;
}

async fn erasure_leaves_no_plaintext_anywhere_and_every_export_still_verifies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = bought_and_activated(&app).await;
    caught_up(&app).await;
    let store = app.state.store.as_ref();
    let signer = &app.state.keys.signer;
    let public_key = signer.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
    assert!(seal(store, signer, chrono::Utc::now())
        .await
        .unwrap()
        .is_some());
    let mut before = Vec::new();
    let manifest_before = export_jsonl(
        store,
        signer,
        Position::START,
        None,
        &mut before,
        &mut |_| {},
    )
    .await
    .unwrap();
    // A snapshot of a long stream holds the plaintext, as a read model does.
    store
        .save_snapshot(&Snapshot {
            stream: StreamName::parse("license", "lic_SNAPSHOT01").unwrap(),
            state_version: 1,
            stream_version: StreamVersion(300),
            state: json!({ "issued": { "owner_email": EMAIL } }),
        })
        .await
        .unwrap();
    assert!(!app.db.tables_containing(EMAIL).await.is_empty());

    let cwd = tempfile::tempdir().unwrap();
    let data_dir = app.db.data_dir();
    let erase = [
        "erase",
        "--email",
        "Buyer@Example.com",
        "--reason",
        "ticket 7",
        "--database-url",
        &app.db.url,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    let erased = run(&erase, cwd.path());
    let stdout = String::from_utf8_lossy(&erased.stdout);
    assert!(
        erased.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    assert!(stdout.contains("1 key(s) destroyed"), "{stdout}");
    assert!(stdout.contains("1 snapshot(s) deleted"), "{stdout}");

    for needle in [EMAIL, INSTANCE] {
        assert_eq!(
            app.db.tables_containing(needle).await,
            vec![],
            "no table holds {needle} after erasure"
        );
    }
    if backend == Backend::Sqlite {
        // Nor do the store's files: free pages, superseded log frames and index pages included.
        let local_part = EMAIL.split('@').next().unwrap();
        for (file, bytes) in app.db.sqlite_files() {
            for needle in [EMAIL, local_part, INSTANCE] {
                assert!(
                    !bytes
                        .windows(needle.len())
                        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes())),
                    "{file} still holds {needle:?} after erasure"
                );
            }
        }
    }

    let deadline = std::time::Instant::now() + ERASURE_CHECK_INTERVAL * 10;
    let entitlements = loop {
        let (status, entitlements) = get_with_token(&app, "/v1/entitlements", &token).await;
        assert_eq!(status, 200, "{entitlements}");
        if entitlements["licensed_email"] != EMAIL || std::time::Instant::now() > deadline {
            break entitlements;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let shown = entitlements["licensed_email"].as_str().unwrap();
    assert!(
        shown.starts_with("erased-") && shown.ends_with("@erased.invalid"),
        "the running service notices the erasure within a second: {shown}"
    );
    assert_eq!(entitlements["valid"], true, "erasure does not revoke");
    let (_, licenses) = app
        .db
        .active_documents("licenses")
        .await
        .into_iter()
        .next()
        .expect("the rebuilt licenses read model");
    assert!(
        licenses["owner_email"]
            .as_str()
            .unwrap()
            .ends_with("@erased.invalid"),
        "the rebuilt read model shows the email as erased: {licenses}"
    );
    let installation = licenses["installations"]
        .as_object()
        .and_then(|installations| installations.values().next())
        .expect("the installation");
    assert_eq!(installation["instance_name"], "[erased]");

    let events = app.all_events().await;
    let recorded = events
        .iter()
        .find(|e| e.event_type == "personal_data_erased")
        .expect("the erasure is recorded");
    assert_eq!(recorded.payload["reason"], "ticket 7");
    assert_eq!(recorded.metadata.actor, "operator:cli");
    assert!(recorded.payload["person_id"]
        .as_str()
        .unwrap()
        .starts_with("per_"));

    let before = String::from_utf8(before).unwrap();
    assert_eq!(
        verify_jsonl(before.as_bytes(), &public_key).unwrap(),
        manifest_before,
        "the export made before erasure still verifies"
    );
    let mut after = Vec::new();
    export_jsonl(
        store,
        signer,
        Position::START,
        None,
        &mut after,
        &mut |_| {},
    )
    .await
    .unwrap();
    let after = String::from_utf8(after).unwrap();
    verify_jsonl(after.as_bytes(), &public_key).expect("an export made after erasure verifies");
    let records = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| line.contains("\"global_position\""))
            .map(str::to_owned)
            .collect()
    };
    let (old, new) = (records(&before), records(&after));
    assert_eq!(
        new[..old.len()],
        old[..],
        "the log was not rewritten: the records exported before are exported again unchanged"
    );
    assert_eq!(
        check(store, &public_key).await.unwrap(),
        Ok(1),
        "the seal made before erasure still holds"
    );

    let again = run(&erase, cwd.path());
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 key(s) destroyed"));
    app.stop().await;
}

/// Every email and instance name in the recorded histories of `replay-fixtures/` sits in a field
/// `PERSONAL_FIELDS` names, and every named field of those events is where the registry says: a
/// field added or renamed without the registry would reach the log in the clear.
#[test]
fn every_personal_field_of_the_recorded_histories_is_registered() {
    fn walk(value: &Value, path: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
        match value {
            Value::Object(fields) => {
                for (name, field) in fields {
                    path.push(name.clone());
                    walk(field, path, found);
                    path.pop();
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, path, found)),
            Value::String(text)
                if text.contains('@') || path.last().is_some_and(|n| n == "instance_name") =>
            {
                found.push(path.clone())
            }
            _ => {}
        }
    }
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("replay-fixtures");
    let mut registered_seen = std::collections::BTreeSet::new();
    for fixture in std::fs::read_dir(&fixtures).unwrap() {
        let events = std::fs::read_to_string(fixture.unwrap().path().join("events.jsonl")).unwrap();
        for line in events.lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            let event_type = event["event_type"].as_str().unwrap();
            let mut found = Vec::new();
            walk(&event["payload"], &mut Vec::new(), &mut found);
            for path in found {
                let registered = PERSONAL_FIELDS
                    .iter()
                    .any(|field| field.event_type == event_type && field.path == path);
                assert!(
                    registered,
                    "{event_type}.{} holds personal data",
                    path.join(".")
                );
            }
            for field in PERSONAL_FIELDS
                .iter()
                .filter(|f| f.event_type == event_type)
            {
                let at = field
                    .path
                    .iter()
                    .try_fold(&event["payload"], |v, n| v.get(*n));
                assert!(
                    at.is_some_and(Value::is_string),
                    "{event_type}.{} is not where the registry says",
                    field.path.join(".")
                );
                registered_seen.insert((field.event_type, field.path));
            }
        }
    }
    assert_eq!(
        registered_seen.len(),
        PERSONAL_FIELDS.len(),
        "every registered field appears in some recorded history"
    );
}
