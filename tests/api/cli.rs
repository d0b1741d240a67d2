//! The `pulse-account` binary as a user runs it: `serve` with no configuration, `migrate`, and
//! `projections status|rebuild`, including the errors a mistyped argument gets.

use crate::helpers::{append, event, stream, Backend, TestDatabase};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

crate::on_both_stores!(projections_status_and_rebuild_work_from_the_command_line);

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pulse-account"));
    command
        .env_remove("PULSE_ACCOUNT_DATABASE_URL")
        .env_remove("PULSE_ACCOUNT_DATA_DIR")
        .env_remove("PULSE_ACCOUNT_LISTEN")
        .env("NO_COLOR", "1");
    command
}

pub(crate) fn run(args: &[&str], cwd: &Path) -> Output {
    binary()
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the binary runs")
}

#[test]
fn serve_with_no_configuration_uses_a_sqlite_file_in_the_local_data_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let mut child = binary()
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .current_dir(cwd.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let address = loop {
        assert!(
            Instant::now() < deadline,
            "serve never reported its address"
        );
        let line = lines.next().expect("serve exited early").unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        if entry["message"] == "pulse-account is serving" {
            assert_eq!(entry["store"], "sqlite");
            break entry["address"].as_str().unwrap().to_owned();
        }
    };
    let mut socket = std::net::TcpStream::connect(&address).unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");
    assert!(
        cwd.path().join("data/pulse-account.db").exists(),
        "the SQLite file is in ./data"
    );
    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM shuts down gracefully with exit 0, got {status}"
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter()
            .any(|line| line.contains("pulse-account stopped")),
        "{rest:?}"
    );
}

/// A running `serve` whose log lines (JSON) are collected as it writes them.
struct Served {
    child: std::process::Child,
    address: String,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Served {
    fn start(args: &[&str], cwd: &Path) -> Served {
        let mut child = binary()
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        for output in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    let _ = send.send(line);
                }
            });
        }
        let mut seen = Vec::new();
        let address = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .expect("serve reports its address");
            let entry: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
            seen.push(line);
            if entry["message"] == "pulse-account is serving" {
                break entry["address"].as_str().unwrap().to_owned();
            }
        };
        Served {
            child,
            address,
            lines,
            seen,
        }
    }

    /// Stops it with SIGTERM and returns every line it logged.
    fn stop(mut self) -> Vec<String> {
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(terminated.success());
        assert!(self.child.wait().unwrap().success());
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_purchase_logs_no_error_and_configured_secrets_never_print() {
    let cwd = tempfile::tempdir().unwrap();
    let seed = "c2VjcmV0LXNpZ25pbmctc2VlZC0zMi1ieXRlcy1sb24";
    let hash_key = "c2VjcmV0LWhtYWMta2V5LW9mLTMyLWJ5dGVzLWxvbmc";
    let master_key = "c2VjcmV0LW1hc3Rlci1rZXktb2YtMzItYnl0ZXMtbG8";
    let signing_key = format!("k1:{seed}");
    let served = Served::start(
        &[
            "--signing-key",
            &signing_key,
            "--secret-hash-key",
            hash_key,
            "--master-key",
            master_key,
        ],
        cwd.path(),
    );
    let base = format!("http://{}", served.address);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    local_purchase(&client, &base, "buyer@example.com").await;
    let lines = tokio::task::spawn_blocking(move || served.stop())
        .await
        .unwrap();
    let errors = error_lines(&lines);
    assert!(
        errors.is_empty(),
        "an applied purchase logged errors: {errors:?}"
    );
    for secret in [seed, hash_key, master_key] {
        assert!(
            !lines.iter().any(|line| line.contains(secret)),
            "a configured secret was printed"
        );
    }
}

#[test]
fn migrate_creates_the_database_and_bad_arguments_get_clear_errors() {
    let cwd = tempfile::tempdir().unwrap();
    let migrated = run(&["migrate", "--data-dir", "state"], cwd.path());
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    assert!(cwd.path().join("state/pulse-account.db").exists());

    let wrong_scheme = run(
        &["migrate", "--database-url", "mysql://localhost/x"],
        cwd.path(),
    );
    assert!(!wrong_scheme.status.success());
    assert!(String::from_utf8_lossy(&wrong_scheme.stderr).contains("must start with postgres://"));

    let bad_listen = run(&["serve", "--listen", "not-an-address"], cwd.path());
    assert_eq!(
        bad_listen.status.code(),
        Some(2),
        "clap refuses it before anything starts"
    );
    assert!(String::from_utf8_lossy(&bad_listen.stderr).contains("invalid value 'not-an-address'"));

    let negative = run(&["serve", "--readiness-lag-max", "-1"], cwd.path());
    assert_eq!(negative.status.code(), Some(2));

    let unknown = run(
        &["projections", "rebuild", "nope", "--data-dir", "state"],
        cwd.path(),
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("known projections: stream_index"));
}

async fn projections_status_and_rebuild_work_from_the_command_line(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.open().await;
    let events = (0..3)
        .map(|n| event("touched", json!({ "n": n })))
        .collect();
    store
        .append(append(&stream("license", "lic_0000000001"), 0, events))
        .await
        .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let url = db.url.clone();
    let cwd_path = cwd.path().to_owned();
    let (rebuilt, status) = tokio::task::spawn_blocking(move || {
        let rebuilt = run(
            &[
                "projections",
                "rebuild",
                "stream_index",
                "--database-url",
                &url,
            ],
            &cwd_path,
        );
        let status = run(
            &["projections", "status", "--database-url", &url],
            &cwd_path,
        );
        (rebuilt, status)
    })
    .await
    .unwrap();
    let rebuilt_out = String::from_utf8_lossy(&rebuilt.stdout);
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert!(
        rebuilt_out.contains("rebuilt stream_index: generation 2 active, 3 events folded"),
        "{rebuilt_out}"
    );
    let status_out = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success());
    assert!(status_out.contains("log head position: 3"), "{status_out}");
    let row = status_out
        .lines()
        .find(|line| line.starts_with("stream_index"))
        .unwrap();
    let columns: Vec<_> = row.split_whitespace().collect();
    assert_eq!(columns, ["stream_index", "2", "active", "3", "0"]);
    let document = store
        .read_document("stream_index", "license/lic_0000000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(document["version"], 3);
    drop(store);
    db.cleanup().await;
}

#[test]
fn export_and_verify_work_from_the_command_line() {
    let cwd = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", cwd.path().join("ledger.db").display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = pulse_account::startup::open_store(&database).await.unwrap();
        let events = (0..4)
            .map(|n| event("touched", json!({ "n": n })))
            .collect();
        store
            .append(append(&stream("license", "lic_0000000003"), 0, events))
            .await
            .unwrap();
    });
    let exported = run(
        &[
            "export",
            "--database-url",
            &database,
            "--data-dir",
            "state",
            "--output",
            "audit.jsonl",
        ],
        cwd.path(),
    );
    let stdout = String::from_utf8_lossy(&exported.stdout).into_owned();
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    assert!(stdout.contains("exported 4 records"), "{stdout}");
    let stderr = String::from_utf8_lossy(&exported.stderr);
    assert!(
        stderr.contains(&format!("[{}] 100% 4/4", "#".repeat(30))),
        "the progress bar ends full: {stderr}"
    );
    let key = stdout
        .lines()
        .find_map(|line| line.strip_prefix("public key: "))
        .unwrap()
        .to_owned();
    // A key may begin with `-` (URL-safe base64), so it is passed as `--public-key=KEY`, as the
    // export's own hint says.
    assert!(
        stdout.contains(&format!("--public-key={key}")),
        "the hint passes the key in one argument: {stdout}"
    );
    let public_key = format!("--public-key={key}");
    let verified = run(&["verify", "audit.jsonl", &public_key], cwd.path());
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(String::from_utf8_lossy(&verified.stdout).contains("export verifies: 4 records"));

    let text = std::fs::read_to_string(cwd.path().join("audit.jsonl")).unwrap();
    std::fs::write(
        cwd.path().join("tampered.jsonl"),
        text.replacen("\"n\":2", "\"n\":7", 1),
    )
    .unwrap();
    let tampered = run(&["verify", "tampered.jsonl", &public_key], cwd.path());
    assert_eq!(tampered.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&tampered.stderr).contains("does NOT verify at line 3"),
        "{}",
        String::from_utf8_lossy(&tampered.stderr)
    );
    // 4 records and the manifest are lines 1 to 5; anything after the manifest is refused.
    let first_record = text.lines().next().unwrap();
    for (name, extra) in [
        ("appended-record.jsonl", format!("{first_record}\n")),
        ("appended-garbage.jsonl", String::from("garbage\n")),
        ("appended-blank.jsonl", String::from("\n")),
    ] {
        std::fs::write(cwd.path().join(name), format!("{text}{extra}")).unwrap();
        let appended = run(&["verify", name, &public_key], cwd.path());
        assert_eq!(appended.status.code(), Some(1), "{name}");
        let stderr = String::from_utf8_lossy(&appended.stderr);
        assert!(
            stderr.contains("does NOT verify at line 6")
                && stderr.contains("after the signed manifest"),
            "{name}: {stderr}"
        );
    }
    let again = run(
        &[
            "export",
            "--database-url",
            &database,
            "--data-dir",
            "state",
            "--output",
            "audit.jsonl",
        ],
        cwd.path(),
    );
    assert!(
        !again.status.success(),
        "an existing export is never overwritten"
    );

    let sealed = run(
        &[
            "audit",
            "seal",
            "--database-url",
            &database,
            "--data-dir",
            "state",
        ],
        cwd.path(),
    );
    assert!(
        String::from_utf8_lossy(&sealed.stdout).contains("sealed 4 events up to position 4"),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    let checked = run(
        &[
            "audit",
            "check",
            "--database-url",
            &database,
            "--data-dir",
            "state",
        ],
        cwd.path(),
    );
    assert!(checked.status.success());
    assert!(String::from_utf8_lossy(&checked.stdout).contains("the log matches all 1 seals"));
}

/// Buys Relay as `email` through a served binary's local checkout (no Stripe key).
async fn local_purchase(client: &reqwest::Client, base: &str, email: &str) {
    let handoff: serde_json::Value = client
        .post(format!("{base}/v1/checkout/portal-handoff"))
        .json(&json!({ "feature": "relay", "success_url": "http://localhost:7655/auth/license-purchase-activate", "cancel_url": "http://localhost:7655/", "purchase_return_jti": "jti-log" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let started: serde_json::Value = client
        .post(format!("{base}/v1/checkout/session"))
        .json(&json!({ "portal_handoff_id": handoff["portal_handoff_id"], "plan_key": "relay", "tier": "relay", "billing_cycle": "monthly" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = started["url"].as_str().expect("a local checkout URL");
    let path = &url[url.find("/v1/").unwrap()..];
    let completed = client
        .post(format!("{base}{path}/complete"))
        .form(&[("email", email)])
        .send()
        .await
        .unwrap();
    assert_eq!(completed.status().as_u16(), 303);
}

/// Error lines among a served binary's JSON log lines.
fn error_lines(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|entry| entry["level"] == "ERROR")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_configuration_signs_a_buyer_in_offline() {
    let cwd = tempfile::tempdir().unwrap();
    let served = Served::start(&[], cwd.path());
    let base = format!("http://{}", served.address);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    local_purchase(&client, &base, "offline@example.com").await;
    let requested = client
        .post(format!("{base}/api/public/magic-link/request"))
        .json(&json!({ "email": "offline@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(requested.status().as_u16(), 200);
    let outbox = cwd.path().join("data/outbox");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let message = loop {
        let written = std::fs::read_dir(&outbox).ok().and_then(|files| {
            files
                .filter_map(Result::ok)
                .map(|file| file.path())
                .find(|path| path.extension().is_some_and(|e| e == "eml"))
        });
        if let Some(path) = written {
            break std::fs::read_to_string(path).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no .eml was written to {outbox:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(message.contains("To: offline@example.com"), "{message}");
    let unfolded = message.replace("=\r\n", "").replace("=3D", "=");
    let start = unfolded.find("token=ml1_").expect("a sign-in link") + "token=".len();
    let token = &unfolded[start..start + 56];
    let confirmed = client
        .post(format!("{base}/auth/magic-link/verify"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status().as_u16(), 303);
    let cookie = confirmed.headers()["set-cookie"].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_owned();
    let me: serde_json::Value = client
        .get(format!("{base}/api/portal/bootstrap"))
        .header("cookie", session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "offline@example.com");
    assert_eq!(me["has_self_hosted_commercial"], true);
    let lines = tokio::task::spawn_blocking(move || served.stop())
        .await
        .unwrap();
    assert!(
        lines
            .iter()
            .any(|line| line.contains("written to the outbox folder")),
        "the written email is logged"
    );
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    for file in &files {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(file).unwrap().permissions(),
        );
        assert_eq!(
            mode & 0o777,
            0o600,
            "{file:?} is readable by its owner only"
        );
    }
    let erased = run(
        &[
            "erase",
            "--email",
            "offline@example.com",
            "--reason",
            "asked",
        ],
        cwd.path(),
    );
    assert!(
        erased.status.success(),
        "{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    assert!(
        String::from_utf8_lossy(&erased.stdout).contains("1 outbox file(s) deleted"),
        "{}",
        String::from_utf8_lossy(&erased.stdout)
    );
    let left = std::fs::read_dir(&outbox)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "eml")
        })
        .count();
    assert_eq!(
        left, 0,
        "erasure deletes the outbox copies of the person's mail"
    );
    assert!(error_lines(&lines).is_empty(), "{:?}", error_lines(&lines));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_webhooks_of_every_kind_log_no_error_line() {
    let stripe = crate::fake_stripe::FakeStripe::start().await;
    let config = stripe.config();
    let cwd = tempfile::tempdir().unwrap();
    let served = Served::start(
        &[
            "--stripe-secret-key",
            "sk_test_fake",
            "--stripe-webhook-secret",
            crate::fake_stripe::WEBHOOK_SECRET,
            "--stripe-api-base",
            config.api_base.as_deref().unwrap(),
        ],
        cwd.path(),
    );
    let base = format!("http://{}", served.address);
    let client = reqwest::Client::new();
    let handoff: serde_json::Value = client
        .post(format!("{base}/v1/checkout/portal-handoff"))
        .json(&json!({ "feature": "max_monitored_systems", "success_url": "https://pulse.example/auth/license-purchase-activate", "cancel_url": "https://pulse.example/", "purchase_return_jti": "jti-1" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let started = client
        .post(format!("{base}/v1/checkout/session"))
        .json(&json!({ "portal_handoff_id": handoff["portal_handoff_id"], "plan_key": "pro", "tier": "pro", "billing_cycle": "monthly" }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status().as_u16(), 200);
    let stripe_event = crate::stripe_billing::stripe_event;
    let subscription = crate::stripe_billing::subscription;
    let events = [
        stripe_event(
            "evt_1",
            "checkout.session.completed",
            1_000,
            json!({
            "id": "cs_test_fake0001", "object": "checkout.session", "subscription": "sub_test_1", "customer": "cus_test_1",
            "customer_details": { "email": "buyer@example.com" } }),
        ),
        stripe_event(
            "evt_2",
            "customer.subscription.updated",
            2_000,
            subscription("past_due", "price_1TPmE6BrHBocJIGHHaPwluoM"),
        ),
        stripe_event(
            "evt_3",
            "invoice.paid",
            3_000,
            json!({ "id": "in_1", "object": "invoice", "subscription": "sub_test_1", "lines": { "data": [{ "period": { "end": 1_950_000_000 } }] } }),
        ),
        stripe_event(
            "evt_4",
            "customer.subscription.updated",
            1_500,
            subscription("active", "price_1TPmE6BrHBocJIGHHaPwluoM"),
        ),
        stripe_event(
            "evt_5",
            "customer.created",
            4_000,
            json!({ "id": "cus_2", "object": "customer" }),
        ),
        stripe_event(
            "evt_6",
            "charge.refunded",
            5_000,
            json!({ "id": "ch_1", "object": "charge", "customer": "cus_test_1" }),
        ),
    ];
    for event in events {
        let payload = event.to_string();
        let signature = stripe_webhook::Webhook::generate_test_header(
            &payload,
            crate::fake_stripe::WEBHOOK_SECRET,
            None,
        );
        let answer = client
            .post(format!("{base}/v1/webhooks/stripe"))
            .header("stripe-signature", signature)
            .header("content-type", "application/json")
            .body(payload)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200, "{}", event["type"]);
    }
    let lines = tokio::task::spawn_blocking(move || served.stop())
        .await
        .unwrap();
    stripe.stop();
    assert!(
        error_lines(&lines).is_empty(),
        "webhooks that took effect (or were ignored) logged errors: {:?}",
        error_lines(&lines)
    );
}
