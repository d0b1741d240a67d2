//! Auditor export (issue 5, first part): a chained JSONL export with a signed manifest verifies
//! offline with the public key alone; any flipped byte, dropped record, reordering or forged
//! manifest is reported at the line where it happened.

use crate::helpers::{append, event, stream, Backend, TestDatabase};
use aggregates::log::Position;
use pulse_account::crypto::signing::Signer;
use pulse_account::engine::audit::{
    check, export, export_jsonl, seal, verify, verify_jsonl, ExportFormat,
};
use serde_json::json;

crate::on_both_stores!(
    an_export_verifies_and_every_tampering_is_reported_where_it_happened,
    seals_detect_an_edit_of_an_old_row,
    a_csv_export_verifies_and_a_changed_row_is_reported,
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
    let flipped = lines[6].replacen("\"k\":0", "\"k\":9", 1);
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
    let tampered = text.replacen("\"\"k\"\":2", "\"\"k\"\":5", 1);
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
