//! Auditor export (issue 5, first part): a chained JSONL export with a signed manifest verifies
//! offline with the public key alone; any flipped byte, dropped record, reordering or forged
//! manifest is reported at the line where it happened.

use crate::helpers::{append, event, stream, Backend, TestDatabase};
use aggregates::log::Position;
use pulse_account::crypto::signing::Signer;
use pulse_account::engine::audit::{
    check, export, export_jsonl, seal, verify, verify_jsonl, ExportFormat, Manifest, CSV_HEADER,
    EXPORT_FORMAT, EXPORT_FORMAT_V1,
};
use serde_json::json;
use sha2::{Digest, Sha256};

crate::on_both_stores!(
    an_export_verifies_and_every_tampering_is_reported_where_it_happened,
    seals_detect_an_edit_of_an_old_row,
    a_csv_export_verifies_and_a_changed_row_is_reported,
    an_export_of_format_1_still_verifies,
);

async fn an_export_verifies_and_every_tampering_is_reported_where_it_happened(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    for n in 0..5 {
        let license = stream("license", &format!("lic_{n:010}"));
        let events = (0..3)
            .map(|k| event("touched", json!({ "n": n, "k": k, "note": "café" })))
            .collect();
        store.append(append(&license, 0, events)).await.unwrap();
    }
    let signer = Signer::from_seed("audit-1", [3; 32]).unwrap();
    let public_key = signer.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
    let mut exported = Vec::new();
    let mut pages = 0;
    let manifest = export_jsonl(
        store.as_ref(),
        &signer,
        Position::START,
        None,
        &mut exported,
        &mut |_| pages += 1,
    )
    .await
    .unwrap();
    assert_eq!((manifest.count, manifest.to_position), (15, 15));
    assert!(pages >= 1, "progress is reported");
    let text = String::from_utf8(exported).unwrap();
    let verified =
        verify_jsonl(text.as_bytes(), &public_key).expect("an untouched export verifies");
    assert_eq!(verified, manifest);

    let lines: Vec<&str> = text.lines().collect();
    // The payload is chained as the database keeps it: PostgreSQL's JSON text has spaces.
    let flipped = ["\"k\":0", "\"k\": 0"]
        .iter()
        .find(|k| lines[6].contains(*k))
        .map(|k| lines[6].replacen(k, &k.replace('0', "9"), 1))
        .expect("the record holds k = 0");
    let mut tampered = lines.clone();
    tampered[6] = &flipped;
    assert_eq!(
        verify_jsonl(tampered.join("\n").as_bytes(), &public_key)
            .unwrap_err()
            .line,
        7,
        "a changed record is reported at its line"
    );

    let mut dropped = lines.clone();
    dropped.remove(3);
    assert_eq!(
        verify_jsonl(dropped.join("\n").as_bytes(), &public_key)
            .unwrap_err()
            .line,
        4,
        "a dropped record breaks the next line"
    );

    let mut reordered = lines.clone();
    reordered.swap(8, 9);
    assert_eq!(
        verify_jsonl(reordered.join("\n").as_bytes(), &public_key)
            .unwrap_err()
            .line,
        9,
        "a reordering is reported where it starts"
    );

    let mut forged = lines.clone();
    let forged_manifest = lines[15].replace("\"count\":15", "\"count\":14");
    forged[15] = &forged_manifest;
    assert_eq!(
        verify_jsonl(forged.join("\n").as_bytes(), &public_key)
            .unwrap_err()
            .line,
        16,
        "the manifest must be the signed one"
    );

    let truncated = lines[..15].join("\n");
    assert!(verify_jsonl(truncated.as_bytes(), &public_key)
        .unwrap_err()
        .reason
        .contains("without a signed manifest"));
    let other_key = Signer::from_seed("audit-2", [4; 32]).unwrap().jwks()["keys"][0]["x"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        verify_jsonl(text.as_bytes(), &other_key)
            .unwrap_err()
            .reason
            .contains("signature"),
        "another key does not verify it"
    );

    let mut partial = Vec::new();
    let range = export_jsonl(
        store.as_ref(),
        &signer,
        Position(3),
        Some(Position(9)),
        &mut partial,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        (range.after_position, range.to_position, range.count),
        (3, 9, 6)
    );
    assert_eq!(
        verify_jsonl(partial.as_slice(), &public_key).unwrap(),
        range,
        "a position range exports and verifies"
    );
    drop(store);
    db.cleanup().await;
}

async fn tamper(db: &TestDatabase, position: i64) {
    let sql = match db.backend {
        Backend::Sqlite => format!(
            "DROP TRIGGER events_no_update; UPDATE events SET payload = json_set(payload, '$.k', 99) WHERE global_position = {position};"
        ),
        Backend::Postgres => format!(
            "ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete; \
             UPDATE events SET payload = jsonb_set(payload, '{{k}}', '99') WHERE global_position = {position};"
        ),
    };
    db.execute(&sql).await;
}

async fn seals_detect_an_edit_of_an_old_row(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let signer = Signer::from_seed("seal-1", [6; 32]).unwrap();
    let public_key = signer.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now();
    assert!(
        seal(store.as_ref(), &signer, now).await.unwrap().is_none(),
        "an empty log has nothing to seal"
    );
    let license = stream("license", "lic_0000000077");
    store
        .append(append(
            &license,
            0,
            (0..3)
                .map(|k| event("touched", json!({ "k": k })))
                .collect(),
        ))
        .await
        .unwrap();
    let first = seal(store.as_ref(), &signer, now).await.unwrap().unwrap();
    assert_eq!((first.position, first.count), (Position(3), 3));
    assert!(
        seal(store.as_ref(), &signer, now).await.unwrap().is_none(),
        "nothing new, no seal"
    );
    store
        .append(append(
            &license,
            3,
            (3..5)
                .map(|k| event("touched", json!({ "k": k })))
                .collect(),
        ))
        .await
        .unwrap();
    let second = seal(store.as_ref(), &signer, now).await.unwrap().unwrap();
    assert_eq!((second.position, second.count), (Position(5), 5));
    assert_eq!(
        check(store.as_ref(), &public_key).await.unwrap(),
        Ok(2),
        "an untouched log matches every seal"
    );

    tamper(&db, 2).await;
    let mismatch = check(store.as_ref(), &public_key)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        mismatch.position, 3,
        "the first seal covering the edited row reports it"
    );
    assert!(mismatch.reason.contains("changed"), "{mismatch}");
    let other_key = Signer::from_seed("seal-2", [7; 32]).unwrap().jwks()["keys"][0]["x"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(check(store.as_ref(), &other_key)
        .await
        .unwrap()
        .unwrap_err()
        .reason
        .contains("signature"));
    drop(store);
    db.cleanup().await;
}

async fn a_csv_export_verifies_and_a_changed_row_is_reported(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let license = stream("license", "lic_0000000088");
    let events = (0..4)
        .map(|k| event("touched", json!({ "k": k, "note": "a, \"quoted\"\nline" })))
        .collect();
    store.append(append(&license, 0, events)).await.unwrap();
    let signer = Signer::from_seed("audit-csv", [8; 32]).unwrap();
    let public_key = signer.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
    let mut csv = Vec::new();
    let manifest = export(
        store.as_ref(),
        &signer,
        Position::START,
        None,
        ExportFormat::Csv,
        &mut csv,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(manifest.count, 4);
    let text = String::from_utf8(csv).unwrap();
    assert!(text.starts_with("global_position,stream_type,"), "{text}");
    assert_eq!(
        verify(text.as_bytes(), &public_key).unwrap(),
        manifest,
        "verify tells CSV from JSONL"
    );
    // The header, 4 records and the manifest row are lines 1 to 6: a row after it is refused.
    let appended = format!("{text}{}\n", text.lines().nth(1).unwrap());
    let error = verify(appended.as_bytes(), &public_key).unwrap_err();
    assert_eq!(
        (error.line, error.reason.as_str()),
        (7, "data after the signed manifest")
    );
    let tampered = ["\"\"k\"\":2", "\"\"k\"\": 2"]
        .iter()
        .find(|k| text.contains(*k))
        .map(|k| text.replacen(k, &k.replace('2', "5"), 1))
        .expect("a record holds k = 2");
    assert_ne!(tampered, text);
    let error = verify(tampered.as_bytes(), &public_key).unwrap_err();
    assert_eq!(
        error.line, 4,
        "the third record is the fourth CSV record: {error}"
    );
    let mut jsonl = Vec::new();
    let same = export(
        store.as_ref(),
        &signer,
        Position::START,
        None,
        ExportFormat::Jsonl,
        &mut jsonl,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        same.final_hash, manifest.final_hash,
        "both formats carry the same chain"
    );
    drop(store);
    db.cleanup().await;
}

/// An export as format 1 wrote it: each record decoded and re-encoded as canonical JSON (keys
/// sorted, no whitespace) before being chained, in JSONL and in CSV. The verifier still takes
/// both, and refuses a manifest naming a format it does not know.
async fn an_export_of_format_1_still_verifies(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let license = stream("license", "lic_0000000101");
    let events = (0..3)
        .map(|k| event("touched", json!({ "k": k, "note": "v1, \"é\"\nline" })))
        .collect();
    store.append(append(&license, 0, events)).await.unwrap();
    let signer = Signer::from_seed("audit-v1", [9; 32]).unwrap();
    let public_key = signer.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
    let stored = store.read_all_stored(Position::START, 100).await.unwrap();
    let mut chain = [0_u8; 32];
    let mut jsonl = String::new();
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(CSV_HEADER).unwrap();
    for event in &stored {
        let record = serde_json::to_value(event).unwrap();
        let mut hasher = Sha256::new();
        hasher.update(chain);
        hasher.update(serde_json::to_vec(&record).unwrap());
        chain = hasher.finalize().into();
        let chain_hex = hex::encode(chain);
        jsonl.push_str(&json!({ "record": record, "chain": chain_hex }).to_string());
        jsonl.push('\n');
        let text = |value: &serde_json::Value| match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        csv.write_record([
            text(&record["global_position"]),
            text(&record["stream"]["stream_type"]),
            text(&record["stream"]["stream_id"]),
            text(&record["stream_version"]),
            text(&record["event_id"]),
            text(&record["event_type"]),
            text(&record["schema_version"]),
            record["payload"].to_string(),
            record["metadata"].to_string(),
            text(&record["recorded_at"]),
            chain_hex,
        ])
        .unwrap();
    }
    let manifest = |format: &str| Manifest {
        format: format.to_owned(),
        after_position: 0,
        to_position: stored.last().unwrap().global_position.0,
        count: 3,
        final_hash: hex::encode(chain),
        key_id: String::from("audit-v1"),
    };
    let v1 = manifest(EXPORT_FORMAT_V1);
    let signature = signer.sign(&v1).unwrap();
    let v1_jsonl = format!(
        "{jsonl}{}\n",
        json!({ "manifest": v1, "signature": signature })
    );
    assert_eq!(verify(v1_jsonl.as_bytes(), &public_key).unwrap(), v1);
    let mut manifest_row = vec![
        String::from("manifest"),
        serde_json::to_string(&v1).unwrap(),
        signature,
    ];
    manifest_row.resize(CSV_HEADER.len(), String::new());
    csv.write_record(&manifest_row).unwrap();
    let v1_csv = csv.into_inner().unwrap();
    assert_eq!(verify(v1_csv.as_slice(), &public_key).unwrap(), v1);

    let unknown = manifest("pulse-account-export/9");
    let unknown_jsonl = format!(
        "{jsonl}{}\n",
        json!({ "manifest": unknown, "signature": signer.sign(&unknown).unwrap() })
    );
    let error = verify(unknown_jsonl.as_bytes(), &public_key).unwrap_err();
    assert_eq!(error.line, 4);
    assert!(error.reason.contains("format"), "{error}");

    // And what the service writes today is format 2.
    let mut today = Vec::new();
    let written = export_jsonl(
        store.as_ref(),
        &signer,
        Position::START,
        None,
        &mut today,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(written.format, EXPORT_FORMAT);
    assert_eq!(verify(today.as_slice(), &public_key).unwrap(), written);
    drop(store);
    db.cleanup().await;
}
