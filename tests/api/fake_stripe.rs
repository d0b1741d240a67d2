//! A local fake of Stripe's HTTP API: real HTTP on loopback, answering like Stripe for the calls the
//! ledger makes, and recording every request so tests can assert what Stripe was asked.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use pulse_account::gateways::stripe::StripeConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The webhook signing secret the fake and the app share.
pub(crate) const WEBHOOK_SECRET: &str = "whsec_test_fake";

/// One request the fake received.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) path: String,
    pub(crate) form: BTreeMap<String, String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) authorization: Option<String>,
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    sessions_by_key: BTreeMap<String, Value>,
    refunds_by_key: BTreeMap<String, Value>,
    refunds_fail: bool,
}

/// The running fake.
pub(crate) struct FakeStripe {
    address: std::net::SocketAddr,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

async fn create_session(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> Json<Value> {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let idempotency_key = header("idempotency-key");
    let mut inner = inner.lock().unwrap();
    inner.requests.push(Recorded {
        path: String::from("/v1/checkout/sessions"),
        form: form.clone(),
        idempotency_key: idempotency_key.clone(),
        authorization: header("authorization"),
    });
    if let Some(previous) = idempotency_key
        .as_ref()
        .and_then(|key| inner.sessions_by_key.get(key))
    {
        return Json(previous.clone());
    }
    let number = inner.sessions_by_key.len() + 1;
    let id = format!("cs_test_fake{number:04}");
    let now = chrono::Utc::now().timestamp();
    let metadata: BTreeMap<_, _> = form
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_owned(), v.clone()))
        })
        .collect();
    let session = json!({
        "id": id,
        "object": "checkout.session",
        "automatic_tax": { "enabled": false },
        "cancel_url": form.get("cancel_url"),
        "client_reference_id": form.get("client_reference_id"),
        "created": now,
        "custom_fields": [],
        "custom_text": {},
        "expires_at": now + 86_400,
        "livemode": false,
        "metadata": metadata,
        "mode": "subscription",
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "shipping_options": [],
        "status": "open",
        "success_url": form.get("success_url"),
        "url": format!("https://checkout.stripe.test/c/pay/{id}"),
    });
    if let Some(key) = idempotency_key {
        inner.sessions_by_key.insert(key, session.clone());
    } else {
        inner
            .sessions_by_key
            .insert(format!("no-key-{number}"), session.clone());
    }
    Json(session)
}

/// `POST /v1/billing_portal/sessions`: a Billing Portal session for the customer asked for.
async fn create_portal_session(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> Json<Value> {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let mut inner = inner.lock().unwrap();
    inner.requests.push(Recorded {
        path: String::from("/v1/billing_portal/sessions"),
        form: form.clone(),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    let number = inner.requests.len();
    Json(json!({
        "id": format!("bps_test_{number:04}"), "object": "billing_portal.session",
        "configuration": "bpc_test_1", "created": 1_000, "customer": form.get("customer"),
        "customer_account": null, "flow": null, "livemode": false, "locale": null,
        "on_behalf_of": null, "return_url": form.get("return_url"),
        "url": format!("https://billing.stripe.com/p/session/test_{number:04}"),
    }))
}

/// `POST /v1/refunds`: a refund of the charge asked for; the same idempotency key answers the
/// same refund (and refunds nothing more), as Stripe does. While told to fail, a 500 like an
/// outage, recorded all the same.
async fn create_refund(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> (axum::http::StatusCode, Json<Value>) {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut inner = inner.lock().unwrap();
    inner.requests.push(Recorded {
        path: String::from("/v1/refunds"),
        form: form.clone(),
        idempotency_key: idempotency_key.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    if inner.refunds_fail {
        let error =
            json!({ "error": { "type": "api_error", "message": "An unknown error occurred" } });
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, Json(error));
    }
    let key = idempotency_key.unwrap_or_else(|| format!("no-key-{}", inner.requests.len()));
    if let Some(previous) = inner.refunds_by_key.get(&key) {
        return (axum::http::StatusCode::OK, Json(previous.clone()));
    }
    let number = inner.refunds_by_key.len() + 1;
    let refund = json!({
        "id": format!("re_test_fake{number:04}"), "object": "refund", "amount": 1_500,
        "charge": form.get("charge"), "created": chrono::Utc::now().timestamp(), "currency": "usd",
        "metadata": {}, "reason": form.get("reason"), "status": "succeeded",
    });
    inner.refunds_by_key.insert(key, refund.clone());
    (axum::http::StatusCode::OK, Json(refund))
}

/// `DELETE /v1/subscriptions/{id}`: the subscription canceled (again, for a repeated key).
async fn cancel_subscription(
    State(inner): State<Arc<Mutex<Inner>>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: String,
) -> Json<Value> {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    inner.lock().unwrap().requests.push(Recorded {
        path: format!("/v1/subscriptions/{id}"),
        form,
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    Json(
        json!({ "id": id, "object": "subscription", "status": "canceled", "customer": "cus_test_1" }),
    )
}

impl FakeStripe {
    /// Starts the fake on a free loopback port.
    pub(crate) async fn start() -> FakeStripe {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/checkout/sessions", post(create_session))
            .route("/v1/billing_portal/sessions", post(create_portal_session))
            .route("/v1/refunds", post(create_refund))
            .route(
                "/v1/subscriptions/{id}",
                axum::routing::delete(cancel_subscription),
            )
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe {
            address,
            inner,
            server,
        }
    }

    /// The app's Stripe settings, pointed at this fake.
    pub(crate) fn config(&self) -> StripeConfig {
        StripeConfig {
            secret_key: Some("sk_test_fake".into()),
            webhook_secret: Some(WEBHOOK_SECRET.into()),
            api_base: Some(format!("http://{}/", self.address)),
        }
    }

    /// Every request received so far.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Makes refunds fail (500) until told otherwise.
    pub(crate) fn fail_refunds(&self, fail: bool) {
        self.inner.lock().unwrap().refunds_fail = fail;
    }

    /// Stops the fake.
    pub(crate) fn stop(self) {
        self.server.abort();
    }
}
