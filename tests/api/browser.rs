//! The portal in a real browser (issue 14): headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`, a chromedriver per test on a free loopback port), journeys
//! asserting what a person sees, axe-core run on every page (no serious or critical violation),
//! and a screenshot of each page at desktop and phone width in `target/test-output/screenshots/`.
//!
//! `scripts/test` runs these when Chromium is installed and says loudly when it skips them;
//! `.ci/run` installs Chromium, chromedriver and axe-core and requires them.

use crate::helpers::{Backend, TestApp};
use crate::on_both_stores;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

on_both_stores!(
    an_msp_owner_signs_in_invites_a_tech_who_sees_no_controls_and_signs_out,
    a_self_hosted_only_buyer_lands_on_billing_and_sees_their_license,
    a_self_hosted_buyer_retrieves_their_key_and_refunds_inside_the_window,
    a_purchase_handed_in_by_pulse_picks_a_plan_and_reaches_checkout,
    a_hosted_signup_runs_offline_to_a_full_workspace_plan,
);

/// Desktop and phone widths every page is looked at.
const WIDTHS: [(&str, u32, u32); 2] = [("desktop", 1280, 900), ("phone", 375, 812)];

/// A headless Chromium with its own chromedriver.
pub(crate) struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    /// The app's base URL as the browser reaches it.
    base: String,
    /// The store, in screenshot names.
    store: &'static str,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, pointed at `app` through `localhost` (a secure
    /// context, so the `__Host-` session cookie is kept over plain HTTP).
    pub(crate) async fn open(app: &TestApp, backend: Backend) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (scripts/test skips browser tests without it)");
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "chromedriver did not start Chromium: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
            base: app.base.replace("127.0.0.1", "localhost"),
            store: match backend {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            },
        }
    }

    /// Opens `path` of the app.
    pub(crate) async fn visit(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    /// The path the browser is on now.
    pub(crate) async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        url.path().to_owned()
    }

    /// The text a person sees on the page.
    pub(crate) async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap(),
            Err(error) => panic!(
                "no page body at {}: {error}\n{}",
                self.client.current_url().await.unwrap(),
                self.client.source().await.unwrap_or_default()
            ),
        }
    }

    /// How many elements match `css`.
    pub(crate) async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// Types `text` into the field `css`.
    pub(crate) async fn fill(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }

    /// Clicks `css` (a link, or a button that submits its form) and waits until the answer's page
    /// has loaded (a marker set on the old page is gone and the new one is complete).
    pub(crate) async fn click(&self, css: &str) {
        self.client
            .execute("window.__pulseOldPage = true;", vec![])
            .await
            .unwrap();
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let loaded = self
                .client
                .execute(
                    "return window.__pulseOldPage === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .is_ok_and(|answer| answer == Value::Bool(true));
            if loaded {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "clicking {css} loaded no page"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Ticks the checkbox or radio button `css` (no page loads).
    pub(crate) async fn tick(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Chooses `value` in the select `css`.
    pub(crate) async fn choose(&self, css: &str, value: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .select_by_value(value)
            .await
            .unwrap();
    }

    /// The session cookie's value, as the browser holds it.
    pub(crate) async fn session(&self) -> String {
        self.client
            .get_named_cookie("__Host-pulse_cp_session")
            .await
            .expect("the browser holds the session cookie")
            .value()
            .to_owned()
    }

    /// Runs axe-core on the page (no serious or critical violation) and saves a screenshot of it at
    /// each width, named `name`.
    pub(crate) async fn inspect(&self, name: &str) {
        let axe = std::fs::read_to_string(axe_path()).expect("axe-core (scripts/test installs it)");
        let script = format!(
            "{axe}\nconst done = arguments[arguments.length - 1];\naxe.run(document, {{ resultTypes: ['violations'] }}).then(r => done(r.violations.map(v => ({{ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' ')) }}))));"
        );
        let folder =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output/screenshots");
        std::fs::create_dir_all(&folder).unwrap();
        for (width_name, width, height) in WIDTHS {
            self.client.set_window_size(width, height).await.unwrap();
            let violations = self.client.execute_async(&script, vec![]).await.unwrap();
            let serious: Vec<&Value> = violations
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
                .collect();
            assert!(
                serious.is_empty(),
                "{name} at {width_name} width: accessibility violations {serious:#?}"
            );
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(
                folder.join(format!("{}-{name}-{width_name}.png", self.store)),
                png,
            )
            .unwrap();
        }
        self.client.set_window_size(1280, 900).await.unwrap();
    }

    /// Ends the browser and its driver.
    pub(crate) async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where axe-core's script is: `PULSE_ACCOUNT_AXE_JS`, else where `scripts/test` installs it.
fn axe_path() -> std::path::PathBuf {
    std::env::var_os("PULSE_ACCOUNT_AXE_JS").map_or_else(
        || {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/browser-tools/node_modules/axe-core/axe.min.js")
        },
        std::path::PathBuf::from,
    )
}

/// Signs `email` in through the page: asks for a link on `/portal`, then follows the link from
/// the email as a person would (the confirmation page first); returns the link's token. With
/// `inspect`, the pages on the way are checked and photographed.
async fn sign_in_by_link_inspecting(
    browser: &Browser,
    app: &TestApp,
    email: &str,
    mails_before: usize,
    inspect: bool,
) -> String {
    browser.visit("/portal").await;
    assert!(browser.text().await.contains("Sign in to Pulse Account"));
    browser.fill("input#email", email).await;
    browser.click("button[type=submit]").await;
    assert!(browser.text().await.contains("Check your email"));
    if inspect {
        browser.inspect("sign-in-sent").await;
    }
    let mail = app
        .smtp
        .wait_for(email, mails_before + 1)
        .await
        .pop()
        .unwrap();
    browser
        .visit(&format!(
            "/auth/magic-link/verify?token={}",
            mail.sign_in_token()
        ))
        .await;
    let masked = format!("{}…@{}", &email[..1], email.split('@').nth(1).unwrap());
    assert!(browser
        .text()
        .await
        .contains(&format!("Sign in as {masked}?")));
    if inspect {
        browser.inspect("sign-in-confirm").await;
    }
    browser.click("button[type=submit]").await;
    mail.sign_in_token()
}

/// [`sign_in_by_link_inspecting`] without the inspections.
async fn sign_in_by_link(browser: &Browser, app: &TestApp, email: &str, mails_before: usize) {
    sign_in_by_link_inspecting(browser, app, email, mails_before, false).await;
}

/// Signs `email` in by typing the emailed code on the page.
async fn sign_in_by_code(browser: &Browser, app: &TestApp, email: &str, mails_before: usize) {
    browser.visit("/portal").await;
    browser.fill("input#email", email).await;
    browser.click("button[type=submit]").await;
    let mail = app
        .smtp
        .wait_for(email, mails_before + 1)
        .await
        .pop()
        .unwrap();
    browser.fill("input#code", &mail.sign_in_code()).await;
    browser
        .click("form[action='/auth/magic-link/code'] button")
        .await;
}

async fn an_msp_owner_signs_in_invites_a_tech_who_sees_no_controls_and_signs_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let account = crate::billing_portal::bought_msp_with_customer(&app).await;
    let owner = Browser::open(&app, backend).await;
    owner.visit("/").await;
    assert_eq!(
        owner.path().await,
        "/portal",
        "/ sends a browser to the portal"
    );
    owner.inspect("sign-in").await;
    sign_in_by_link(&owner, &app, crate::sign_in::OWNER, 0).await;
    assert_eq!(
        owner.path().await,
        format!("/portal/accounts/{account}/workspaces"),
        "an account with hosted workspaces lands on them"
    );
    let page = owner.text().await;
    assert!(
        page.contains("Clients"),
        "an MSP account calls them Clients: {page}"
    );
    assert!(page.contains("1 of 25 clients used."), "{page}");
    owner.inspect("clients").await;
    let tenant = running_first_workspace(&app, &account, "lab.msp.example").await;
    owner
        .visit(&format!("/portal/accounts/{account}/workspaces"))
        .await;
    owner
        .click(&format!("form[action$='/workspaces/{tenant}/open'] button"))
        .await;
    let opened = owner.client.current_url().await.unwrap();
    assert_eq!(
        opened.host_str(),
        Some("lab.msp.example"),
        "to the workspace's own host"
    );
    assert_eq!(opened.path(), "/auth/cloud-handoff");
    let token = opened
        .query_pairs()
        .find(|(name, _)| name == "token")
        .expect("the handoff token")
        .1
        .into_owned();
    let (_, jwks) = app.get("/.well-known/jwks.json").await;
    let claims = crate::workspaces::verified_handoff(&jwks, &token);
    assert_eq!(claims["role"], "owner");
    assert_eq!(claims["tenant_id"], tenant.as_str());
    owner
        .visit(&format!("/portal/accounts/{account}/workspaces"))
        .await;
    owner.fill("#workspace-name", "Lab").await;
    owner
        .click("form[action$='/workspaces/create'] button")
        .await;
    let page = owner.text().await;
    assert!(page.contains("Created."), "{page}");
    assert!(page.contains("2 of 25 clients used."), "{page}");
    assert!(page.contains("Lab"), "{page}");

    owner
        .visit(&format!("/portal/accounts/{account}/access"))
        .await;
    owner.fill("#invite-email", "tech@msp.example").await;
    owner.choose("#invite-role", "tech").await;
    owner.click("form[action$='/access/invite'] button").await;
    let page = owner.text().await;
    assert!(page.contains("Invitation sent."), "{page}");
    assert!(page.contains("tech@msp.example"), "{page}");
    owner.inspect("access-owner").await;
    for section in ["billing", "support", "activity"] {
        owner
            .visit(&format!("/portal/accounts/{account}/{section}"))
            .await;
        owner.inspect(section).await;
    }
    owner
        .visit(&format!("/portal/accounts/{account}/billing"))
        .await;
    owner.click("form[action$='/billing/manage'] button").await;
    let reached = owner.client.current_url().await.unwrap();
    assert!(
        reached
            .as_str()
            .starts_with("https://billing.stripe.com/p/session/"),
        "Manage billing sends the browser to Stripe's billing portal: {reached}"
    );
    let asked: Vec<_> = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/billing_portal/sessions")
        .collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].form["customer"], "cus_msp_9");
    assert_eq!(
        asked[0].form["return_url"],
        format!("https://account.pulse.test/portal/accounts/{account}/billing")
    );

    let tech = Browser::open(&app, backend).await;
    app.smtp.wait_for("tech@msp.example", 1).await;
    sign_in_by_code(&tech, &app, "tech@msp.example", 1).await;
    tech.visit(&format!("/portal/accounts/{account}/access"))
        .await;
    let page = tech.text().await;
    assert!(
        page.contains("Changing members needs an Owner or Admin."),
        "{page}"
    );
    assert_eq!(tech.count("select").await, 0, "a Tech sees no role control");
    assert_eq!(
        tech.count("form[action*='/access/']").await,
        0,
        "nor any member form"
    );
    tech.inspect("access-tech").await;
    tech.visit(&format!("/portal/accounts/{account}/workspaces"))
        .await;
    let page = tech.text().await;
    assert!(
        page.contains("creating or deleting them needs an Owner or Admin"),
        "{page}"
    );
    assert_eq!(
        tech.count("#workspace-name").await,
        0,
        "a Tech sees no create form"
    );
    assert_eq!(
        tech.count("form[action$='/delete']").await,
        0,
        "nor a Delete button"
    );
    tech.inspect("clients-tech").await;
    let forged = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!(
            "{}/portal/accounts/{account}/access/invite",
            app.base
        ))
        .header(
            "cookie",
            format!("__Host-pulse_cp_session={}", tech.session().await),
        )
        .form(&[("email", "sneaky@example.com"), ("role", "owner")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 303);
    let location = forged.headers()["location"].to_str().unwrap();
    assert!(
        location.ends_with("problem=forbidden"),
        "a forged POST is refused: {location}"
    );

    owner
        .visit(&format!("/portal/accounts/{account}/access"))
        .await;
    let tech_id = tech_user_id(&app, &tech).await;
    owner.choose(&format!("#role-{tech_id}"), "admin").await;
    owner
        .click(&format!("form[action$='/access/{tech_id}/role'] button"))
        .await;
    assert!(owner.text().await.contains("Role changed."));
    tech.visit(&format!("/portal/accounts/{account}/access"))
        .await;
    assert!(
        tech.count("#invite-email").await == 1,
        "an Admin now sees the invite form"
    );

    owner
        .click("header form[action='/auth/logout'] button")
        .await;
    assert_eq!(owner.path().await, "/portal");
    assert!(owner.text().await.contains("Sign in to Pulse Account"));
    let (status, _) = crate::sign_in::bootstrap(&app, Some(&tech.session().await)).await;
    assert_eq!(
        status, 200,
        "signing out ends the owner's sessions, not the Tech's"
    );
    owner.close().await;
    tech.close().await;
    app.stop().await;
}

/// The user id of whoever is signed in to `browser`.
async fn tech_user_id(app: &TestApp, browser: &Browser) -> String {
    let (status, me) = crate::sign_in::bootstrap(app, Some(&browser.session().await)).await;
    assert_eq!(status, 200);
    me["user_id"].as_str().unwrap().to_owned()
}

async fn a_self_hosted_only_buyer_lands_on_billing_and_sees_their_license(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, result) = crate::installation_flows::bought(&app).await;
    crate::installation_flows::activate_as(
        &app,
        result["activation_key"].as_str().unwrap(),
        "rack-7",
    )
    .await;
    let buyer = Browser::open(&app, backend).await;
    let token = sign_in_by_link_inspecting(&buyer, &app, "buyer@example.com", 0, true).await;
    assert_eq!(buyer.path().await, "/portal");
    let page = buyer.text().await;
    assert!(page.contains("Billing"), "{page}");
    assert!(page.contains("Your self-hosted licenses"), "{page}");
    assert!(
        page.contains(result["license_id"].as_str().unwrap()),
        "{page}"
    );
    assert!(
        page.contains("rack-7"),
        "the installation is listed: {page}"
    );
    assert!(page.contains("Monitored systems: 15"), "{page}");
    buyer.inspect("self-hosted-billing").await;
    buyer
        .visit(&format!("/auth/magic-link/verify?token={token}"))
        .await;
    assert!(
        buyer.text().await.contains("no longer works"),
        "a used link offers a new one"
    );
    buyer.inspect("sign-in-invalid").await;
    buyer.close().await;
    app.stop().await;
}

async fn a_self_hosted_buyer_retrieves_their_key_and_refunds_inside_the_window(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (license_id, key) = crate::recovery::bought_and_paid(&app, "ch_first", 2).await;
    let buyer = Browser::open(&app, backend).await;
    sign_in_by_link(&buyer, &app, "buyer@example.com", 0).await;
    assert_eq!(buyer.path().await, "/portal");
    assert!(buyer.text().await.contains("Self-hosted jobs"));
    assert_eq!(
        buyer.count("form[action^='/portal/self-hosted/']").await,
        0,
        "no panel is open until a job is picked"
    );

    buyer.click("a[href='/portal?service=retrieve']").await;
    buyer.inspect("self-hosted-retrieve").await;
    buyer
        .click("form[action='/portal/self-hosted/retrieve'] button")
        .await;
    let keys = buyer.text().await;
    assert!(keys.contains("Your activation keys"), "{keys}");
    assert!(keys.contains(&key), "the key is shown: {keys}");
    assert!(keys.contains(&license_id), "{keys}");
    buyer.inspect("license-keys").await;

    buyer.visit("/portal?service=refund").await;
    assert!(buyer
        .text()
        .await
        .contains("Within 30 days of its first payment"));
    buyer.inspect("self-hosted-refund").await;
    buyer
        .click("form[action='/portal/self-hosted/refund'] button")
        .await;
    let refunded = buyer.text().await;
    assert!(refunded.contains("Refunded"), "{refunded}");
    assert!(
        refunded.contains("revoked"),
        "the license shows revoked at once: {refunded}"
    );
    assert_eq!(
        buyer
            .count("form[action='/portal/self-hosted/refund']")
            .await,
        0,
        "nothing is left to refund"
    );
    let refunds: Vec<_> = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/refunds")
        .collect();
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        refunds[0].form.get("charge").map(String::as_str),
        Some("ch_first")
    );

    buyer.visit("/portal?service=data").await;
    buyer.inspect("self-hosted-data").await;
    buyer
        .click("form[action='/portal/self-hosted/delete'] button")
        .await;
    assert!(
        buyer.text().await.contains("Tick the box to confirm"),
        "an unticked delete changes nothing"
    );
    buyer
        .tick("form[action='/portal/self-hosted/delete'] input[name=confirm]")
        .await;
    buyer
        .click("form[action='/portal/self-hosted/delete'] button")
        .await;
    let deleted = buyer.text().await;
    assert!(deleted.contains("Your data is deleted"), "{deleted}");
    assert!(deleted.contains("1 license(s) revoked"), "{deleted}");
    buyer.inspect("data-deleted").await;
    buyer.visit("/portal").await;
    assert!(
        buyer.text().await.contains("Sign in to Pulse Account"),
        "the erased person is signed out everywhere"
    );
    buyer.close().await;
    app.stop().await;
}

async fn a_purchase_handed_in_by_pulse_picks_a_plan_and_reaches_checkout(backend: Backend) {
    let app = TestApp::spawn_local(backend).await;
    let handoff = crate::upgrade::handed_in(&app).await;
    let buyer = Browser::open(&app, backend).await;
    buyer
        .visit(&format!("/portal?portal_handoff_id={handoff}"))
        .await;
    assert_eq!(buyer.path().await, "/portal/upgrade");
    let page = buyer.text().await;
    assert!(page.contains("Upgrade Pulse"), "{page}");
    assert!(page.contains("8.99 USD a month"), "{page}");
    buyer.inspect("upgrade").await;
    buyer.tick("input[value='pro:monthly']").await;
    buyer.click("form[action='/portal/upgrade'] button").await;
    // The checkout's address is under the public URL (another host in the tests): its path is
    // the app's local checkout.
    assert!(
        buyer.path().await.starts_with("/v1/checkout/local/"),
        "to the (local) checkout of the chosen plan"
    );
    buyer.close().await;
    app.stop().await;
}

async fn a_hosted_signup_runs_offline_to_a_full_workspace_plan(backend: Backend) {
    let app = TestApp::spawn_local(backend).await;
    let founder = Browser::open(&app, backend).await;
    founder.visit("/portal").await;
    founder.click("a[href='/portal/signup']").await;
    founder.inspect("signup").await;
    founder.fill("#email", "founder@new.example").await;
    founder.fill("#org_name", "New Co").await;
    founder.choose("#plan_key", "cloud_starter").await;
    founder
        .click("form[action='/api/public/signup'] button")
        .await;
    // The checkout's address is under the public URL (another host in the tests): follow its
    // path on the app.
    let checkout = founder.path().await;
    assert!(
        checkout.starts_with("/v1/checkout/local/"),
        "to the (local) checkout"
    );
    founder.visit(&checkout).await;
    founder.inspect("local-checkout").await;
    founder
        .fill("input[name=email]", "founder@new.example")
        .await;
    founder.click("form button").await;
    assert_eq!(founder.path().await, "/portal/signup/done");
    assert!(founder
        .text()
        .await
        .contains("A sign-in link is on its way"));
    founder.inspect("signup-done").await;
    let mail = app
        .smtp
        .wait_for("founder@new.example", 1)
        .await
        .pop()
        .unwrap();
    founder
        .visit(&format!(
            "/auth/magic-link/verify?token={}",
            mail.sign_in_token()
        ))
        .await;
    founder.click("button[type=submit]").await;
    assert!(
        founder.path().await.ends_with("/workspaces"),
        "a hosted account lands on Workspaces"
    );
    let page = founder.text().await;
    assert!(page.contains("New Co"), "{page}");
    assert!(page.contains("1 of 1 workspaces used."), "{page}");
    founder.fill("#workspace-name", "Second").await;
    founder
        .click("form[action$='/workspaces/create'] button")
        .await;
    let page = founder.text().await;
    assert!(
        page.contains("Every place of your plan is in use"),
        "{page}"
    );
    assert!(page.contains("1 of 1 workspaces used."), "{page}");
    founder.inspect("workspaces-full").await;
    founder.click("nav a[href$='/billing']").await;
    founder
        .click("form[action$='/billing/manage'] button")
        .await;
    assert!(
        founder.text().await.contains("offline stand-in"),
        "local mode's billing portal"
    );
    founder.inspect("billing-local").await;
    founder.close().await;
    app.stop().await;
}

/// Boots the account's first workspace and has its runtime pin `host`, as the provisioner and the
/// runtime's first lease refresh would; returns its id.
async fn running_first_workspace(
    app: &TestApp,
    account: &str,
    host: &str,
) -> aggregates::ids::TenantId {
    let events = app.all_events().await;
    let tenant = aggregates::ids::TenantId::parse(
        events
            .iter()
            .find(|e| e.event_type == "tenant_provisioned")
            .unwrap()
            .payload["tenant_id"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let account_id = aggregates::ids::AccountId::parse(account).unwrap();
    app.account_command(
        &account_id,
        aggregates::account::AccountCommand::ChangeTenantState {
            tenant_id: tenant.clone(),
            to: aggregates::account::TenantState::Active,
            reason: String::from("booted"),
        },
    )
    .await;
    let token = pulse_account::flows::hosted::lease_refresh_token(&app.state.keys, &tenant);
    let refresh = json!({ "org_id": account, "instance_host": host, "entitlement_refresh_token": token.expose() });
    let (status, _, _) = app.post("/api/entitlements/refresh", &refresh, &[]).await;
    assert_eq!(status, 200);
    tenant
}
