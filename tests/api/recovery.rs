//! The self-hosted recovery jobs and self-refund (issue 15, `PORTAL.md` §4), from outside: each job
//! end to end through the real SMTP listener (request → code arrives → confirm → result), the
//! code's limits (once, five wrong codes, bound to its job), the identical answer for an unknown
//! email, racing confirmations and refunds, the export's signature against the JWKS, and the
//! delete that leaves the email nowhere. A self-refund also cancels the license's subscription.

use crate::helpers::{Backend, TestApp};
use crate::installation_flows::activate_as;
use crate::stripe_billing::{purchase, stripe_event};
use pulse_account::crypto::signing::verify_with_jwks;
use pulse_account::flows::recovery::{canonical_json, ExportClaims, EXPORT_AUDIENCE};
use serde_json::{json, Value};
use sha2::Digest;

crate::on_both_stores!(
    retrieve_sends_a_code_and_the_code_shows_every_license_with_its_key_once,
    an_unknown_email_gets_the_same_answer_and_no_mail,
    the_fifth_wrong_code_ends_it_and_the_right_one_no_longer_works,
    a_code_for_one_job_is_refused_by_another,
    two_confirmations_at_once_act_once,
    manage_opens_a_billing_portal_for_the_licenses_stripe_customer,
    the_export_holds_the_emails_data_and_verifies_against_the_jwks,
    delete_revokes_the_licenses_and_leaves_the_email_nowhere,
    a_self_refund_in_the_window_refunds_once_revokes_and_stripes_refund_event_changes_nothing,
    two_self_refunds_at_once_ask_stripe_once,
    an_ineligible_self_refund_says_why_and_changes_nothing,
    a_self_refund_stripe_refuses_is_502_and_the_license_stays,
);

const BUYER: &str = "buyer@example.com";

/// Buys Pro as [`BUYER`] and pays its first invoice by `charge`, `paid_days_ago` days ago;
/// returns the license id and its activation key.
pub(crate) async fn bought_and_paid(
    app: &TestApp,
    charge: &str,
    paid_days_ago: i64,
) -> (String, String) {
    let license_id = purchase(app).await;
    let paid_at = chrono::Utc::now().timestamp() - paid_days_ago * 86_400;
    let invoice = json!({ "id": "in_1", "object": "invoice", "subscription": "sub_test_1", "charge": charge, "lines": { "data": [{ "period": { "end": paid_at + 30 * 86_400 } }] } });
    let (status, answer) = app
        .send_webhook(
            &stripe_event("evt_paid", "invoice.paid", paid_at, invoice),
            false,
        )
        .await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("applied")));
    let (_, session) = app
        .get("/v1/checkout/session?session_id=cs_test_fake0001")
        .await;
    let key = session["activation_key"].as_str().unwrap().to_owned();
    (license_id, key)
}

/// Asks for a code for the job at `request_path`; answers the answer and the code that arrived.
async fn code_for(app: &TestApp, request_path: &str, email: &str) -> (Value, String) {
    let before = app.smtp.messages_to(email).len();
    let (status, answer, _) = app
        .post(request_path, &json!({ "email": email }), &[])
        .await;
    assert_eq!(status, 200, "{answer}");
    let mail = app.smtp.wait_for(email, before + 1).await;
    (answer, mail.last().unwrap().recovery_code())
}

async fn confirm(app: &TestApp, path: &str, email: &str, code: &str) -> (u16, Value) {
    let (status, answer, _) = app
        .post(path, &json!({ "email": email, "code": code }), &[])
        .await;
    (status, answer)
}

fn events_of_type(events: &[aggregates::log::RecordedEvent], event_type: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.event_type == event_type)
        .map(|e| e.payload.clone())
        .collect()
}

async fn retrieve_sends_a_code_and_the_code_shows_every_license_with_its_key_once(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (license_id, key) = bought_and_paid(&app, "ch_1", 0).await;
    let (answer, code) = code_for(&app, "/v1/retrieve-license/request", BUYER).await;
    assert_eq!(answer["success"], true);
    let (_, again, _) = app
        .post(
            "/v1/retrieve-license/request",
            &json!({ "email": BUYER }),
            &[],
        )
        .await;
    assert_eq!(again, answer, "asking again answers the same");
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(
        app.smtp.messages_to(BUYER).len(),
        1,
        "one code a minute per job: the second request sent nothing"
    );
    let mail = app.smtp.messages_to(BUYER).pop().unwrap();
    assert!(mail.subject.contains("retrieve"), "{}", mail.subject);
    assert!(
        !mail.body.contains(&key),
        "the mail holds the code, never the key"
    );

    let (status, retrieved) =
        confirm(&app, "/v1/retrieve-license", "Buyer@Example.com", &code).await;
    assert_eq!(status, 200, "{retrieved}");
    let license = &retrieved["licenses"][0];
    assert_eq!(license["license_id"], license_id.as_str());
    assert_eq!(
        license["activation_key"],
        key.as_str(),
        "derived, never stored"
    );
    assert_eq!(
        (license["tier"].as_str(), license["plan_version"].as_str()),
        (Some("pro"), Some("pro"))
    );
    assert_eq!(license["email"], BUYER);
    assert!(license["issued_at"].is_string() && license["expires_at"].is_string());
    assert_eq!(retrieved["licenses"].as_array().unwrap().len(), 1);

    let (status, again) = confirm(&app, "/v1/retrieve-license", BUYER, &code).await;
    assert_eq!(
        (status, again["code"].as_str()),
        (400, Some("invalid_token"))
    );
    let events = app.all_events().await;
    assert_eq!(events_of_type(&events, "email_code_issued").len(), 1);
    assert_eq!(events_of_type(&events, "email_code_used").len(), 1);
    let issued = &events_of_type(&events, "email_code_issued")[0];
    assert!(
        !issued.to_string().contains(&code),
        "the log holds the code's keyed hash only"
    );
    app.stop().await;
}

async fn an_unknown_email_gets_the_same_answer_and_no_mail(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_and_paid(&app, "ch_1", 0).await;
    let paths = [
        "/v1/manage/request",
        "/v1/retrieve-license/request",
        "/v1/gdpr/request-export",
        "/v1/gdpr/request-delete",
    ];
    for path in paths {
        let (known, _) = code_for(&app, path, BUYER).await;
        let (status, unknown, _) = app
            .post(path, &json!({ "email": "stranger@example.com" }), &[])
            .await;
        assert_eq!((status, &unknown), (200, &known), "{path}");
    }
    let (status, malformed, _) = app
        .post(paths[0], &json!({ "email": "not-an-email" }), &[])
        .await;
    assert_eq!(
        (status, malformed["code"].as_str()),
        (400, Some("invalid_email"))
    );
    // The known email's four codes arrived; give the stranger's requests as long, and more.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert!(app.smtp.messages_to("stranger@example.com").is_empty());
    assert_eq!(app.smtp.messages_to(BUYER).len(), 4);
    let events = app.all_events().await;
    assert_eq!(
        events_of_type(&events, "email_code_issued").len(),
        4,
        "nothing is recorded for an unknown email"
    );
    app.stop().await;
}

async fn the_fifth_wrong_code_ends_it_and_the_right_one_no_longer_works(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_and_paid(&app, "ch_1", 0).await;
    let (_, code) = code_for(&app, "/v1/gdpr/request-export", BUYER).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let (status, refused) = confirm(&app, "/v1/gdpr/export", BUYER, wrong).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (400, Some("invalid_token"))
        );
    }
    let (status, refused) = confirm(&app, "/v1/gdpr/export", BUYER, &code).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("invalid_token")),
        "five wrong codes ended it: a new one is needed"
    );
    let events = app.all_events().await;
    let rejected = events_of_type(&events, "email_code_rejected");
    assert_eq!(rejected.len(), 5, "each wrong code is an event");
    assert_eq!(rejected[4]["attempts_left"], 0, "the fifth exhausted it");
    assert!(events_of_type(&events, "email_code_used").is_empty());
    for malformed in ["12345", "abcdef", "1234567"] {
        let (status, _) = confirm(&app, "/v1/gdpr/export", BUYER, malformed).await;
        assert_eq!(status, 400);
    }
    app.stop().await;
}

async fn a_code_for_one_job_is_refused_by_another(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_and_paid(&app, "ch_1", 0).await;
    let (_, code) = code_for(&app, "/v1/retrieve-license/request", BUYER).await;
    for other in ["/v1/gdpr/export", "/v1/manage"] {
        let (status, refused) = confirm(&app, other, BUYER, &code).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (400, Some("invalid_token")),
            "{other}"
        );
    }
    let (status, refused, _) = app
        .post(
            "/v1/gdpr/confirm-delete",
            &json!({ "email": BUYER, "code": code, "confirm": true }),
            &[],
        )
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("invalid_token"))
    );
    let (status, retrieved) = confirm(&app, "/v1/retrieve-license", BUYER, &code).await;
    assert_eq!(status, 200, "its own job still takes it: {retrieved}");
    let events = app.all_events().await;
    assert!(events_of_type(&events, "license_revoked").is_empty());
    app.stop().await;
}

async fn two_confirmations_at_once_act_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_and_paid(&app, "ch_1", 0).await;
    let (_, code) = code_for(&app, "/v1/gdpr/request-export", BUYER).await;
    let (first, second) = tokio::join!(
        confirm(&app, "/v1/gdpr/export", BUYER, &code),
        confirm(&app, "/v1/gdpr/export", BUYER, &code),
    );
    let mut statuses = [first.0, second.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400], "{first:?} {second:?}");
    let events = app.all_events().await;
    assert_eq!(events_of_type(&events, "email_code_used").len(), 1);
    app.stop().await;
}

async fn manage_opens_a_billing_portal_for_the_licenses_stripe_customer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bought_and_paid(&app, "ch_1", 0).await;
    let (_, code) = code_for(&app, "/v1/manage/request", BUYER).await;
    let (status, managed) = confirm(&app, "/v1/manage", BUYER, &code).await;
    assert_eq!(status, 200, "{managed}");
    assert_eq!(managed["local"], false);
    assert!(managed["url"]
        .as_str()
        .unwrap()
        .starts_with("https://billing.stripe.com/p/session/"));
    let asked: Vec<_> = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/billing_portal/sessions")
        .collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].form.get("customer").map(String::as_str),
        Some("cus_test_1")
    );
    app.stop().await;
}

async fn the_export_holds_the_emails_data_and_verifies_against_the_jwks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (license_id, key) = bought_and_paid(&app, "ch_1", 0).await;
    activate_as(&app, &key, "zephyr-rack-7").await;
    let (_, code) = code_for(&app, "/v1/gdpr/request-export", BUYER).await;
    let (status, exported) = confirm(&app, "/v1/gdpr/export", BUYER, &code).await;
    assert_eq!(status, 200, "{exported}");
    let document = &exported["export"];
    assert_eq!(document["email"], BUYER);
    assert_eq!(document["licenses"][0]["license_id"], license_id.as_str());
    assert_eq!(
        document["installations"][0]["instance_name"], "zephyr-rack-7",
        "names opened"
    );
    let events = document["events"].as_array().unwrap();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    for expected in [
        "license_issued",
        "payment_succeeded",
        "installation_activated",
        "email_code_issued",
    ] {
        assert!(types.contains(&expected), "{expected} in {types:?}");
    }
    let positions: Vec<i64> = events
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "in log order, each with its position"
    );
    let issued = events
        .iter()
        .find(|e| e["event_type"] == "license_issued")
        .unwrap();
    assert_eq!(
        issued["payload"]["owner_email"], BUYER,
        "opened for its owner"
    );

    let (_, jwks) = app.get("/.well-known/jwks.json").await;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[EXPORT_AUDIENCE]);
    validation.set_required_spec_claims(&["iss", "aud", "sub"]);
    let claims: ExportClaims =
        verify_with_jwks(exported["signature"].as_str().unwrap(), &jwks, &validation)
            .expect("the signature verifies against the JWKS");
    assert_eq!(
        claims.export_sha256,
        hex::encode(sha2::Sha256::digest(canonical_json(document)))
    );
    assert_eq!(claims.sub, document["person_id"].as_str().unwrap());
    let mut tampered = document.clone();
    tampered["licenses"][0]["plan_version"] = json!("enterprise");
    assert_ne!(
        claims.export_sha256,
        hex::encode(sha2::Sha256::digest(canonical_json(&tampered))),
        "a changed document no longer matches what was signed"
    );
    app.stop().await;
}

async fn delete_revokes_the_licenses_and_leaves_the_email_nowhere(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (license_id, key) = bought_and_paid(&app, "ch_1", 0).await;
    activate_as(&app, &key, "zephyr-rack-7").await;
    let (_, code) = code_for(&app, "/v1/gdpr/request-delete", BUYER).await;
    let (status, refused, _) = app
        .post(
            "/v1/gdpr/confirm-delete",
            &json!({ "email": BUYER, "code": code }),
            &[],
        )
        .await;
    assert_eq!(
        (
            status,
            refused["code"].as_str(),
            refused["details"]["field"].as_str()
        ),
        (400, Some("invalid_request"), Some("confirm"))
    );
    let (status, deleted, _) = app
        .post(
            "/v1/gdpr/confirm-delete",
            &json!({ "email": BUYER, "code": code, "confirm": true }),
            &[],
        )
        .await;
    assert_eq!(
        status, 200,
        "the code survived the unconfirmed try: {deleted}"
    );
    assert_eq!(deleted["deleted_count"], 1);
    assert!(deleted["message"].is_string());
    assert!(deleted["stripe_reminder"]
        .as_str()
        .unwrap()
        .contains("Stripe"));

    let events = app.all_events().await;
    let revoked = events_of_type(&events, "license_revoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["reason"], "erasure", "an event with the reason");
    assert!(events
        .iter()
        .any(|e| e.event_type == "license_revoked" && e.stream.stream_id() == license_id));
    assert_eq!(events_of_type(&events, "personal_data_erased").len(), 1);

    let local_part = BUYER.split('@').next().unwrap();
    for needle in [BUYER, "zephyr-rack-7"] {
        assert_eq!(
            app.db.tables_containing(needle).await,
            vec![],
            "no table holds {needle}"
        );
    }
    if backend == Backend::Sqlite {
        for (file, bytes) in app.db.sqlite_files() {
            for needle in [BUYER, local_part, "zephyr-rack-7"] {
                assert!(
                    !bytes
                        .windows(needle.len())
                        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes())),
                    "{file} still holds {needle:?}"
                );
            }
        }
    }
    let mailed = app.smtp.messages_to(BUYER).len();
    let (status, _, _) = app
        .post(
            "/v1/retrieve-license/request",
            &json!({ "email": BUYER }),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(
        app.smtp.messages_to(BUYER).len(),
        mailed,
        "an erased email owns nothing: no code"
    );
    app.stop().await;
}

async fn self_refund(app: &TestApp, email: &str, key: &str) -> (u16, Value) {
    let (status, answer, _) = app
        .post(
            "/v1/self-refund",
            &json!({ "email": email, "token": key }),
            &[],
        )
        .await;
    (status, answer)
}

fn refunds_asked(app: &TestApp) -> Vec<crate::fake_stripe::Recorded> {
    app.stripe
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/refunds")
        .collect()
}

async fn a_self_refund_in_the_window_refunds_once_revokes_and_stripes_refund_event_changes_nothing(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (license_id, key) = bought_and_paid(&app, "ch_first", 29).await;
    let (status, refunded) = self_refund(&app, "Buyer@Example.com", &key).await;
    assert_eq!(status, 200, "{refunded}");
    assert_eq!(refunded["license_id"], license_id.as_str());
    assert_eq!(refunded["charge"], "ch_first");
    let refund_id = refunded["refund_id"].as_str().unwrap().to_owned();
    assert!(refund_id.starts_with("re_test_fake"));
    let asked = refunds_asked(&app);
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].form.get("charge").map(String::as_str),
        Some("ch_first")
    );
    assert_eq!(
        asked[0].idempotency_key.as_deref(),
        Some(format!("self-refund:{license_id}").as_str()),
        "a key derived from the license"
    );
    let canceled: Vec<_> = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/subscriptions/sub_test_1")
        .collect();
    assert_eq!(
        canceled.len(),
        1,
        "the subscription is canceled, so nothing bills again"
    );
    assert_eq!(
        canceled[0].idempotency_key.as_deref(),
        Some(format!("self-refund-cancel:{license_id}").as_str())
    );
    assert_eq!(
        canceled[0].form.get("prorate").map(String::as_str),
        Some("false")
    );

    let (status, entitlements, _) = app
        .post(
            "/v1/activate",
            &json!({ "activation_key": key, "instance_name": "late", "instance_fingerprint": "fp-late", "client_version": "6.0.1" }),
            &[],
        )
        .await;
    assert_eq!(
        (status, entitlements["code"].as_str()),
        (403, Some("LICENSE_REVOKED")),
        "revoked at once"
    );

    let deleted = json!({ "id": "sub_test_1", "object": "subscription", "status": "canceled", "customer": "cus_test_1", "metadata": {}, "items": { "data": [] } });
    let (status, _) = app
        .send_webhook(
            &stripe_event(
                "evt_deleted",
                "customer.subscription.deleted",
                chrono::Utc::now().timestamp(),
                deleted,
            ),
            false,
        )
        .await;
    assert_eq!(status, 200);
    let refund = json!({ "id": "ch_first", "object": "charge", "refunded": true });
    let (status, answer) = app
        .send_webhook(
            &stripe_event(
                "evt_refunded",
                "charge.refunded",
                chrono::Utc::now().timestamp(),
                refund,
            ),
            false,
        )
        .await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("ignored")),
        "{answer}"
    );
    let events = app.all_events().await;
    assert_eq!(events_of_type(&events, "license_revoked").len(), 1);
    assert_eq!(
        events_of_type(&events, "license_revoked")[0]["reason"],
        "refund"
    );
    assert_eq!(events_of_type(&events, "self_refund_issued").len(), 1);
    let revoked_at = events
        .iter()
        .find(|e| e.event_type == "license_revoked")
        .unwrap()
        .global_position;
    let after: Vec<&str> = events
        .iter()
        .filter(|e| e.stream.stream_id() == license_id && e.global_position > revoked_at)
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        after,
        ["stripe_event_ignored"],
        "Stripe's cancellation is recorded as ignored on the license: it changes it no more"
    );

    let (status, again) = self_refund(&app, BUYER, &key).await;
    assert_eq!(
        (
            status,
            again["code"].as_str(),
            again["details"]["reason"].as_str()
        ),
        (403, Some("refund_not_eligible"), Some("already_refunded"))
    );
    assert_eq!(refunds_asked(&app).len(), 1, "once per license");
    app.stop().await;
}

async fn two_self_refunds_at_once_ask_stripe_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, key) = bought_and_paid(&app, "ch_first", 1).await;
    let (first, second) = tokio::join!(
        self_refund(&app, BUYER, &key),
        self_refund(&app, BUYER, &key)
    );
    let mut codes = [first.0, second.0];
    codes.sort_unstable();
    assert!(
        codes == [200, 403] || codes == [200, 409],
        "one refunds, the other is told it is in progress or done: {first:?} {second:?}"
    );
    assert_eq!(refunds_asked(&app).len(), 1, "Stripe is asked once");
    let events = app.all_events().await;
    assert_eq!(events_of_type(&events, "self_refund_requested").len(), 1);
    assert_eq!(events_of_type(&events, "license_revoked").len(), 1);
    app.stop().await;
}

async fn an_ineligible_self_refund_says_why_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let license_id = purchase(&app).await;
    let (_, session) = app
        .get("/v1/checkout/session?session_id=cs_test_fake0001")
        .await;
    let key = session["activation_key"].as_str().unwrap().to_owned();
    let reason = |answer: &Value| answer["details"]["reason"].as_str().map(str::to_owned);

    let (status, refused) = self_refund(&app, BUYER, &key).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(reason(&refused).as_deref(), Some("not_paid"));

    let (status, refused) = self_refund(&app, "someone@example.com", &key).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (401, Some("invalid_activation_key")),
        "another email's key is as good as none"
    );
    let (status, _) = self_refund(&app, BUYER, "ppk_live_nothing").await;
    assert_eq!(status, 401);

    let old = chrono::Utc::now().timestamp() - 31 * 86_400;
    let invoice = json!({ "id": "in_1", "object": "invoice", "subscription": "sub_test_1", "charge": "ch_old", "lines": { "data": [{ "period": { "end": old + 30 * 86_400 } }] } });
    app.send_webhook(
        &stripe_event("evt_paid", "invoice.paid", old, invoice),
        false,
    )
    .await;
    let (status, refused) = self_refund(&app, BUYER, &key).await;
    assert_eq!(status, 403);
    assert_eq!(reason(&refused).as_deref(), Some("window_passed"));

    let dispute = json!({ "id": "dp_1", "object": "dispute", "charge": "ch_old" });
    app.send_webhook(
        &stripe_event("evt_dispute", "charge.dispute.created", old + 10, dispute),
        false,
    )
    .await;
    let (status, refused) = self_refund(&app, BUYER, &key).await;
    assert_eq!(status, 403);
    assert_eq!(reason(&refused).as_deref(), Some("revoked"));

    assert!(refunds_asked(&app).is_empty(), "Stripe was never asked");
    let events = app.all_events().await;
    assert!(events_of_type(&events, "self_refund_requested").is_empty());
    assert!(events
        .iter()
        .filter(|e| e.stream.stream_id() == license_id)
        .all(|e| e.event_type != "license_revoked" || e.payload["reason"] == "dispute"));
    app.stop().await;
}

async fn a_self_refund_stripe_refuses_is_502_and_the_license_stays(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, key) = bought_and_paid(&app, "ch_first", 0).await;
    app.stripe.fail_refunds(true);
    let (status, failed) = self_refund(&app, BUYER, &key).await;
    assert_eq!(
        (status, failed["code"].as_str()),
        (502, Some("stripe_unavailable")),
        "{failed}"
    );
    let (status, pending) = self_refund(&app, BUYER, &key).await;
    assert_eq!(
        (status, pending["code"].as_str()),
        (409, Some("refund_in_progress")),
        "the asked refund belongs to its request for a minute"
    );
    let events = app.all_events().await;
    assert!(events_of_type(&events, "license_revoked").is_empty());
    assert!(events_of_type(&events, "self_refund_issued").is_empty());
    assert_eq!(refunds_asked(&app).len(), 1);
    app.stop().await;
}
