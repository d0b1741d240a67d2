//! The boundary with Stripe: Checkout Sessions and Billing Portal sessions created through
//! async-stripe, and webhook signatures
//! verified with async-stripe-webhook (5-minute tolerance). Event payloads are then read into the
//! few typed fields the ledger uses, so a field Stripe adds never breaks a webhook.
//!
//! The API base URL is configurable (tests point it at a local fake Stripe over plain HTTP on
//! loopback). Without a secret key, checkout runs in local mode (see [`StripeGateway::local_mode`]).

use crate::crypto::SecretText;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_checkout::CheckoutSessionMode;
use stripe_client_core::{RequestBuilder, StripeMethod};
use stripe_core::refund::{CreateRefund, CreateRefundReason};

/// Stripe's API base.
pub const STRIPE_API_BASE: &str = "https://api.stripe.com/";
/// Largest webhook body accepted (§9).
pub const WEBHOOK_BODY_BYTES_MAX: usize = 1024 * 1024;

/// Stripe settings. Secrets never print.
#[derive(Clone, Debug, Default)]
pub struct StripeConfig {
    /// The secret API key (`sk_…`); without it checkout is unavailable.
    pub secret_key: Option<SecretText>,
    /// The webhook signing secret (`whsec_…`); without it webhooks are refused.
    pub webhook_secret: Option<SecretText>,
    /// The API base URL (default [`STRIPE_API_BASE`]).
    pub api_base: Option<String>,
}

/// Why a Stripe call failed.
#[derive(Debug, thiserror::Error)]
pub enum StripeGatewayError {
    /// The configuration is unusable.
    #[error("invalid Stripe configuration: {0}")]
    Config(String),
    /// Stripe (or the network) failed.
    #[error("Stripe request failed: {0}")]
    Api(String),
}

/// Why a webhook was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookRejection {
    /// No webhook secret is configured.
    #[error("webhooks are not configured")]
    NotConfigured,
    /// The signature is missing, wrong, or outside the 5-minute tolerance.
    #[error("bad Stripe signature: {0}")]
    BadSignature(String),
    /// The body is not a Stripe event.
    #[error("not a Stripe event: {0}")]
    Malformed(String),
}

/// What a Checkout Session needs.
#[derive(Clone, Debug)]
pub struct NewCheckoutSession {
    /// The Stripe price.
    pub price_id: String,
    /// Where Stripe sends the buyer after paying (`{CHECKOUT_SESSION_ID}` is filled by Stripe).
    pub success_url: String,
    /// Where Stripe sends the buyer on cancel.
    pub cancel_url: String,
    /// The handoff, as `client_reference_id`.
    pub client_reference_id: String,
    /// Metadata for the session and its subscription.
    pub metadata: BTreeMap<String, String>,
    /// Trial days, if the checkout includes a trial.
    pub trial_period_days: Option<u32>,
    /// Stripe's idempotency key for this creation.
    pub idempotency_key: String,
}

/// Longest idempotency key Stripe accepts.
pub const STRIPE_IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

/// A session Stripe created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedCheckoutSession {
    /// Its id (`cs_…`).
    pub id: String,
    /// Where to send the buyer.
    pub url: String,
}

/// A verified Stripe event, read into the fields the ledger acts on. Objects are read leniently
/// (a field of another shape reads as absent): an authentic event of a newer API version still
/// takes effect, instead of being refused and retried by Stripe forever.
#[derive(Clone, Debug, PartialEq)]
pub struct StripeEvent {
    /// `evt_…`.
    pub id: String,
    /// E.g. `checkout.session.completed`.
    pub event_type: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// Its object, by the kind the event type names.
    pub object: StripeObject,
}

/// The object of a Stripe event, for the event types the ledger handles.
#[derive(Clone, Debug, PartialEq)]
pub enum StripeObject {
    /// `checkout.session.*`.
    CheckoutSession {
        /// `cs_…`.
        id: Option<String>,
        /// The buyer's email (`customer_details.email`, else `customer_email`).
        customer_email: Option<String>,
        /// The subscription it started.
        subscription: Option<String>,
        /// The customer it billed.
        customer: Option<String>,
    },
    /// `customer.subscription.*`.
    Subscription {
        /// `sub_…`.
        id: Option<String>,
        /// Stripe's status.
        status: Option<String>,
        /// The period end: on the subscription (older API versions) or its first item (newer).
        current_period_end: Option<i64>,
        /// Its metadata (string values only).
        metadata: BTreeMap<String, String>,
        /// The first item's price.
        price_id: Option<String>,
        /// The first item's interval (`month`, `year`).
        interval: Option<String>,
    },
    /// `invoice.*`.
    Invoice {
        /// The subscription it bills: top-level in older API versions, under `parent` in newer.
        subscription: Option<String>,
        /// The first line's period end.
        period_end: Option<i64>,
        /// The charge that paid it.
        charge: Option<String>,
    },
    /// `charge.*` other than disputes.
    Charge {
        /// `ch_…`.
        id: Option<String>,
    },
    /// `charge.dispute.*`.
    Dispute {
        /// `dp_…`.
        id: Option<String>,
        /// The disputed charge.
        charge: Option<String>,
    },
    /// Any other object: the ledger does not read it.
    Other,
}

/// The envelope of an event, before its object is read.
#[derive(Deserialize)]
struct RawEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    data: RawEventData,
}

#[derive(Deserialize)]
struct RawEventData {
    object: serde_json::Value,
}

impl StripeEvent {
    /// Reads an event from its JSON; `None` when it is not a Stripe event at all.
    pub fn parse(payload: &str) -> Option<StripeEvent> {
        let raw: RawEvent = serde_json::from_str(payload).ok()?;
        let object = StripeObject::read(&raw.event_type, &raw.data.object);
        Some(StripeEvent {
            id: raw.id,
            event_type: raw.event_type,
            created: raw.created,
            object,
        })
    }
}

impl StripeObject {
    fn read(event_type: &str, object: &serde_json::Value) -> StripeObject {
        let text = |value: &serde_json::Value| value.as_str().map(str::to_owned);
        if event_type.starts_with("checkout.session.") {
            StripeObject::CheckoutSession {
                id: text(&object["id"]),
                customer_email: text(&object["customer_details"]["email"])
                    .or_else(|| text(&object["customer_email"])),
                subscription: text(&object["subscription"]),
                customer: text(&object["customer"]),
            }
        } else if event_type.starts_with("customer.subscription.") {
            let item = &object["items"]["data"][0];
            StripeObject::Subscription {
                id: text(&object["id"]),
                status: text(&object["status"]),
                current_period_end: object["current_period_end"]
                    .as_i64()
                    .or_else(|| item["current_period_end"].as_i64()),
                metadata: object["metadata"]
                    .as_object()
                    .map(|fields| {
                        fields
                            .iter()
                            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default(),
                price_id: text(&item["price"]["id"]),
                interval: text(&item["price"]["recurring"]["interval"]),
            }
        } else if event_type.starts_with("invoice.") {
            StripeObject::Invoice {
                subscription: text(&object["subscription"])
                    .or_else(|| text(&object["parent"]["subscription_details"]["subscription"])),
                period_end: object["lines"]["data"][0]["period"]["end"].as_i64(),
                charge: text(&object["charge"]),
            }
        } else if event_type.starts_with("charge.dispute.") {
            StripeObject::Dispute {
                id: text(&object["id"]),
                charge: text(&object["charge"]),
            }
        } else if event_type.starts_with("charge.") {
            StripeObject::Charge {
                id: text(&object["id"]),
            }
        } else {
            StripeObject::Other
        }
    }
}

/// What this service reads of a canceled subscription.
#[derive(miniserde::Deserialize)]
struct CanceledSubscription {
    status: String,
}

/// Where checkout happens: at Stripe, or — with no Stripe key configured — on a local page of this
/// service that completes the purchase by posting itself a correctly signed webhook, so the whole
/// flow runs offline. Local mode exists only while no secret key is set: configuring a key turns
/// it off, and its pages then answer 404.
enum CheckoutMode {
    Stripe(Box<Client>),
    Local { public_url: String },
}

/// Talks to Stripe.
pub struct StripeGateway {
    mode: CheckoutMode,
    webhook_secret: Option<String>,
}

impl StripeGateway {
    /// A gateway for `config`. Without a secret key it runs in local mode, its checkout pages
    /// under `public_url`, webhooks signed with `local_webhook_secret` unless one is configured.
    pub fn new(
        config: &StripeConfig,
        public_url: &str,
        local_webhook_secret: &str,
    ) -> Result<StripeGateway, StripeGatewayError> {
        let Some(secret) = &config.secret_key else {
            return Ok(StripeGateway {
                mode: CheckoutMode::Local {
                    public_url: public_url.trim_end_matches('/').to_owned(),
                },
                webhook_secret: Some(config.webhook_secret.as_ref().map_or_else(
                    || local_webhook_secret.to_owned(),
                    |s| s.expose().to_owned(),
                )),
            });
        };
        let base = config
            .api_base
            .clone()
            .unwrap_or_else(|| String::from(STRIPE_API_BASE));
        let base = if base.ends_with('/') {
            base
        } else {
            format!("{base}/")
        };
        let client = ClientBuilder::new(secret.expose())
            .url(base)
            .app_info(
                "pulse-account",
                Some(env!("CARGO_PKG_VERSION").to_owned()),
                None,
            )
            .build()
            .map_err(|e| StripeGatewayError::Config(e.to_string()))?;
        Ok(StripeGateway {
            mode: CheckoutMode::Stripe(Box::new(client)),
            webhook_secret: config
                .webhook_secret
                .as_ref()
                .map(|s| s.expose().to_owned()),
        })
    }

    /// Whether checkout runs on this service's local pages (no Stripe key is configured).
    pub fn local_mode(&self) -> bool {
        matches!(self.mode, CheckoutMode::Local { .. })
    }

    /// Signs an event as Stripe would, for local mode's self-posted webhook. `None` outside local
    /// mode: only Stripe can sign real events.
    pub fn sign_local_event(&self, payload: &str) -> Option<String> {
        match (&self.mode, &self.webhook_secret) {
            (CheckoutMode::Local { .. }, Some(secret)) => Some(signature_header(
                secret,
                chrono::Utc::now().timestamp(),
                payload,
            )),
            _ => None,
        }
    }

    /// Creates a subscription-mode Checkout Session (a local one in local mode).
    pub async fn create_checkout_session(
        &self,
        session: &NewCheckoutSession,
    ) -> Result<CreatedCheckoutSession, StripeGatewayError> {
        let client = match &self.mode {
            CheckoutMode::Stripe(client) => client.as_ref(),
            CheckoutMode::Local { public_url } => {
                let id = format!("cs_local_{}", uuid::Uuid::new_v4().simple());
                return Ok(CreatedCheckoutSession {
                    url: format!("{public_url}/v1/checkout/local/{id}"),
                    id,
                });
            }
        };
        let metadata: HashMap<String, String> = session.metadata.clone().into_iter().collect();
        let mut subscription = CreateCheckoutSessionSubscriptionData::new();
        subscription.metadata = Some(metadata.clone());
        subscription.trial_period_days = session.trial_period_days;
        let mut line_item = CreateCheckoutSessionLineItems::new();
        line_item.price = Some(session.price_id.clone());
        line_item.quantity = Some(1);
        let key = IdempotencyKey::new(&session.idempotency_key)
            .map_err(|e| StripeGatewayError::Config(e.to_string()))?;
        let created = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .line_items(vec![line_item])
            .success_url(session.success_url.clone())
            .cancel_url(session.cancel_url.clone())
            .client_reference_id(session.client_reference_id.clone())
            .metadata(metadata)
            .subscription_data(subscription)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(client)
            .await
            .map_err(|e| StripeGatewayError::Api(e.to_string()))?;
        let url = created
            .url
            .ok_or_else(|| StripeGatewayError::Api(String::from("the session has no url")))?;
        Ok(CreatedCheckoutSession {
            id: created.id.to_string(),
            url,
        })
    }

    /// A Stripe Billing Portal session for `customer` (payment methods, invoices, cancellation)
    /// that returns to `return_url`; `None` in local mode, where no Stripe is there to ask.
    pub async fn create_billing_portal_session(
        &self,
        customer: &str,
        return_url: &str,
    ) -> Result<Option<String>, StripeGatewayError> {
        let CheckoutMode::Stripe(client) = &self.mode else {
            return Ok(None);
        };
        let session = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url)
            .send(client.as_ref())
            .await
            .map_err(|e| StripeGatewayError::Api(e.to_string()))?;
        Ok(Some(session.url))
    }

    /// Refunds `charge` in full at the customer's request, under `idempotency_key`: asked again
    /// with the same key, Stripe answers the refund it made the first time and refunds nothing
    /// more. Answers the refund's id; in local mode, where no money moved, a local id.
    pub async fn create_refund(
        &self,
        charge: &str,
        idempotency_key: &str,
        metadata: &[(&str, &str)],
    ) -> Result<String, StripeGatewayError> {
        let CheckoutMode::Stripe(client) = &self.mode else {
            return Ok(format!("re_local_{}", uuid::Uuid::new_v4().simple()));
        };
        let key = IdempotencyKey::new(idempotency_key)
            .map_err(|e| StripeGatewayError::Config(e.to_string()))?;
        let metadata: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let refund = CreateRefund::new()
            .charge(charge)
            .reason(CreateRefundReason::RequestedByCustomer)
            .metadata(metadata)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(client.as_ref())
            .await
            .map_err(|e| StripeGatewayError::Api(e.to_string()))?;
        Ok(refund.id.to_string())
    }

    /// Cancels `subscription` at once — no proration, no final invoice — under
    /// `idempotency_key` (asked again, Stripe answers the same cancellation); in local mode there
    /// is nothing to cancel.
    pub async fn cancel_subscription(
        &self,
        subscription: &str,
        idempotency_key: &str,
    ) -> Result<(), StripeGatewayError> {
        let CheckoutMode::Stripe(client) = &self.mode else {
            return Ok(());
        };
        let key = IdempotencyKey::new(idempotency_key)
            .map_err(|e| StripeGatewayError::Config(e.to_string()))?;
        let form: BTreeMap<&str, &str> = [("prorate", "false"), ("invoice_now", "false")].into();
        let canceled: CanceledSubscription = RequestBuilder::new(
            StripeMethod::Delete,
            format!("/subscriptions/{subscription}"),
        )
        .form(&form)
        .customize()
        .request_strategy(RequestStrategy::Idempotent(key))
        .send(client.as_ref())
        .await
        .map_err(|e| StripeGatewayError::Api(e.to_string()))?;
        if canceled.status != "canceled" {
            return Err(StripeGatewayError::Api(format!(
                "the subscription is {} after its cancellation",
                canceled.status
            )));
        }
        Ok(())
    }

    /// Verifies a webhook's signature (and its 5-minute tolerance), then reads the event.
    pub fn verify_webhook(
        &self,
        payload: &str,
        signature: &str,
    ) -> Result<StripeEvent, WebhookRejection> {
        let secret = self
            .webhook_secret
            .as_deref()
            .ok_or(WebhookRejection::NotConfigured)?;
        verify_signature(secret, signature, payload, chrono::Utc::now().timestamp())
            .map_err(|reason| WebhookRejection::BadSignature(reason.to_owned()))?;
        StripeEvent::parse(payload).ok_or_else(|| {
            WebhookRejection::Malformed(String::from("the body is not a Stripe event object"))
        })
    }
}

/// Most seconds a webhook's signed timestamp may differ from now (Stripe's default tolerance).
pub const WEBHOOK_TOLERANCE_SECONDS: i64 = 300;
/// Most `v1` signatures one `Stripe-Signature` header may carry (one per active secret).
const WEBHOOK_SIGNATURES_MAX: usize = 8;

fn webhook_mac(secret: &str, timestamp: i64, payload: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(format!("{timestamp}.{payload}").as_bytes());
    mac
}

/// The `Stripe-Signature` header Stripe would send for `payload` at `timestamp`.
fn signature_header(secret: &str, timestamp: i64, payload: &str) -> String {
    let signature = hex::encode(
        webhook_mac(secret, timestamp, payload)
            .finalize()
            .into_bytes(),
    );
    format!("t={timestamp},v1={signature}")
}

/// Verifies a `Stripe-Signature` header as Stripe documents it: HMAC-SHA256 under the webhook
/// secret over `<t>.<payload>`, any `v1` signature matching (compared in constant time), `t`
/// within [`WEBHOOK_TOLERANCE_SECONDS`] of `now`. The payload is parsed only after this.
fn verify_signature(
    secret: &str,
    header: &str,
    payload: &str,
    now: i64,
) -> Result<(), &'static str> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) if signatures.len() < WEBHOOK_SIGNATURES_MAX => {
                signatures.push(value)
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("the header has no timestamp")?;
    let mac = webhook_mac(secret, timestamp, payload);
    let matches = signatures.iter().any(|candidate| {
        hex::decode(candidate).is_ok_and(|bytes| mac.clone().verify_slice(&bytes).is_ok())
    });
    if !matches {
        return Err("no signature matches the webhook secret");
    }
    if (now - timestamp).abs() > WEBHOOK_TOLERANCE_SECONDS {
        return Err("the signature's timestamp is outside the tolerance");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_read_by_the_event_type_and_leniently() {
        let event = StripeEvent::parse(
            r#"{"id":"evt_1","type":"invoice.paid","created":5,"data":{"object":{
                "parent":{"subscription_details":{"subscription":"sub_1"}},
                "lines":{"data":[{"period":{"end":99}}]},"charge":{"expanded":true}}}}"#,
        )
        .unwrap();
        assert_eq!(
            event.object,
            StripeObject::Invoice {
                subscription: Some(String::from("sub_1")),
                period_end: Some(99),
                charge: None,
            }
        );
        let session = StripeEvent::parse(
            r#"{"id":"evt_2","type":"checkout.session.completed","created":5,"data":{"object":{
                "id":"cs_1","customer_email":"a@b.example"}}}"#,
        )
        .unwrap();
        assert!(matches!(
            session.object,
            StripeObject::CheckoutSession { customer_email: Some(ref email), .. } if email == "a@b.example"
        ));
        assert_eq!(StripeEvent::parse(r#"{"id":"evt_3"}"#), None);
    }

    #[test]
    fn a_signature_verifies_only_with_its_secret_payload_and_time() {
        let header = signature_header("whsec_a", 1_000, "{}");
        assert_eq!(verify_signature("whsec_a", &header, "{}", 1_100), Ok(()));
        assert!(verify_signature("whsec_b", &header, "{}", 1_100).is_err());
        assert!(verify_signature("whsec_a", &header, "{ }", 1_100).is_err());
        assert!(verify_signature("whsec_a", &header, "{}", 1_000 + 301).is_err());
        assert!(verify_signature("whsec_a", "v1=00", "{}", 1_000).is_err());
        let rotated = format!("{header},v1=deadbeef");
        assert_eq!(verify_signature("whsec_a", &rotated, "{}", 1_000), Ok(()));
    }
}
