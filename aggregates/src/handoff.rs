//! The purchase handoff and its checkout intent (`DOMAIN.md` §6.1–6.5).
//!
//! A Pulse installation creates a handoff bound to a checkout intent (feature, return URLs, the
//! runtime's `purchase_return_jti`). The browser resolves it (stamping `resolved_at` once), starts a
//! Stripe Checkout from it, and Stripe's `checkout.session.completed` completes it. The browser
//! view never carries the intent id, the jti or the URLs. One stream per handoff.

use crate::catalog::{BillingCycle, Catalog, Money};
use crate::decider::{Context, Decider, DomainEvent};
use crate::error::DomainError;
use crate::ids::{bounded_text, AccountId, HandoffId, IntentId, LicenseId};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

/// How long a handoff (and its intent) lives (§6.1, §17).
pub const HANDOFF_TTL_SECONDS: i64 = 3_600;
/// The only path a success URL may have.
pub const SUCCESS_PATH: &str = "/auth/license-purchase-activate";
/// The feature every monitored-system upgrade normalises to.
pub const SELF_HOSTED_PLAN_FEATURE: &str = "self_hosted_plan";
/// Longest URL accepted.
pub const URL_LEN_MAX: usize = 2_048;
/// Longest jti or Stripe id accepted.
pub const TOKEN_ID_LEN_MAX: usize = 128;

/// Where a handoff is in its life, as the browser sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffStatus {
    /// Created by the installation.
    Created,
    /// Looked up by the browser.
    Resolved,
    /// A Stripe Checkout was started.
    CheckoutStarted,
    /// Paid and fulfilled.
    Completed,
    /// Its hour passed before completion.
    Expired,
}

/// The checkout intent a handoff is bound to: server-side only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutIntent {
    /// Its id.
    pub intent_id: IntentId,
    /// The normalised feature.
    pub feature: String,
    /// Where Stripe returns after payment.
    pub success_url: String,
    /// Where Stripe returns on cancel.
    pub cancel_url: String,
    /// The runtime's purchase-return token id.
    pub purchase_return_jti: String,
}

/// A Checkout Session started from a handoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedCheckout {
    /// The Stripe Checkout Session id.
    pub session_id: String,
    /// The plan bought.
    pub plan_key: String,
    /// Its tier.
    pub tier: String,
    /// Its cadence.
    pub billing_cycle: BillingCycle,
    /// The Stripe price charged.
    pub price_id: String,
    /// Whether the checkout includes a trial.
    pub trial: bool,
    /// Where Stripe hosts the session (kept so a retried request answers the same URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// An existing handoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handoff {
    /// Its id.
    pub handoff_id: HandoffId,
    /// Its intent.
    pub intent: CheckoutIntent,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it expires unless completed.
    pub expires_at: DateTime<Utc>,
    /// The first browser lookup.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Checkouts started, oldest first.
    pub checkouts: Vec<StartedCheckout>,
    /// The session that completed it, and the license it produced.
    pub completed: Option<(String, Option<LicenseId>)>,
}

/// What the browser may see of a handoff (§6.2): never the intent id, the jti or the URLs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HandoffView {
    /// The handoff id.
    pub portal_handoff_id: HandoffId,
    /// The feature.
    pub feature: String,
    /// The status now.
    pub status: HandoffStatus,
    /// The first lookup.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

impl Handoff {
    /// The status at `now`: completed wins; otherwise expired after the TTL.
    pub fn status(&self, now: DateTime<Utc>) -> HandoffStatus {
        if self.completed.is_some() {
            HandoffStatus::Completed
        } else if now >= self.expires_at {
            HandoffStatus::Expired
        } else if !self.checkouts.is_empty() {
            HandoffStatus::CheckoutStarted
        } else if self.resolved_at.is_some() {
            HandoffStatus::Resolved
        } else {
            HandoffStatus::Created
        }
    }

    /// The browser's view at `now`.
    pub fn browser_view(&self, now: DateTime<Utc>) -> HandoffView {
        HandoffView {
            portal_handoff_id: self.handoff_id.clone(),
            feature: self.intent.feature.clone(),
            status: self.status(now),
            resolved_at: self.resolved_at,
            expires_at: self.expires_at,
        }
    }

    /// The checkout started with this session id.
    pub fn checkout(&self, session_id: &str) -> Option<&StartedCheckout> {
        self.checkouts.iter().find(|c| c.session_id == session_id)
    }
}

/// The handoff decider.
pub struct PurchaseHandoff;

/// The state of a handoff stream: nothing until created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandoffState {
    /// The handoff, once created.
    pub handoff: Option<Handoff>,
}

/// What can be asked of a handoff.
#[derive(Clone, Debug, PartialEq)]
pub enum HandoffCommand {
    /// The installation starts a purchase.
    Create {
        /// A fresh handoff id.
        handoff_id: HandoffId,
        /// A fresh intent id.
        intent_id: IntentId,
        /// The feature asked for.
        feature: String,
        /// The return URL after payment.
        success_url: String,
        /// The return URL on cancel.
        cancel_url: String,
        /// The runtime's purchase-return token id.
        purchase_return_jti: String,
    },
    /// The browser looks it up.
    Resolve,
    /// The browser starts a Stripe Checkout (the session id comes from Stripe).
    StartCheckout(StartedCheckout),
    /// Stripe completed a session of this handoff.
    Complete {
        /// The session.
        session_id: String,
        /// The license issued for it (self-hosted plans).
        license_id: Option<LicenseId>,
        /// The hosted account it opened (Cloud and MSP plans).
        account_id: Option<AccountId>,
    },
}

/// What happened to a handoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum HandoffEvent {
    /// The handoff was created together with the server-side checkout intent it is bound to.
    HandoffCreated {
        /// Its id.
        handoff_id: HandoffId,
        /// The intent (never shown to the browser).
        intent: CheckoutIntent,
        /// When.
        created_at: DateTime<Utc>,
        /// When both expire.
        expires_at: DateTime<Utc>,
    },
    /// The browser looked it up for the first time.
    HandoffResolved {
        /// When.
        resolved_at: DateTime<Utc>,
    },
    /// A Checkout Session was started.
    CheckoutStarted(StartedCheckout),
    /// A Checkout Session of this handoff completed. Schema 2 names the hosted account a Cloud or
    /// MSP purchase opened (schema 1 had no `account_id`; its upcaster sets it to null).
    CheckoutCompleted {
        /// The session.
        session_id: String,
        /// The license issued (self-hosted plans).
        license_id: Option<LicenseId>,
        /// The hosted account opened (Cloud and MSP plans). Required in the payload: an event
        /// without it is schema 1 and must have been upcast.
        #[serde(deserialize_with = "Option::deserialize")]
        account_id: Option<AccountId>,
        /// When.
        completed_at: DateTime<Utc>,
    },
}

impl DomainEvent for HandoffEvent {
    fn schema_version(&self) -> i32 {
        match self {
            HandoffEvent::CheckoutCompleted { .. } => 2,
            _ => 1,
        }
    }
}

/// `max_monitored_systems` becomes `self_hosted_plan`; other features must be a capability.
pub fn normalise_feature(raw: &str, context: &Context<'_>) -> Result<String, DomainError> {
    let feature = raw.trim();
    if feature == "max_monitored_systems" || feature == SELF_HOSTED_PLAN_FEATURE {
        return Ok(String::from(SELF_HOSTED_PLAN_FEATURE));
    }
    if context.catalog.is_capability(feature) {
        return Ok(feature.to_owned());
    }
    Err(DomainError::invalid(
        "feature",
        "must be max_monitored_systems, self_hosted_plan or a capability",
    ))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An absolute https URL (http only for a loopback host), without credentials.
pub fn checked_return_url(field: &'static str, raw: &str) -> Result<Url, DomainError> {
    if raw.len() > URL_LEN_MAX {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {URL_LEN_MAX} characters"),
        ));
    }
    let url = Url::parse(raw.trim())
        .map_err(|_| DomainError::invalid(field, "must be an absolute URL"))?;
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url));
    if !scheme_ok || url.host().is_none() {
        return Err(DomainError::invalid(
            field,
            "must be https (http only for a loopback host)",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DomainError::invalid(field, "must not carry credentials"));
    }
    Ok(url)
}

/// A token id or Stripe id: 1 to 128 of `A-Z a-z 0-9 _ - .`.
pub fn checked_token_id(field: &'static str, raw: &str) -> Result<String, DomainError> {
    let ok = !raw.is_empty()
        && raw.len() <= TOKEN_ID_LEN_MAX
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        return Err(DomainError::invalid(
            field,
            format!("must be 1 to {TOKEN_ID_LEN_MAX} of A-Z a-z 0-9 _ - ."),
        ));
    }
    Ok(raw.to_owned())
}

impl Decider for PurchaseHandoff {
    const STREAM_TYPE: &'static str = "handoff";
    type State = HandoffState;
    type Command = HandoffCommand;
    type Event = HandoffEvent;
    type Error = DomainError;

    fn decide(
        state: &HandoffState,
        command: &HandoffCommand,
        context: &Context<'_>,
    ) -> Result<Vec<HandoffEvent>, DomainError> {
        let existing = || {
            state
                .handoff
                .as_ref()
                .ok_or(DomainError::NotFound { entity: "handoff" })
        };
        match command {
            HandoffCommand::Create {
                handoff_id,
                intent_id,
                feature,
                success_url,
                cancel_url,
                purchase_return_jti,
            } => {
                if state.handoff.is_some() {
                    return Err(DomainError::AlreadyExists { entity: "handoff" });
                }
                let intent = CheckoutIntent {
                    intent_id: intent_id.clone(),
                    feature: normalise_feature(feature, context)?,
                    success_url: checked_success_url(success_url)?.to_string(),
                    cancel_url: checked_return_url("cancel_url", cancel_url)?.to_string(),
                    purchase_return_jti: checked_token_id(
                        "purchase_return_jti",
                        purchase_return_jti,
                    )?,
                };
                Ok(vec![HandoffEvent::HandoffCreated {
                    handoff_id: handoff_id.clone(),
                    intent,
                    created_at: context.now,
                    expires_at: context.now + Duration::seconds(HANDOFF_TTL_SECONDS),
                }])
            }
            HandoffCommand::Resolve => {
                let handoff = existing()?;
                let first_lookup = handoff.resolved_at.is_none()
                    && handoff.status(context.now) == HandoffStatus::Created;
                Ok(first_lookup
                    .then_some(HandoffEvent::HandoffResolved {
                        resolved_at: context.now,
                    })
                    .into_iter()
                    .collect())
            }
            HandoffCommand::StartCheckout(checkout) => decide_start(existing()?, checkout, context),
            HandoffCommand::Complete {
                session_id,
                license_id,
                account_id,
            } => decide_complete(existing()?, session_id, license_id, account_id, context),
        }
    }

    fn evolve(mut state: HandoffState, event: &HandoffEvent) -> HandoffState {
        match (event, state.handoff.as_mut()) {
            (
                HandoffEvent::HandoffCreated {
                    handoff_id,
                    intent,
                    created_at,
                    expires_at,
                },
                _,
            ) => {
                state.handoff = Some(Handoff {
                    handoff_id: handoff_id.clone(),
                    intent: intent.clone(),
                    created_at: *created_at,
                    expires_at: *expires_at,
                    resolved_at: None,
                    checkouts: Vec::new(),
                    completed: None,
                });
            }
            (HandoffEvent::HandoffResolved { resolved_at }, Some(handoff)) => {
                handoff.resolved_at.get_or_insert(*resolved_at);
            }
            (HandoffEvent::CheckoutStarted(checkout), Some(handoff)) => {
                handoff.checkouts.push(checkout.clone())
            }
            (
                HandoffEvent::CheckoutCompleted {
                    session_id,
                    license_id,
                    ..
                },
                Some(handoff),
            ) => {
                handoff.completed = Some((session_id.clone(), license_id.clone()));
            }
            (_, None) => {}
        }
        state
    }
}

/// A success URL: a checked return URL whose path is exactly [`SUCCESS_PATH`].
pub fn checked_success_url(raw: &str) -> Result<Url, DomainError> {
    let url = checked_return_url("success_url", raw)?;
    if url.path() != SUCCESS_PATH {
        return Err(DomainError::invalid(
            "success_url",
            format!("path must be {SUCCESS_PATH}"),
        ));
    }
    Ok(url)
}

/// A checkout a handoff may start: its plan canonicalised and priced from the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricedCheckout {
    /// The plan.
    pub plan_key: String,
    /// Its tier.
    pub tier: String,
    /// Its cadence.
    pub billing_cycle: BillingCycle,
    /// The Stripe price of that plan and cadence.
    pub price_id: String,
    /// Whether it includes a trial.
    pub trial: bool,
}

/// One thing a purchase handoff can buy: a self-hosted plan at a cadence, at its price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The plan.
    pub plan_key: String,
    /// Its tier.
    pub tier: String,
    /// The cadence.
    pub billing_cycle: BillingCycle,
    /// What it costs per period.
    pub price: Money,
    /// Monitored systems it allows.
    pub max_monitored_systems: u32,
}

/// What a handoff offers (the portal's Upgrade job): every self-hosted plan checkout may sell, at
/// each cadence the price table has, cheapest first.
pub fn offers(catalog: &Catalog) -> Vec<Offer> {
    let mut offers: Vec<Offer> = catalog
        .plans()
        .filter(|plan| plan.purchasable && !plan.grandfathered && plan.max_workspaces.is_none())
        .flat_map(|plan| {
            BillingCycle::ALL.into_iter().filter_map(move |cycle| {
                catalog.price_for(&plan.key, cycle).map(|price| Offer {
                    plan_key: plan.key.clone(),
                    tier: plan.tier.clone(),
                    billing_cycle: cycle,
                    price: price.amount.clone(),
                    max_monitored_systems: plan.max_monitored_systems,
                })
            })
        })
        .collect();
    offers.sort_by_key(|offer| (offer.price.amount_minor, offer.plan_key.clone()));
    offers
}

/// Whether `handoff` may start a checkout of `plan_key` (`tier`, `billing_cycle`) now, and at what
/// price: the query a checkout start asks before it creates the session at Stripe, and the rule
/// the decision to record it applies again.
pub fn price_checkout(
    handoff: &Handoff,
    plan_key: &str,
    tier: &str,
    billing_cycle: BillingCycle,
    trial: bool,
    context: &Context<'_>,
) -> Result<PricedCheckout, DomainError> {
    match handoff.status(context.now) {
        HandoffStatus::Completed => return Err(DomainError::HandoffCompleted),
        HandoffStatus::Expired => return Err(DomainError::HandoffExpired),
        HandoffStatus::Created | HandoffStatus::Resolved | HandoffStatus::CheckoutStarted => {}
    }
    let plan = context
        .catalog
        .plan(plan_key)
        .ok_or_else(|| DomainError::UnknownPlan {
            plan: plan_key.to_owned(),
        })?;
    if plan.grandfathered || !plan.purchasable {
        return Err(DomainError::PlanNotPurchasable {
            plan: plan.key.clone(),
        });
    }
    if tier.trim() != plan.tier {
        return Err(DomainError::invalid(
            "tier",
            format!("plan {} is tier {}", plan.key, plan.tier),
        ));
    }
    let price = context
        .catalog
        .price_for(&plan.key, billing_cycle)
        .ok_or_else(|| {
            DomainError::invalid(
                "billing_cycle",
                format!("plan {} has no such price", plan.key),
            )
        })?;
    Ok(PricedCheckout {
        plan_key: plan.key.clone(),
        tier: plan.tier.clone(),
        billing_cycle,
        price_id: price.id.clone(),
        trial,
    })
}

fn decide_start(
    handoff: &Handoff,
    checkout: &StartedCheckout,
    context: &Context<'_>,
) -> Result<Vec<HandoffEvent>, DomainError> {
    let priced = price_checkout(
        handoff,
        &checkout.plan_key,
        &checkout.tier,
        checkout.billing_cycle,
        checkout.trial,
        context,
    )?;
    Ok(vec![HandoffEvent::CheckoutStarted(StartedCheckout {
        session_id: checked_token_id("session_id", &checkout.session_id)?,
        plan_key: priced.plan_key,
        tier: priced.tier,
        billing_cycle: priced.billing_cycle,
        price_id: priced.price_id,
        trial: priced.trial,
        url: checkout
            .url
            .as_deref()
            .map(|url| bounded_text("url", url, URL_LEN_MAX))
            .transpose()?,
    })])
}

fn decide_complete(
    handoff: &Handoff,
    session_id: &str,
    license_id: &Option<LicenseId>,
    account_id: &Option<AccountId>,
    context: &Context<'_>,
) -> Result<Vec<HandoffEvent>, DomainError> {
    if handoff.checkout(session_id).is_none() {
        return Err(DomainError::UnknownCheckoutSession);
    }
    match &handoff.completed {
        Some((completed, _)) if completed == session_id => Ok(Vec::new()),
        Some(_) => Err(DomainError::HandoffCompleted),
        // Completion is accepted after the TTL: the customer has paid.
        None => Ok(vec![HandoffEvent::CheckoutCompleted {
            session_id: session_id.to_owned(),
            license_id: license_id.clone(),
            account_id: account_id.clone(),
            completed_at: context.now,
        }]),
    }
}
