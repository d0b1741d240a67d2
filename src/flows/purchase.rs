//! The purchase flow (`DOMAIN.md` §6, §9): purchase handoffs, Stripe Checkout Sessions started from
//! them, Stripe webhooks, and the session lookup an installation makes on its return.
//!
//! A completed self-hosted checkout issues the license, binds its activation key, completes the
//! handoff and records the Stripe event, in one atomic append: the webhook either took full effect
//! or none, and Stripe's retry (we answer 500 on failure) finds either nothing or the receipt. The
//! activation key of a purchase is derived from its Checkout Session under the server's secret, so
//! the session lookup can show it again without it ever being stored.

use crate::crypto::secrets::{Secret, ACTIVATION_KEY_PREFIX};
use crate::crypto::KeyMaterial;
use crate::engine::command::{
    decide_all, handle, load, load_until, recorded_events, Command, CommandError,
};
use crate::engine::store::{
    scoped_digest, AppendBatch, BatchOutcome, Idempotency, Store, StoreError, StreamAppend,
    IDEMPOTENCY_SCOPED_DIGEST_LEN,
};
use crate::flows::{part, stream, FlowError, FLOW_ATTEMPTS_MAX};
use crate::gateways::stripe::{NewCheckoutSession, StripeEvent, StripeGateway, StripeGatewayError};
use aggregates::account::{Account, AccountCommand, AccountEvent};
use aggregates::catalog::{BillingCycle, Catalog, StripePlanSource};
use aggregates::decider::{Context, Decider};
use aggregates::error::DomainError;
use aggregates::handoff::{
    Handoff, HandoffCommand, HandoffStatus, PurchaseHandoff, StartedCheckout,
};
use aggregates::ids::{Email, HandoffId, IntentId, LicenseId};
use aggregates::index::{
    ActivationKeyIndex, BindActivationKey, BindCheckoutSession, CheckoutSessionIndex,
    LinkStripeObject, StripeObjectIndex, StripeTarget,
};
use aggregates::license::{
    IssueLicense, License, LicenseCommand, LicenseEvent, LicenseOrigin, RevocationReason,
    StripeSnapshot,
};
use aggregates::log::{EventMetadata, StreamName, StreamVersion};
use aggregates::redemption::{Redemption, RedemptionCommand, RedemptionRecord};
use aggregates::stripe_event::{RecordStripeEvent, StripeEventReceipt};
use aggregates::subscription::SubscriptionState;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /v1/checkout/portal-handoff`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateHandoffRequest {
    /// The feature asked for.
    pub feature: String,
    /// The return URL after payment.
    pub success_url: String,
    /// The return URL on cancel.
    pub cancel_url: String,
    /// The runtime's purchase-return token id.
    pub purchase_return_jti: String,
}

/// `POST /v1/checkout/session`: what the browser sends, and nothing else.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartCheckoutRequest {
    /// The handoff.
    pub portal_handoff_id: String,
    /// The plan.
    pub plan_key: String,
    /// Its tier.
    pub tier: String,
    /// `monthly` or `annual`.
    pub billing_cycle: BillingCycle,
    /// Whether to include a trial.
    #[serde(default)]
    pub trial: bool,
}

/// What `POST /v1/checkout/session` answers.
#[derive(Clone, Debug, Serialize)]
pub struct StartedCheckoutView {
    /// Where to send the browser.
    pub url: String,
    /// The plan.
    pub plan_key: String,
    /// Its tier.
    pub tier: String,
    /// Its cadence.
    pub billing_cycle: BillingCycle,
}

/// What `GET /v1/checkout/session` answers to the returning installation (§6.5).
#[derive(Clone, Debug, Serialize)]
pub struct SessionResult {
    /// `fulfilled`, `pending` or `failed`.
    pub status: &'static str,
    /// The handoff.
    pub portal_handoff_id: HandoffId,
    /// The runtime's purchase-return token id (the runtime checks it).
    pub purchase_return_jti: String,
    /// The license, once fulfilled.
    pub license_id: Option<LicenseId>,
    /// Its activation key, once fulfilled.
    pub activation_key: Option<String>,
    /// The key's first characters.
    pub activation_key_prefix: Option<String>,
    /// The buyer.
    pub owner_email: Option<Email>,
    /// The plan's tier.
    pub tier: String,
    /// The plan.
    pub plan_key: String,
}

/// What became of a webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOutcome {
    /// It took effect now.
    Applied,
    /// It was recorded and changes nothing (the reason is in the log).
    Ignored,
    /// It had already taken effect.
    AlreadyProcessed,
}

/// `POST /v1/checkout/redemptions/begin`: the installation starts redeeming its purchase.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BeginRedemptionRequest {
    /// The handoff.
    pub portal_handoff_id: String,
    /// The runtime's purchase-return token id.
    pub purchase_return_jti: String,
    /// The Checkout Session being redeemed.
    pub session_id: String,
}

/// `POST /v1/checkout/redemptions/activated` and `…/failed`: how the attempt ended.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndRedemptionRequest {
    /// The handoff.
    pub portal_handoff_id: String,
    /// The runtime's purchase-return token id.
    pub purchase_return_jti: String,
    /// The license activated (on success).
    #[serde(default)]
    pub license_id: Option<LicenseId>,
    /// A reason code (on failure).
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// A message for a human (on failure).
    #[serde(default)]
    pub failure_message: Option<String>,
}

/// The purchase flows over one store, one Stripe gateway and one set of keys.
pub struct Checkout<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// Stripe.
    pub stripe: &'a StripeGateway,
    /// Keys for deriving activation keys.
    pub keys: &'a KeyMaterial,
    /// The catalog in force.
    pub catalog: &'a Catalog,
}

/// Longest handoff id accepted from outside.
pub const HANDOFF_ID_LEN_MAX: usize = 64;
// The Stripe idempotency key of a keyed checkout start, `checkout:<handoff>:key:<digest>`, fits
// Stripe's limit whatever the client's key.
const _: () = assert!(
    "checkout:".len() + HANDOFF_ID_LEN_MAX + ":key:".len() + IDEMPOTENCY_SCOPED_DIGEST_LEN
        <= crate::gateways::stripe::STRIPE_IDEMPOTENCY_KEY_LEN_MAX
);

/// The handoff id a browser or runtime sent: `[A-Za-z0-9_-]+` and our prefix, else not found.
pub fn parse_handoff_id(raw: &str) -> Result<HandoffId, DomainError> {
    let charset_ok = !raw.is_empty()
        && raw.len() <= HANDOFF_ID_LEN_MAX
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !charset_ok {
        return Err(DomainError::invalid(
            "portal_handoff_id",
            "must match [A-Za-z0-9_-]+",
        ));
    }
    HandoffId::parse(raw).map_err(|_| DomainError::NotFound { entity: "handoff" })
}

/// Appends `{CHECKOUT_SESSION_ID}` for Stripe to fill, keeping any query the URL already has.
fn with_session_placeholder(success_url: &str) -> String {
    let separator = if success_url.contains('?') { '&' } else { '?' };
    format!("{success_url}{separator}session_id={{CHECKOUT_SESSION_ID}}")
}

impl Checkout<'_> {
    fn context(&self, now: DateTime<Utc>) -> Context<'_> {
        Context::new(now, self.catalog)
    }

    /// The activation key of the license a Checkout Session bought.
    pub fn activation_key_of(&self, session_id: &str) -> Secret {
        self.keys
            .hasher
            .derive(ACTIVATION_KEY_PREFIX, &format!("checkout:{session_id}"))
    }

    async fn handoff(&self, handoff_id: &HandoffId) -> Result<(Handoff, StreamVersion), FlowError> {
        let (state, version) = load::<PurchaseHandoff>(
            self.store,
            &stream(PurchaseHandoff::STREAM_TYPE, handoff_id.as_str())?,
        )
        .await?;
        Ok((
            state
                .handoff
                .ok_or(DomainError::NotFound { entity: "handoff" })?,
            version,
        ))
    }

    /// Creates a handoff and its checkout intent; returns the handoff.
    pub async fn create_handoff(
        &self,
        request: &CreateHandoffRequest,
        idempotency_key: Option<&str>,
        metadata: EventMetadata,
    ) -> Result<Handoff, FlowError> {
        let idempotency = idempotency_key.map(|key| Idempotency::scoped("handoff", key, request));
        // A retry answers the handoff the first request created: look the key up before a new
        // handoff id is drawn, or the retry would be another request.
        if let Some(idempotency) = &idempotency {
            if let Some(previous) = self.store.idempotent_outcome(idempotency).await? {
                return self.replayed_handoff(&previous).await;
            }
        }
        let handoff_id = HandoffId::from_entropy(rand::rngs::OsRng.next_u64());
        let command = HandoffCommand::Create {
            handoff_id: handoff_id.clone(),
            intent_id: IntentId::from_entropy(rand::rngs::OsRng.next_u64()),
            feature: request.feature.clone(),
            success_url: request.success_url.clone(),
            cancel_url: request.cancel_url.clone(),
            purchase_return_jti: request.purchase_return_jti.clone(),
        };
        let outcome = handle::<PurchaseHandoff>(
            self.store,
            Command {
                stream_id: handoff_id.as_str(),
                command: &command,
                context: self.context(metadata.effective_at),
                idempotency: idempotency.clone(),
                metadata,
            },
        )
        .await;
        match outcome {
            Ok(outcome) => {
                let created = outcome.appended.ok_or_else(|| {
                    StoreError::Invariant(String::from("creating a handoff appended nothing"))
                })?;
                Ok(self
                    .handoff(&HandoffId::parse(created.stream.stream_id())?)
                    .await?
                    .0)
            }
            // A concurrent request with the same key won: answer what it created.
            Err(CommandError::Store(reused @ StoreError::IdempotencyKeyReused { .. })) => {
                let previous = match &idempotency {
                    Some(idempotency) => self.store.idempotent_outcome(idempotency).await?,
                    None => None,
                };
                match previous {
                    Some(previous) => self.replayed_handoff(&previous).await,
                    None => Err(reused.into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The handoff a recorded creation created.
    async fn replayed_handoff(&self, outcome: &BatchOutcome) -> Result<Handoff, FlowError> {
        let created = outcome
            .outcomes
            .iter()
            .find(|o| o.stream.stream_type() == PurchaseHandoff::STREAM_TYPE)
            .ok_or(StoreError::IdempotencyKeyReused {
                key: String::from("handoff"),
            })?;
        Ok(self
            .handoff(&HandoffId::parse(created.stream.stream_id())?)
            .await?
            .0)
    }

    /// The browser's lookup: stamps `resolved_at` on the first one, returns the handoff.
    pub async fn resolve_handoff(
        &self,
        handoff_id: &HandoffId,
        metadata: EventMetadata,
    ) -> Result<Handoff, FlowError> {
        handle::<PurchaseHandoff>(
            self.store,
            Command {
                stream_id: handoff_id.as_str(),
                command: &HandoffCommand::Resolve,
                context: self.context(metadata.effective_at),
                idempotency: None,
                metadata,
            },
        )
        .await?;
        Ok(self.handoff(handoff_id).await?.0)
    }

    /// Starts a Stripe Checkout from a handoff; the intent's URLs and jti stay server-side.
    pub async fn start_checkout(
        &self,
        request: &StartCheckoutRequest,
        idempotency_key: Option<&str>,
        metadata: EventMetadata,
    ) -> Result<StartedCheckoutView, FlowError> {
        let handoff_id = parse_handoff_id(&request.portal_handoff_id)?;
        let idempotency =
            idempotency_key.map(|key| Idempotency::scoped("checkout-session", key, request));
        if let Some(idempotency) = &idempotency {
            if let Some(previous) = self.store.idempotent_outcome(idempotency).await? {
                return self.replayed_checkout(&previous).await;
            }
        }
        for attempt in 1..=FLOW_ATTEMPTS_MAX {
            crate::engine::command::pause_before_retry(attempt).await;
            let (handoff, version) = self.handoff(&handoff_id).await?;
            let context = self.context(metadata.effective_at);
            let wanted = StartedCheckout {
                session_id: String::from("cs_pending"),
                plan_key: request.plan_key.clone(),
                tier: request.tier.clone(),
                billing_cycle: request.billing_cycle,
                price_id: String::new(),
                trial: request.trial,
                url: None,
            };
            let state = aggregates::handoff::HandoffState {
                handoff: Some(handoff.clone()),
            };
            let checked = PurchaseHandoff::decide(
                &state,
                &HandoffCommand::StartCheckout(wanted.clone()),
                &context,
            )?;
            let Some(aggregates::handoff::HandoffEvent::CheckoutStarted(priced)) =
                checked.into_iter().next()
            else {
                return Err(DomainError::NotFound { entity: "checkout" }.into());
            };
            let mut meta = BTreeMap::new();
            meta.insert(String::from("portal_handoff_id"), handoff_id.to_string());
            meta.insert(String::from("plan_version"), priced.plan_key.clone());
            let session = self
                .stripe
                .create_checkout_session(&NewCheckoutSession {
                    price_id: priced.price_id.clone(),
                    success_url: with_session_placeholder(&handoff.intent.success_url),
                    cancel_url: handoff.intent.cancel_url.clone(),
                    client_reference_id: handoff_id.to_string(),
                    metadata: meta,
                    trial_period_days: request
                        .trial
                        .then_some(aggregates::trial::TRIAL_DAYS as u32),
                    // A retried request reaches Stripe with the same key, so it gets the same session.
                    idempotency_key: match idempotency_key {
                        Some(key) => format!("checkout:{handoff_id}:key:{}", scoped_digest(key)),
                        None => format!("checkout:{handoff_id}:{}", version.0),
                    },
                })
                .await?;
            let started = StartedCheckout {
                session_id: session.id.clone(),
                url: Some(session.url.clone()),
                ..priced.clone()
            };
            let (handoff_events, _) = decide_all::<PurchaseHandoff>(
                state,
                &[HandoffCommand::StartCheckout(started)],
                &context,
            )?;
            let (index_events, _) = decide_all::<CheckoutSessionIndex>(
                Default::default(),
                &[BindCheckoutSession {
                    handoff_id: handoff_id.clone(),
                }],
                &context,
            )?;
            let appends = [
                part::<PurchaseHandoff>(
                    stream(PurchaseHandoff::STREAM_TYPE, handoff_id.as_str())?,
                    version,
                    &handoff_events,
                )?,
                part::<CheckoutSessionIndex>(
                    stream(CheckoutSessionIndex::STREAM_TYPE, &session.id)?,
                    StreamVersion::EMPTY,
                    &index_events,
                )?,
            ];
            let batch = AppendBatch {
                appends: appends.into_iter().flatten().collect(),
                metadata: metadata.clone(),
                idempotency: idempotency.clone(),
            };
            match self.store.append_batch(batch).await {
                Ok(outcome) if outcome.replayed() => return self.replayed_checkout(&outcome).await,
                Ok(_) => {
                    return Ok(StartedCheckoutView {
                        url: session.url,
                        plan_key: priced.plan_key,
                        tier: priced.tier,
                        billing_cycle: priced.billing_cycle,
                    });
                }
                Err(StoreError::WrongExpectedVersion { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(FlowError::Contended)
    }

    /// Runs a redemption command on the handoff's redemption record and returns the record.
    /// Decides a redemption command and answers with the record as that command left it, so a
    /// retry under the same `Idempotency-Key` gets the first answer even if the record moved on.
    async fn redemption(
        &self,
        handoff_id: &HandoffId,
        command: RedemptionCommand,
        idempotency: Option<Idempotency>,
        metadata: EventMetadata,
    ) -> Result<RedemptionRecord, FlowError> {
        let outcome = handle::<Redemption>(
            self.store,
            Command {
                stream_id: handoff_id.as_str(),
                command: &command,
                context: self.context(metadata.effective_at),
                metadata,
                idempotency,
            },
        )
        .await?;
        let (state, _) = load_until::<Redemption>(
            self.store,
            &stream(Redemption::STREAM_TYPE, handoff_id.as_str())?,
            outcome.stream_version,
        )
        .await?;
        Ok(state.record.ok_or(DomainError::NotFound {
            entity: "redemption",
        })?)
    }

    /// Begins (or restarts) a redemption, following the decision table of §6.6.
    pub async fn begin_redemption(
        &self,
        request: &BeginRedemptionRequest,
        idempotency_key: Option<&str>,
        metadata: EventMetadata,
    ) -> Result<RedemptionRecord, FlowError> {
        let handoff_id = parse_handoff_id(&request.portal_handoff_id)?;
        let session_handoff =
            match StreamName::parse(CheckoutSessionIndex::STREAM_TYPE, &request.session_id) {
                Ok(index) => {
                    load::<CheckoutSessionIndex>(self.store, &index)
                        .await?
                        .0
                        .handoff_id
                }
                Err(_) => None,
            };
        let command = RedemptionCommand::Begin {
            handoff_id: handoff_id.clone(),
            purchase_return_jti: request.purchase_return_jti.clone(),
            session_id: request.session_id.clone(),
            session_handoff,
        };
        let idempotency =
            idempotency_key.map(|key| Idempotency::scoped("redemption-begin", key, request));
        self.redemption(&handoff_id, command, idempotency, metadata)
            .await
    }

    /// Ends a redemption: activated when no failure is given, failed otherwise.
    pub async fn end_redemption(
        &self,
        request: &EndRedemptionRequest,
        activated: bool,
        idempotency_key: Option<&str>,
        metadata: EventMetadata,
    ) -> Result<RedemptionRecord, FlowError> {
        let handoff_id = parse_handoff_id(&request.portal_handoff_id)?;
        let purchase_return_jti = request.purchase_return_jti.clone();
        let command = if activated {
            RedemptionCommand::MarkActivated {
                purchase_return_jti,
                license_id: request.license_id.clone(),
            }
        } else {
            RedemptionCommand::MarkFailed {
                purchase_return_jti,
                failure_reason: request
                    .failure_reason
                    .clone()
                    .ok_or_else(|| DomainError::invalid("failure_reason", "is required"))?,
                failure_message: request
                    .failure_message
                    .clone()
                    .ok_or_else(|| DomainError::invalid("failure_message", "is required"))?,
            }
        };
        let idempotency = idempotency_key.map(|key| {
            let route = if activated {
                "redemption-activated"
            } else {
                "redemption-failed"
            };
            Idempotency::scoped(route, key, request)
        });
        self.redemption(&handoff_id, command, idempotency, metadata)
            .await
    }

    /// Local mode: the handoff and checkout of a local session. Not found outside local mode.
    pub async fn local_session(
        &self,
        session_id: &str,
    ) -> Result<(Handoff, StartedCheckout), FlowError> {
        let not_found = || {
            FlowError::Domain(DomainError::NotFound {
                entity: "checkout session",
            })
        };
        if !self.stripe.local_mode() || !session_id.starts_with("cs_local_") {
            return Err(not_found());
        }
        let index = stream(CheckoutSessionIndex::STREAM_TYPE, session_id)?;
        let handoff_id = load::<CheckoutSessionIndex>(self.store, &index)
            .await?
            .0
            .handoff_id
            .ok_or_else(not_found)?;
        let (handoff, _) = self.handoff(&handoff_id).await?;
        let checkout = handoff
            .checkout(session_id)
            .cloned()
            .ok_or_else(not_found)?;
        Ok((handoff, checkout))
    }

    /// Local mode: completes a purchase by posting itself a correctly signed
    /// `checkout.session.completed` through the webhook path; returns where to send the browser.
    /// Completing a session again changes nothing and sends the browser to the same place.
    pub async fn complete_local(
        &self,
        session_id: &str,
        email: &str,
        metadata: EventMetadata,
    ) -> Result<String, FlowError> {
        let (handoff, _) = self.local_session(session_id).await?;
        let email = Email::parse(email)?;
        // One event per session: submitting the form again is the same Stripe event, already
        // processed, and writes nothing.
        let event = serde_json::json!({
            "id": format!("evt_local_{}", session_id.trim_start_matches("cs_local_")),
            "object": "event",
            "created": metadata.effective_at.timestamp(),
            "livemode": false,
            "pending_webhooks": 1,
            "type": "checkout.session.completed",
            "data": { "object": {
                "id": session_id,
                "object": "checkout.session",
                "mode": "subscription",
                "payment_status": "paid",
                "status": "complete",
                "customer_details": { "email": email.as_str() },
            }},
        });
        let payload = event.to_string();
        let signature = self
            .stripe
            .sign_local_event(&payload)
            .ok_or(DomainError::NotFound {
                entity: "checkout session",
            })?;
        let verified = self
            .stripe
            .verify_webhook(&payload, &signature)
            .map_err(|rejection| {
                StripeGatewayError::Api(format!("local webhook refused: {rejection}"))
            })?;
        self.apply_stripe_event(&verified, metadata).await?;
        Ok(with_session_placeholder(&handoff.intent.success_url)
            .replace("{CHECKOUT_SESSION_ID}", session_id))
    }

    /// The answer a recorded checkout start gave: the session it started, with its URL.
    async fn replayed_checkout(
        &self,
        outcome: &BatchOutcome,
    ) -> Result<StartedCheckoutView, FlowError> {
        let appended = outcome
            .outcomes
            .iter()
            .find(|o| o.stream.stream_type() == PurchaseHandoff::STREAM_TYPE)
            .ok_or(DomainError::NotFound { entity: "checkout" })?;
        let events = recorded_events::<PurchaseHandoff>(self.store, appended).await?;
        let started = events
            .into_iter()
            .find_map(|event| match event {
                aggregates::handoff::HandoffEvent::CheckoutStarted(started) => Some(started),
                _ => None,
            })
            .ok_or(DomainError::NotFound { entity: "checkout" })?;
        Ok(StartedCheckoutView {
            url: started.url.unwrap_or_default(),
            plan_key: started.plan_key,
            tier: started.tier,
            billing_cycle: started.billing_cycle,
        })
    }

    /// The installation's lookup on return (§6.5).
    pub async fn session_result(
        &self,
        session_id: &str,
        now: DateTime<Utc>,
    ) -> Result<SessionResult, FlowError> {
        let index = stream(CheckoutSessionIndex::STREAM_TYPE, session_id)?;
        let (binding, _) = load::<CheckoutSessionIndex>(self.store, &index).await?;
        let handoff_id = binding.handoff_id.ok_or(DomainError::NotFound {
            entity: "checkout session",
        })?;
        let (handoff, _) = self.handoff(&handoff_id).await?;
        let checkout = handoff
            .checkout(session_id)
            .cloned()
            .ok_or(DomainError::UnknownCheckoutSession)?;
        let mut result = SessionResult {
            status: "pending",
            portal_handoff_id: handoff.handoff_id.clone(),
            purchase_return_jti: handoff.intent.purchase_return_jti.clone(),
            license_id: None,
            activation_key: None,
            activation_key_prefix: None,
            owner_email: None,
            tier: checkout.tier.clone(),
            plan_key: checkout.plan_key.clone(),
        };
        match &handoff.completed {
            Some((completed_session, Some(license_id))) if completed_session == session_id => {
                let (license, _) = load::<License>(
                    self.store,
                    &stream(License::STREAM_TYPE, license_id.as_str())?,
                )
                .await?;
                let key = self.activation_key_of(session_id);
                result.status = "fulfilled";
                result.license_id = Some(license_id.clone());
                result.activation_key_prefix = Some(key.shown_prefix());
                result.activation_key = Some(key.expose().to_owned());
                result.owner_email = license.issued.map(|l| l.owner_email);
            }
            // A hosted purchase completes without a license: the account is what it bought.
            Some((completed_session, None)) if completed_session == session_id => {
                result.status = "fulfilled"
            }
            Some(_) => result.status = "failed",
            None if handoff.status(now) == HandoffStatus::Expired => result.status = "failed",
            None => {}
        }
        Ok(result)
    }

    /// Applies a verified Stripe event exactly once; every event leaves a receipt.
    pub async fn apply_stripe_event(
        &self,
        event: &StripeEvent,
        metadata: EventMetadata,
    ) -> Result<WebhookOutcome, FlowError> {
        for attempt in 1..=FLOW_ATTEMPTS_MAX {
            crate::engine::command::pause_before_retry(attempt).await;
            match self.try_apply(event, &metadata).await {
                Err(FlowError::Store(StoreError::WrongExpectedVersion { .. })) => continue,
                other => return other,
            }
        }
        Err(FlowError::Contended)
    }

    async fn try_apply(
        &self,
        event: &StripeEvent,
        metadata: &EventMetadata,
    ) -> Result<WebhookOutcome, FlowError> {
        let receipt_stream = stream(StripeEventReceipt::STREAM_TYPE, &event.id)?;
        let (receipt, receipt_version) =
            load::<StripeEventReceipt>(self.store, &receipt_stream).await?;
        if receipt.received.is_some() {
            return Ok(WebhookOutcome::AlreadyProcessed);
        }
        let created = DateTime::from_timestamp(event.created, 0).unwrap_or(metadata.effective_at);
        let (effects, ignored_because) = self.effects_of(event, created, metadata).await?;
        let context = self.context(metadata.effective_at);
        let record = RecordStripeEvent {
            event_type: event.event_type.clone(),
            created,
            ignored_because: ignored_because.clone(),
        };
        let (receipt_events, _) = decide_all::<StripeEventReceipt>(receipt, &[record], &context)?;
        let mut appends: Vec<StreamAppend> =
            part::<StripeEventReceipt>(receipt_stream, receipt_version, &receipt_events)?
                .into_iter()
                .collect();
        appends.extend(effects);
        self.store
            .append_batch(AppendBatch {
                appends,
                metadata: metadata.clone(),
                idempotency: None,
            })
            .await?;
        Ok(if ignored_because.is_some() {
            WebhookOutcome::Ignored
        } else {
            WebhookOutcome::Applied
        })
    }

    /// `checkout.session.completed`: for a self-hosted plan, the license, its key and the handoff's
    /// completion; anything the ledger cannot act on is ignored with its reason.
    async fn checkout_completed(
        &self,
        session: &serde_json::Value,
        metadata: &EventMetadata,
    ) -> Result<(Vec<StreamAppend>, Option<String>), FlowError> {
        let ignore = |reason: &str| Ok((Vec::new(), Some(reason.to_owned())));
        let Some(session_id) = session["id"].as_str() else {
            return ignore("the session has no id");
        };
        let Ok(index) = stream(CheckoutSessionIndex::STREAM_TYPE, session_id) else {
            return ignore("the session id is malformed");
        };
        let (binding, _) = load::<CheckoutSessionIndex>(self.store, &index).await?;
        let Some(handoff_id) = binding.handoff_id else {
            return ignore("the session was not started by a handoff of this ledger");
        };
        let (handoff, handoff_version) = self.handoff(&handoff_id).await?;
        let Some(checkout) = handoff.checkout(session_id).cloned() else {
            return ignore("the handoff never started this session");
        };
        if handoff.completed.is_some() {
            return ignore("the handoff is already completed");
        }
        let email = session["customer_details"]["email"]
            .as_str()
            .or_else(|| session["customer_email"].as_str());
        let Some(Ok(owner_email)) = email.map(Email::parse) else {
            return ignore("the session has no valid customer email");
        };
        let context = self.context(metadata.effective_at);
        let hosted = self
            .catalog
            .plan(&checkout.plan_key)
            .is_some_and(|plan| plan.max_workspaces.is_some());
        if hosted {
            let (account_id, opened) = crate::flows::hosted::open_account(
                self.store,
                self.keys,
                &context,
                &checkout,
                owner_email,
            )
            .await?;
            let complete = HandoffCommand::Complete {
                session_id: session_id.to_owned(),
                license_id: None,
                account_id: Some(account_id.clone()),
            };
            let state = aggregates::handoff::HandoffState {
                handoff: Some(handoff),
            };
            let (handoff_events, _) = decide_all::<PurchaseHandoff>(state, &[complete], &context)?;
            let mut effects = opened;
            effects.extend(part::<PurchaseHandoff>(
                stream(PurchaseHandoff::STREAM_TYPE, handoff_id.as_str())?,
                handoff_version,
                &handoff_events,
            )?);
            for linked in [
                session["subscription"].as_str(),
                session["customer"].as_str(),
            ]
            .into_iter()
            .flatten()
            {
                effects.extend(
                    self.link(linked, StripeTarget::Account(account_id.clone()), &context)
                        .await?,
                );
            }
            return Ok((effects, None));
        }
        let license_id = LicenseId::from_entropy(rand::rngs::OsRng.next_u64());
        let key = self.activation_key_of(session_id);
        let key_hash = self.keys.hasher.hash(key.expose());
        let issue = LicenseCommand::Issue(Box::new(IssueLicense {
            license_id: license_id.clone(),
            owner_email,
            plan_version: checkout.plan_key.clone(),
            billing_cycle: Some(checkout.billing_cycle),
            state: if checkout.trial {
                SubscriptionState::Trial
            } else {
                SubscriptionState::Active
            },
            current_period_end: None,
            origin: LicenseOrigin::Checkout {
                session_id: session_id.to_owned(),
            },
            stripe_price_id: Some(checkout.price_id.clone()),
            activation_key_prefix: key.shown_prefix(),
            activation_key_hash: key_hash.clone(),
        }));
        let (license_events, _) = decide_all::<License>(Default::default(), &[issue], &context)?;
        let (key_events, _) = decide_all::<ActivationKeyIndex>(
            Default::default(),
            &[BindActivationKey {
                license_id: license_id.clone(),
            }],
            &context,
        )?;
        let complete = HandoffCommand::Complete {
            session_id: session_id.to_owned(),
            license_id: Some(license_id.clone()),
            account_id: None,
        };
        let state = aggregates::handoff::HandoffState {
            handoff: Some(handoff),
        };
        let (handoff_events, _) = decide_all::<PurchaseHandoff>(state, &[complete], &context)?;
        let appends = [
            part::<License>(
                stream(License::STREAM_TYPE, license_id.as_str())?,
                StreamVersion::EMPTY,
                &license_events,
            )?,
            part::<ActivationKeyIndex>(
                stream(ActivationKeyIndex::STREAM_TYPE, key_hash.as_str())?,
                StreamVersion::EMPTY,
                &key_events,
            )?,
            part::<PurchaseHandoff>(
                stream(PurchaseHandoff::STREAM_TYPE, handoff_id.as_str())?,
                handoff_version,
                &handoff_events,
            )?,
        ];
        let mut effects: Vec<StreamAppend> = appends.into_iter().flatten().collect();
        for linked in [
            session["subscription"].as_str(),
            session["customer"].as_str(),
        ]
        .into_iter()
        .flatten()
        {
            effects.extend(
                self.link(linked, StripeTarget::License(license_id.clone()), &context)
                    .await?,
            );
        }
        Ok((effects, None))
    }

    /// What a verified Stripe event changes, by type; anything unhandled is ignored with a reason.
    /// A subscription's, invoice's or charge's effect goes to the license or hosted account the
    /// Stripe object is linked to.
    async fn effects_of(
        &self,
        event: &StripeEvent,
        created: DateTime<Utc>,
        metadata: &EventMetadata,
    ) -> Result<(Vec<StreamAppend>, Option<String>), FlowError> {
        let object = &event.data.object;
        let hosted_status = |status: &str, plan_source| AccountCommand::ApplyStripeStatus {
            stripe_event_id: event.id.clone(),
            created,
            status: status.to_owned(),
            plan_source,
        };
        match event.event_type.as_str() {
            "checkout.session.completed" => self.checkout_completed(object, metadata).await,
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted" => {
                let snapshot = subscription_snapshot(event, created);
                let for_account =
                    hosted_status(&snapshot.status, Some(snapshot.plan_source.clone()));
                let for_license = LicenseCommand::ApplyStripeSnapshot(Box::new(snapshot));
                self.on_linked(
                    object["id"].as_str(),
                    for_license,
                    Some(for_account),
                    None,
                    metadata,
                )
                .await
            }
            "invoice.paid" => {
                let period_end = object["lines"]["data"][0]["period"]["end"].as_i64();
                let for_license = LicenseCommand::RecordPaymentSucceeded {
                    stripe_event_id: event.id.clone(),
                    current_period_end: period_end.and_then(|t| DateTime::from_timestamp(t, 0)),
                };
                let for_account = hosted_status("active", None);
                self.on_linked(
                    invoice_subscription(object),
                    for_license,
                    Some(for_account),
                    object["charge"].as_str(),
                    metadata,
                )
                .await
            }
            "invoice.payment_failed" => {
                let for_license = LicenseCommand::RecordPaymentFailed {
                    stripe_event_id: event.id.clone(),
                };
                let for_account = hosted_status("past_due", None);
                self.on_linked(
                    invoice_subscription(object),
                    for_license,
                    Some(for_account),
                    None,
                    metadata,
                )
                .await
            }
            "charge.refunded" | "charge.dispute.created" => {
                let (reason, charge) = if event.event_type == "charge.refunded" {
                    (RevocationReason::Refund, object["id"].as_str())
                } else {
                    (RevocationReason::Dispute, object["charge"].as_str())
                };
                let reference = object["id"].as_str().unwrap_or(&event.id).to_owned();
                self.on_linked(
                    charge,
                    LicenseCommand::Revoke { reason, reference },
                    None,
                    None,
                    metadata,
                )
                .await
            }
            other => Ok((
                Vec::new(),
                Some(format!(
                    "{other} is not handled by this version of the ledger"
                )),
            )),
        }
    }

    /// Links a Stripe object (subscription, customer, charge) to a license or account, if it is a
    /// valid id.
    async fn link(
        &self,
        stripe_id: &str,
        target: StripeTarget,
        context: &Context<'_>,
    ) -> Result<Option<StreamAppend>, FlowError> {
        let Ok(index) = StreamName::parse(StripeObjectIndex::STREAM_TYPE, stripe_id) else {
            return Ok(None);
        };
        let (link, version) = load::<StripeObjectIndex>(self.store, &index).await?;
        let (events, _) =
            decide_all::<StripeObjectIndex>(link, &[LinkStripeObject { target }], context)?;
        Ok(part::<StripeObjectIndex>(index, version, &events)?)
    }

    /// Applies the command for what a Stripe object is linked to: `for_license` to a license (and
    /// links `also_link` to it), `for_account` to a hosted account. An event about nothing known,
    /// or one the target refuses, is ignored with its reason.
    async fn on_linked(
        &self,
        stripe_id: Option<&str>,
        for_license: LicenseCommand,
        for_account: Option<AccountCommand>,
        also_link: Option<&str>,
        metadata: &EventMetadata,
    ) -> Result<(Vec<StreamAppend>, Option<String>), FlowError> {
        let ignore = |reason: String| Ok((Vec::new(), Some(reason)));
        let Some(stripe_id) = stripe_id else {
            return ignore(String::from("the object names no subscription or charge"));
        };
        let Ok(index) = StreamName::parse(StripeObjectIndex::STREAM_TYPE, stripe_id) else {
            return ignore(format!("{stripe_id:?} is not a Stripe id"));
        };
        let context = self.context(metadata.effective_at);
        match load::<StripeObjectIndex>(self.store, &index)
            .await?
            .0
            .target
        {
            None => ignore(format!("{stripe_id} belongs to nothing of this ledger")),
            Some(StripeTarget::License(license_id)) => {
                let license_stream = stream(License::STREAM_TYPE, license_id.as_str())?;
                let (state, version) = load::<License>(self.store, &license_stream).await?;
                let events = match decide_all::<License>(state, &[for_license], &context) {
                    Ok((events, _)) => events,
                    Err(refusal) => return ignore(format!("the license refused it: {refusal}")),
                };
                let ignored_because = only_ignored(&events, |event| match event {
                    LicenseEvent::StripeEventIgnored { reason, .. } => Some(reason),
                    _ => None,
                });
                let mut effects: Vec<StreamAppend> =
                    part::<License>(license_stream, version, &events)?
                        .into_iter()
                        .collect();
                if let (Some(charge), None) = (also_link, &ignored_because) {
                    effects.extend(
                        self.link(charge, StripeTarget::License(license_id), &context)
                            .await?,
                    );
                }
                Ok((effects, ignored_because))
            }
            Some(StripeTarget::Account(account_id)) => {
                let Some(command) = for_account else {
                    return ignore(String::from(
                        "refunds and disputes of hosted subscriptions are settled in Stripe",
                    ));
                };
                let account_stream = stream(Account::STREAM_TYPE, account_id.as_str())?;
                let (state, version) = load::<Account>(self.store, &account_stream).await?;
                let events = match decide_all::<Account>(state, &[command], &context) {
                    Ok((events, _)) => events,
                    Err(refusal) => return ignore(format!("the account refused it: {refusal}")),
                };
                let ignored_because = only_ignored(&events, |event| match event {
                    AccountEvent::StripeEventIgnored { reason, .. } => Some(reason),
                    _ => None,
                });
                Ok((
                    part::<Account>(account_stream, version, &events)?
                        .into_iter()
                        .collect(),
                    ignored_because,
                ))
            }
        }
    }
}

/// The reason a decision recorded for ignoring a Stripe event, when recording that is all it did:
/// the webhook then answers `ignored`, as the log says.
fn only_ignored<E>(events: &[E], reason: impl Fn(&E) -> Option<&String>) -> Option<String> {
    let reasons: Vec<&String> = events.iter().map(&reason).collect::<Option<_>>()?;
    reasons.first().map(|first| (*first).clone())
}

/// Reads a `customer.subscription.*` object into a snapshot. The period end is read from the
/// subscription (older API versions) or its first item (newer ones); deletion is cancellation.
fn subscription_snapshot(event: &StripeEvent, created: DateTime<Utc>) -> StripeSnapshot {
    let object = &event.data.object;
    let item = &object["items"]["data"][0];
    let period_end = object["current_period_end"]
        .as_i64()
        .or_else(|| item["current_period_end"].as_i64());
    let status = if event.event_type == "customer.subscription.deleted" {
        "canceled"
    } else {
        object["status"].as_str().unwrap_or_default()
    };
    let metadata = object["metadata"]
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let billing_cycle = match item["price"]["recurring"]["interval"].as_str() {
        Some("month") => Some(BillingCycle::Monthly),
        Some("year") => Some(BillingCycle::Annual),
        _ => None,
    };
    StripeSnapshot {
        stripe_event_id: event.id.clone(),
        created,
        status: status.to_owned(),
        current_period_end: period_end.and_then(|t| DateTime::from_timestamp(t, 0)),
        plan_source: StripePlanSource {
            metadata,
            price_id: item["price"]["id"].as_str().map(str::to_owned),
        },
        billing_cycle,
    }
}

/// The subscription an invoice bills: top-level in older API versions, under `parent` in newer ones.
fn invoice_subscription(invoice: &serde_json::Value) -> Option<&str> {
    invoice["subscription"]
        .as_str()
        .or_else(|| invoice["parent"]["subscription_details"]["subscription"].as_str())
}
