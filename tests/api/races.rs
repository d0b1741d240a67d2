//! Requests that race on one stream, as many runtimes or a retrying client send them: every
//! loser the domain has an answer for gets that answer, never `concurrent_update`. Both stores.

use crate::helpers::{Backend, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeMap;

crate::on_both_stores!(
    sixteen_concurrent_activations_leave_three_installations_and_every_loser_max_installations,
    concurrent_trial_starts_for_one_org_each_get_the_domains_answer,
);

/// How many answers had each `(status, code)`.
fn tally(answers: &[(u16, Value, reqwest::header::HeaderMap)]) -> BTreeMap<(u16, String), usize> {
    let mut counts = BTreeMap::new();
    for (status, body, _) in answers {
        let code = body["code"].as_str().unwrap_or("ok").to_owned();
        *counts.entry((*status, code)).or_default() += 1;
    }
    counts
}

async fn sixteen_concurrent_activations_leave_three_installations_and_every_loser_max_installations(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    for round in 0..3 {
        let (_, key) = crate::licensing::issue(&app, "relay").await;
        let bodies: Vec<Value> = (0..16)
            .map(|n| json!({ "activation_key": key, "instance_name": "lab", "instance_fingerprint": format!("fp-{round}-{n}"), "client_version": "6.0.1" }))
            .collect();
        let answers = futures_util::future::join_all(
            bodies
                .iter()
                .map(|body| app.post("/v1/activate", body, &[])),
        )
        .await;
        let counts = tally(&answers);
        assert_eq!(
            counts,
            BTreeMap::from([
                ((200, String::from("ok")), 3),
                ((409, String::from("MAX_INSTALLATIONS")), 13),
            ]),
            "round {round}"
        );
    }
    app.stop().await;
}

async fn concurrent_trial_starts_for_one_org_each_get_the_domains_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (account, _) = app.open_account(41, "owner@race.example").await;
    let body = json!({ "org_id": account.as_str() });
    let answers =
        futures_util::future::join_all((0..16).map(|_| app.post("/v1/trials/start", &body, &[])))
            .await;
    let counts = tally(&answers);
    assert_eq!(
        counts.get(&(201, String::from("ok"))),
        Some(&1),
        "{counts:?}"
    );
    let domain_answers = [
        "trial_already_used",
        "trial_not_available",
        "trial_rate_limited",
    ];
    assert!(
        counts
            .keys()
            .all(|(_, code)| code == "ok" || domain_answers.contains(&code.as_str())),
        "{counts:?}"
    );
    app.stop().await;
}
