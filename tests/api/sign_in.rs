//! Sign-in by email, from outside (`../shared/design/PORTAL.md` §2, issue 13): the email arrives at
//! a real SMTP listener; a plain GET of the link (a mail scanner) signs nobody in; the confirmation
//! POST sets the session cookie with exactly its attributes; the link and the code work once;
//! known and unknown emails get byte-identical answers; the per-email and per-address limits; two
//! consumers of one link make one session; signing out ends every session; a cross-site POST
//! changes nothing; a message queued while no service ran is delivered once when one starts.

use crate::helpers::{Backend, TestApp};
use crate::hosted::bought_msp;
use crate::on_both_stores;
use pulse_account::crypto::{KeyConfig, KeyMaterial};
use pulse_account::engine::personal_data::PersonalDataStore;
use serde_json::{json, Value};
use std::sync::Arc;

on_both_stores!(
    signing_in_by_link_asks_first_then_sets_the_session_once,
    signing_in_by_code_works_once_and_five_wrong_codes_end_it,
    a_known_and_an_unknown_email_get_the_same_answer_and_only_the_known_one_gets_mail,
    the_fourth_link_an_hour_sends_nothing_and_the_twenty_first_request_a_minute_is_429,
    two_concurrent_consumers_of_one_link_make_one_session,
    signing_out_ends_every_session_of_the_user,
    a_cross_site_post_changes_nothing,
    a_message_queued_while_no_service_ran_is_delivered_once,
    a_failed_delivery_is_recorded_and_counted,
    bad_input_to_the_sign_in_routes_is_refused_in_the_json_shape,
);

/// The hosted owner `bought_msp` makes: a user who may sign in.
pub(crate) const OWNER: &str = "ops@msp.example";

/// A client that does not follow redirects and keeps no cookies: each test sends the cookie it
/// means to send.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Asks for a sign-in link for `email` (JSON); returns the status and the raw body.
async fn request_link(app: &TestApp, email: &str) -> (u16, String) {
    let response = browser()
        .post(format!("{}/api/public/magic-link/request", app.base))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The sign-in messages `email` received so far (invitations and others left out).
fn sign_in_mails(app: &TestApp, email: &str) -> Vec<crate::fake_smtp::ReceivedMail> {
    app.smtp
        .messages_to(email)
        .into_iter()
        .filter(|m| m.subject.contains("sign-in link"))
        .collect()
}

/// Asks for a link for `email` and returns the sign-in message it brings.
async fn link_mail(app: &TestApp, email: &str) -> crate::fake_smtp::ReceivedMail {
    let before = sign_in_mails(app, email).len();
    let (status, _) = request_link(app, email).await;
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let mut mails = sign_in_mails(app, email);
        if mails.len() > before {
            return mails.pop().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sign-in email reached {email}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Posts the confirmation form with `token`.
async fn confirm(app: &TestApp, token: &str) -> reqwest::Response {
    browser()
        .post(format!("{}/auth/magic-link/verify", app.base))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

/// The session cookie's value from a `Set-Cookie` answer.
fn session_of(response: &reqwest::Response) -> String {
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .expect("a Set-Cookie header")
        .to_str()
        .unwrap();
    let pair = set_cookie.split(';').next().unwrap();
    pair.strip_prefix("__Host-pulse_cp_session=")
        .expect("the session cookie")
        .to_owned()
}

/// `GET /api/portal/bootstrap` with `session` (or none).
pub(crate) async fn bootstrap(app: &TestApp, session: Option<&str>) -> (u16, Value) {
    let mut request = browser().get(format!("{}/api/portal/bootstrap", app.base));
    if let Some(session) = session {
        request = request.header("cookie", format!("__Host-pulse_cp_session={session}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Signs in through the link of a sign-in email already received; returns the session.
pub(crate) async fn signed_in_by_mail(
    app: &TestApp,
    mail: &crate::fake_smtp::ReceivedMail,
) -> String {
    let response = confirm(app, &mail.sign_in_token()).await;
    assert_eq!(response.status().as_u16(), 303);
    session_of(&response)
}

/// Signs `email` in through its link; returns the session cookie's value.
pub(crate) async fn signed_in(app: &TestApp, email: &str) -> String {
    let mail = link_mail(app, email).await;
    let response = confirm(app, &mail.sign_in_token()).await;
    assert_eq!(response.status().as_u16(), 303);
    session_of(&response)
}

async fn sessions_started(app: &TestApp) -> usize {
    app.all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "session_started")
        .count()
}

async fn signing_in_by_link_asks_first_then_sets_the_session_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (account_id, _) = bought_msp(&app).await;
    let mail = link_mail(&app, OWNER).await;
    assert!(mail.subject.contains("sign-in link"), "{}", mail.subject);
    assert!(mail.message_id.contains("@pulse-account>"));
    let token = mail.sign_in_token();

    let page = browser()
        .get(format!("{}/auth/magic-link/verify?token={token}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.headers().get("set-cookie").is_none(),
        "a GET never signs in"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("Sign in as o…@msp.example"), "{html}");
    assert_eq!(
        sessions_started(&app).await,
        0,
        "the scanner's GET started no session"
    );
    let (status, body) = bootstrap(&app, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("missing_session"))
    );

    let response = confirm(&app, &token).await;
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(response.headers()["location"], "/portal");
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let attributes: Vec<&str> = set_cookie.split("; ").skip(1).collect();
    assert_eq!(
        attributes,
        [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=43200"
        ]
    );
    let session = session_of(&response);

    let (status, body) = bootstrap(&app, Some(&session)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["authenticated"], true);
    assert_eq!(body["email"], OWNER);
    assert_eq!(body["support_email"], "support@pulse.test");
    assert_eq!(body["has_self_hosted_commercial"], false);
    let accounts = body["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{body}");
    assert_eq!(accounts[0]["id"], account_id);
    assert_eq!(accounts[0]["kind_label"], "MSP");
    assert_eq!(accounts[0]["role_label"], "Owner");
    assert_eq!(accounts[0]["can_manage"], true);
    assert_eq!(accounts[0]["workspaces"].as_array().unwrap().len(), 1);

    let again = confirm(&app, &token).await;
    assert_eq!(again.status().as_u16(), 400, "a link signs in once");
    assert!(again.headers().get("set-cookie").is_none());
    assert!(again.text().await.unwrap().contains("no longer works"));
    let json_again = browser()
        .post(format!("{}/auth/magic-link/verify", app.base))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(json_again.status().as_u16(), 400);
    let body: Value = json_again.json().await.unwrap();
    assert_eq!(body["code"], "invalid_token");
    assert_eq!(sessions_started(&app).await, 1);
    app.stop().await;
}

async fn post_code(app: &TestApp, email: &str, code: &str) -> reqwest::Response {
    browser()
        .post(format!("{}/auth/magic-link/code", app.base))
        .json(&json!({ "email": email, "code": code }))
        .send()
        .await
        .unwrap()
}

async fn signing_in_by_code_works_once_and_five_wrong_codes_end_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_msp(&app).await;
    let code = link_mail(&app, OWNER).await.sign_in_code();
    let response = post_code(&app, "OPS@msp.example", &code).await;
    assert_eq!(
        response.status().as_u16(),
        303,
        "the code signs in, whatever the email's case"
    );
    let session = session_of(&response);
    assert_eq!(bootstrap(&app, Some(&session)).await.0, 200);
    assert_eq!(
        post_code(&app, OWNER, &code).await.status().as_u16(),
        400,
        "once"
    );

    let mail = link_mail(&app, OWNER).await;
    let right = mail.sign_in_code();
    let wrong = if right == "000000" {
        "000001"
    } else {
        "000000"
    };
    for _ in 0..5 {
        let refused = post_code(&app, OWNER, wrong).await;
        assert_eq!(refused.status().as_u16(), 400);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["code"], "invalid_token");
    }
    assert_eq!(
        post_code(&app, OWNER, &right).await.status().as_u16(),
        400,
        "five wrong codes end the link, its right code included"
    );
    assert_eq!(
        confirm(&app, &mail.sign_in_token()).await.status().as_u16(),
        400,
        "and its token"
    );
    let rejected = app
        .all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "magic_link_code_rejected")
        .count();
    assert_eq!(rejected, 5);
    app.stop().await;
}

async fn a_known_and_an_unknown_email_get_the_same_answer_and_only_the_known_one_gets_mail(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    bought_msp(&app).await;
    let known = request_link(&app, OWNER).await;
    let unknown = request_link(&app, "stranger@example.com").await;
    assert_eq!(known, unknown, "byte-identical answers");
    assert_eq!(known.0, 200);
    let body: Value = serde_json::from_str(&known.1).unwrap();
    assert_eq!(body["success"], true);
    app.smtp.wait_for(OWNER, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(app.smtp.messages_to("stranger@example.com").is_empty());
    assert_eq!(app.smtp.messages().len(), 1);
    let issued = app
        .all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "magic_link_issued")
        .count();
    assert_eq!(issued, 1, "nothing is recorded for an unknown email");
    app.stop().await;
}

async fn the_fourth_link_an_hour_sends_nothing_and_the_twenty_first_request_a_minute_is_429(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    bought_msp(&app).await;
    for _ in 0..3 {
        link_mail(&app, OWNER).await;
    }
    assert_eq!(
        request_link(&app, OWNER).await.0,
        200,
        "the fourth is answered alike"
    );
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(
        app.smtp.messages_to(OWNER).len(),
        3,
        "the fourth in an hour sends nothing"
    );
    let issued = app
        .all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "magic_link_issued")
        .count();
    assert_eq!(issued, 3);

    for n in 5..=20 {
        let (status, _) = request_link(&app, &format!("someone{n}@example.com")).await;
        assert_eq!(status, 200, "request {n} of the minute");
    }
    let response = browser()
        .post(format!("{}/api/public/magic-link/request", app.base))
        .json(&json!({ "email": OWNER }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        429,
        "the 21st from one address in a minute"
    );
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["details"]["retry_after_seconds"], retry_after);
    app.stop().await;
}

async fn two_concurrent_consumers_of_one_link_make_one_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_msp(&app).await;
    let token = link_mail(&app, OWNER).await.sign_in_token();
    let consumers = (0..8).map(|_| confirm(&app, &token));
    let statuses: Vec<u16> = futures_util::future::join_all(consumers)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 303).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(sessions_started(&app).await, 1);
    app.stop().await;
}

async fn logout(app: &TestApp, session: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = browser()
        .post(format!("{}/auth/logout", app.base))
        .header("cookie", format!("__Host-pulse_cp_session={session}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn signing_out_ends_every_session_of_the_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_msp(&app).await;
    let first = signed_in(&app, OWNER).await;
    let second = signed_in(&app, OWNER).await;
    assert_eq!(bootstrap(&app, Some(&first)).await.0, 200);
    assert_eq!(bootstrap(&app, Some(&second)).await.0, 200);
    assert_eq!(logout(&app, &first, &[]).await, 204);
    for session in [&first, &second] {
        let (status, body) = bootstrap(&app, Some(session)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("revoked_session"))
        );
    }
    let forged = format!(
        "{}.pcs_{}",
        first.split('.').next().unwrap(),
        "A".repeat(52)
    );
    let (status, body) = bootstrap(&app, Some(&forged)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_session"))
    );
    let (status, body) = bootstrap(&app, Some("garbage")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_session"))
    );
    let third = signed_in(&app, OWNER).await;
    assert_eq!(
        bootstrap(&app, Some(&third)).await.0,
        200,
        "signing in again works"
    );
    app.stop().await;
}

async fn a_cross_site_post_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_msp(&app).await;
    let session = signed_in(&app, OWNER).await;
    let before = app.all_events().await.len();
    for headers in [
        [
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ],
        [
            ("sec-fetch-site", "same-site"),
            ("origin", "https://evil.example"),
        ],
    ] {
        assert_eq!(logout(&app, &session, &headers).await, 403);
    }
    assert_eq!(
        logout(&app, &session, &[("origin", "https://evil.example")]).await,
        403
    );
    let response = browser()
        .post(format!("{}/api/public/magic-link/request", app.base))
        .header("sec-fetch-site", "cross-site")
        .json(&json!({ "email": OWNER }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "cross_site_request");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.all_events().await.len(), before, "nothing was written");
    assert_eq!(
        bootstrap(&app, Some(&session)).await.0,
        200,
        "the session lives"
    );
    assert_eq!(
        logout(&app, &session, &[("sec-fetch-site", "same-origin")]).await,
        204
    );
    app.stop().await;
}

async fn a_message_queued_while_no_service_ran_is_delivered_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_msp(&app).await;
    let (db, stripe, smtp, options) = app.stop_keeping().await;
    {
        let keys = Arc::new(KeyMaterial::load(&KeyConfig::default(), &db.data_dir()).unwrap());
        let store = PersonalDataStore::new(db.open().await, Arc::clone(&keys));
        let catalog = aggregates::catalog::Catalog::v1();
        let email = aggregates::ids::Email::parse(OWNER).unwrap();
        pulse_account::flows::sign_in::request_link(
            &store,
            &keys,
            &catalog,
            &email,
            aggregates::log::EventMetadata {
                effective_at: chrono::Utc::now(),
                ..crate::helpers::metadata()
            },
        )
        .await
        .unwrap();
    }
    assert!(smtp.messages().is_empty(), "no service ran to send it");
    let app = TestApp::start_on(db, stripe, smtp, options).await;
    let mail = app.smtp.wait_for(OWNER, 1).await.pop().unwrap();
    let app = app.restart().await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(
        app.smtp.messages_to(OWNER).len(),
        1,
        "delivered once, across restarts"
    );
    assert_eq!(
        confirm(&app, &mail.sign_in_token()).await.status().as_u16(),
        303
    );
    app.stop().await;
}

async fn a_failed_delivery_is_recorded_and_counted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_msp(&app).await;
    app.smtp.refuse_mail(true);
    assert_eq!(request_link(&app, OWNER).await.0, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let failed = loop {
        let events = app.all_events().await;
        if let Some(failed) = events
            .iter()
            .find(|e| e.event_type == "mail_delivery_failed")
        {
            break failed.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failure was recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(failed.payload["attempt"], 1);
    let reason = failed.payload["reason"].as_str().unwrap();
    assert!(reason.contains("451"), "{reason}");
    assert!(
        !reason.contains("try again later"),
        "the server's own words (which may repeat an address) are not recorded: {reason}"
    );
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("pulse_account_mail_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(app.smtp.messages().is_empty());
    app.stop().await;
}

async fn bad_input_to_the_sign_in_routes_is_refused_in_the_json_shape(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for email in [
        "not-an-email",
        "a\u{0}b@example.com",
        "\u{FFFD}@example.com",
        "",
    ] {
        let (status, body) = request_link(&app, email).await;
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 400, "{email:?}");
        assert!(
            matches!(
                body["code"].as_str(),
                Some("invalid_email" | "invalid_request")
            ),
            "{body}"
        );
        assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    let (status, body, _) = app
        .post(
            "/api/public/magic-link/request",
            &json!({ "email": OWNER, "extra": 1 }),
            &[],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );
    for token in ["", "ml1_short", "%00", &format!("ml1_{}", "Z".repeat(52))] {
        let response = browser()
            .get(format!("{}/auth/magic-link/verify?token={token}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{token:?}");
    }
    for code in ["12345", "1234567", "abcdef", "12 456"] {
        let response = post_code(&app, OWNER, code).await;
        assert_eq!(response.status().as_u16(), 400, "{code:?}");
    }
    let wrong_method = browser()
        .get(format!("{}/auth/logout", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status().as_u16(), 405);
    let body: Value = wrong_method.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(app.smtp.messages().is_empty());
    app.stop().await;
}
