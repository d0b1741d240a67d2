//! The portal's Upgrade job (`DOMAIN.md` §6.2–6.3, `PORTAL.md` §5): a purchase Pulse hands into
//! `/portal` opens a page offering the self-hosted plans checkout sells; its form starts one
//! Stripe Checkout per choice, however often it is submitted.

use crate::helpers::{Backend, TestApp};
use serde_json::json;

crate::on_both_stores!(
    a_handed_in_purchase_offers_the_self_hosted_plans_and_starts_one_checkout,
    an_unknown_or_malformed_handoff_gets_a_page_saying_so,
);

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Pulse starts a purchase; returns the handoff id.
pub(crate) async fn handed_in(app: &TestApp) -> String {
    let request = json!({ "feature": "max_monitored_systems", "success_url": "https://pulse.example/auth/license-purchase-activate", "cancel_url": "https://pulse.example/", "purchase_return_jti": "jti-1" });
    let (status, handoff, _) = app.post("/v1/checkout/portal-handoff", &request, &[]).await;
    assert_eq!(status, 201, "{handoff}");
    handoff["portal_handoff_id"].as_str().unwrap().to_owned()
}

async fn choose(app: &TestApp, handoff: &str, offer: &str, site: &str) -> reqwest::Response {
    no_redirects()
        .post(format!("{}/portal/upgrade", app.base))
        .header("sec-fetch-site", site)
        .form(&[("portal_handoff_id", handoff), ("offer", offer)])
        .send()
        .await
        .unwrap()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

async fn a_handed_in_purchase_offers_the_self_hosted_plans_and_starts_one_checkout(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let handoff = handed_in(&app).await;
    let arrival = no_redirects()
        .get(format!("{}/portal?portal_handoff_id={handoff}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(arrival.status().as_u16(), 303);
    let page_path = location(&arrival);
    assert_eq!(
        page_path,
        format!("/portal/upgrade?portal_handoff_id={handoff}")
    );
    let page = no_redirects()
        .get(format!("{}{page_path}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    for offered in [
        "value=\"relay:monthly\"",
        "value=\"pro:monthly\"",
        "8.99 USD a month",
    ] {
        assert!(html.contains(offered), "{offered} in {html}");
    }
    for not_offered in ["cloud_", "msp_", "pro_plus", "grandfathered"] {
        assert!(!html.contains(not_offered), "{not_offered} is not offered");
    }
    let (_, view) = app
        .get(&format!(
            "/v1/checkout/portal-handoff?portal_handoff_id={handoff}"
        ))
        .await;
    assert!(
        view["resolved_at"].is_string(),
        "the page is the browser's lookup: {view}"
    );

    let first = choose(&app, &handoff, "pro:monthly", "same-origin").await;
    assert_eq!(first.status().as_u16(), 303);
    let checkout_url = location(&first);
    assert!(
        checkout_url.starts_with("https://checkout.stripe.test/"),
        "{checkout_url}"
    );
    let again = choose(&app, &handoff, "pro:monthly", "same-origin").await;
    assert_eq!(
        location(&again),
        checkout_url,
        "a double submit reaches the same Checkout"
    );
    let sessions: Vec<_> = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/checkout/sessions")
        .collect();
    assert_eq!(sessions.len(), 1, "Stripe is asked once");
    assert_eq!(
        sessions[0]
            .form
            .get("line_items[0][price]")
            .map(String::as_str),
        Some("price_1TPmE6BrHBocJIGHHaPwluoM"),
        "Pro's monthly price"
    );

    let refused = choose(&app, &handoff, "pro_plus:monthly", "same-origin").await;
    assert_eq!(
        location(&refused),
        format!("/portal/upgrade?portal_handoff_id={handoff}&problem=plan_not_purchasable")
    );
    let forged = choose(&app, &handoff, "relay:monthly", "cross-site").await;
    assert_eq!(
        forged.status().as_u16(),
        403,
        "a cross-site form changes nothing"
    );
    assert_eq!(
        app.stripe
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/checkout/sessions")
            .count(),
        1
    );
    app.stop().await;
}

async fn an_unknown_or_malformed_handoff_gets_a_page_saying_so(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for id in ["cph_0000000000", "not%20an%20id", "cph_%00"] {
        let page = no_redirects()
            .get(format!(
                "{}/portal/upgrade?portal_handoff_id={id}",
                app.base
            ))
            .send()
            .await
            .unwrap();
        let status = page.status().as_u16();
        assert!(status == 404 || status == 400, "{id}: {status}");
        if status == 404 {
            assert!(page.text().await.unwrap().contains("not valid"));
        }
    }
    app.stop().await;
}
