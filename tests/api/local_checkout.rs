//! Local checkout mode (no Stripe key): the whole purchase runs offline, completed by a page of the
//! service that posts itself a correctly signed webhook; with a key configured the page is gone.

use crate::helpers::{Backend, TestApp};
use serde_json::json;

crate::on_both_stores!(
    without_a_stripe_key_the_purchase_completes_on_a_local_page,
    a_bad_email_is_refused_and_a_second_completion_writes_nothing,
    with_a_stripe_key_the_local_pages_do_not_exist,
);

async fn start(app: &TestApp) -> serde_json::Value {
    let request = json!({ "feature": "relay", "success_url": "http://localhost:7655/auth/license-purchase-activate", "cancel_url": "http://localhost:7655/", "purchase_return_jti": "jti-local" });
    let (_, handoff, _) = app.post("/v1/checkout/portal-handoff", &request, &[]).await;
    let start = json!({ "portal_handoff_id": handoff["portal_handoff_id"], "plan_key": "relay", "tier": "relay", "billing_cycle": "monthly" });
    let (status, started, _) = app.post("/v1/checkout/session", &start, &[]).await;
    assert_eq!(status, 200, "{started}");
    started
}

async fn without_a_stripe_key_the_purchase_completes_on_a_local_page(backend: Backend) {
    let app = TestApp::spawn_local(backend).await;
    let started = start(&app).await;
    let url = started["url"].as_str().unwrap();
    assert!(
        url.starts_with("https://account.pulse.test/v1/checkout/local/cs_local_"),
        "{url}"
    );
    assert!(app.stripe.requests().is_empty(), "Stripe is never called");
    let path = url.trim_start_matches("https://account.pulse.test");
    let page = app
        .client
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Local checkout") && html.contains("relay") && html.contains("4.99 USD"),
        "{html}"
    );

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let completed = no_redirects
        .post(format!("{}{path}/complete", app.base))
        .form(&[("email", "local@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(completed.status().as_u16(), 303);
    let session_id = path.trim_start_matches("/v1/checkout/local/");
    assert_eq!(
        completed.headers()["location"].to_str().unwrap(),
        format!("http://localhost:7655/auth/license-purchase-activate?session_id={session_id}")
    );
    let (_, result) = app
        .get(&format!("/v1/checkout/session?session_id={session_id}"))
        .await;
    assert_eq!(result["status"], "fulfilled", "{result}");
    assert_eq!(result["owner_email"], "local@example.com");
    let body = json!({ "activation_key": result["activation_key"], "instance_name": "lab", "instance_fingerprint": "fp", "client_version": "6" });
    let (status, _, _) = app.post("/v1/activate", &body, &[]).await;
    assert_eq!(status, 200);
    let bad = no_redirects
        .post(format!("{}{path}/complete", app.base))
        .form(&[("email", "not an email")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    app.stop().await;
}

async fn with_a_stripe_key_the_local_pages_do_not_exist(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let started = start(&app).await;
    assert!(started["url"]
        .as_str()
        .unwrap()
        .starts_with("https://checkout.stripe.test/"));
    let (status, body) = app.get("/v1/checkout/local/cs_test_fake0001").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let forged = app
        .client
        .post(format!(
            "{}/v1/checkout/local/cs_test_fake0001/complete",
            app.base
        ))
        .form(&[("email", "x@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status().as_u16(),
        404,
        "local completion cannot be used when Stripe is configured"
    );
    let (_, result) = app
        .get("/v1/checkout/session?session_id=cs_test_fake0001")
        .await;
    assert_eq!(result["status"], "pending");
    app.stop().await;
}

async fn a_bad_email_is_refused_and_a_second_completion_writes_nothing(backend: Backend) {
    let app = TestApp::spawn_local(backend).await;
    let started = start(&app).await;
    let path = started["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://account.pulse.test")
        .to_owned();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let complete = |body: &'static str| {
        no_redirects
            .post(format!("{}{path}/complete", app.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let head = app.db.max_position().await;
    for body in [
        "email=%FF%40example.com",
        "email=%EF%BF%BD%40example.com",
        "email=a%00b%40example.com",
        "email=a%3Cb%40example.com",
        "email=buyer%40example.com&email=other%40example.com",
        "mail=buyer%40example.com",
    ] {
        let answer = complete(body).await.unwrap();
        assert_eq!(answer.status().as_u16(), 400, "{body}");
        let error: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(error["code"], "invalid_request", "{body}: {error}");
    }
    assert_eq!(
        app.db.max_position().await,
        head,
        "a refused form writes nothing"
    );

    let first = complete("email=buyer%40example.com").await.unwrap();
    assert_eq!(first.status().as_u16(), 303);
    let location = first.headers()["location"].clone();
    let head = app.db.max_position().await;
    let again = complete("email=buyer%40example.com").await.unwrap();
    assert_eq!(again.status().as_u16(), 303);
    assert_eq!(again.headers()["location"], location);
    assert_eq!(
        app.db.max_position().await,
        head,
        "a second completion writes nothing"
    );
    let owners: Vec<_> = app
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "license_issued")
        .map(|e| e.payload["owner_email"].clone())
        .collect();
    assert_eq!(owners, vec![json!("buyer@example.com")]);
    app.stop().await;
}
