//! The self-hosted license (`DOMAIN.md` §4, §5.1–5.3, §7): issue, plan changes, Stripe-driven state,
//! grace, revocation, installations, grants and the grandfather floor.
//!
//! One stream per license. Every change to what a grant would say bumps `license_version`. Ids,
//! token hashes and jtis come in with the commands (the service draws them); time comes from the
//! context.

use crate::catalog::{BillingCycle, Catalog, StripePlanSource};
use crate::decider::{Context, Decider, DomainEvent, SnapshotCodec};
use crate::error::DomainError;
use crate::ids::{bounded_text, Email, InstallationId, LicenseId, SecretHash};
use crate::subscription::{grace_ends_at, is_stale, SubscriptionState, SELF_HOSTED_GRACE_DAYS};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Concurrent installations one license allows (§5.1).
pub const MAX_INSTALLATIONS: usize = 3;
/// Lifetime of a grant JWT (§5.3).
pub const GRANT_LIFETIME_HOURS: i64 = 72;
/// Longest instance name, fingerprint or client version accepted from an installation.
pub const INSTALLATION_TEXT_LEN_MAX: usize = 256;

/// Who asked for a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeSource {
    /// A Stripe webhook.
    Stripe,
    /// The customer, in the portal.
    Customer,
    /// Support staff.
    Support,
    /// The ledger's own schedule (a change falling due).
    Schedule,
}

/// How a license came to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LicenseOrigin {
    /// A Stripe Checkout purchase.
    Checkout {
        /// The Checkout Session.
        session_id: String,
    },
    /// A v5 license exchanged for a v6 one (§5.4).
    LegacyExchange {
        /// The legacy license's id.
        legacy_license_id: String,
    },
}

/// Why a license was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// A refund was issued.
    Refund,
    /// The payment was disputed.
    Dispute,
    /// The owner asked for their data to be deleted (the recovery job `delete`).
    Erasure,
}

/// When a plan change takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeTiming {
    /// At once (purchase, upgrades, monthly→annual), prorated.
    Immediate,
    /// At the end of the current period (downgrades, annual→monthly, cancellation).
    PeriodEnd,
}

/// One installation of a license.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installation {
    /// Its id.
    pub installation_id: InstallationId,
    /// The instance's stable fingerprint.
    pub fingerprint: String,
    /// The instance's name.
    pub instance_name: String,
    /// The keyed hash of its current installation token.
    pub token_hash: SecretHash,
    /// False once deactivated.
    pub active: bool,
}

/// A change waiting for the period end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduledChange {
    /// A plan or cadence change.
    Plan {
        /// The plan it becomes.
        plan_version: String,
        /// The cadence it becomes.
        billing_cycle: Option<BillingCycle>,
        /// When.
        effective_at: DateTime<Utc>,
    },
    /// The end of the subscription.
    Cancellation {
        /// When.
        effective_at: DateTime<Utc>,
    },
}

impl ScheduledChange {
    /// When the change falls due.
    pub fn effective_at(&self) -> DateTime<Utc> {
        match self {
            ScheduledChange::Plan { effective_at, .. }
            | ScheduledChange::Cancellation { effective_at } => *effective_at,
        }
    }
}

/// What the claims of one grant say (§5.3). Recorded in the `grant_issued` event and signed by the
/// service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantClaims {
    /// License id.
    pub lid: String,
    /// Installation id.
    pub iid: String,
    /// License version.
    pub lv: u64,
    /// `active`, `grace` or `suspended`.
    pub st: String,
    /// Tier key.
    pub tier: String,
    /// Plan key.
    pub plan: String,
    /// Capabilities.
    pub feat: Vec<String>,
    /// The effective limit, after the grandfather floor.
    pub max_monitored_systems: u32,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// The end of the paid period, seconds since the epoch.
    pub current_period_end: Option<i64>,
    /// The end of grace, seconds since the epoch.
    pub grace_until: Option<i64>,
    /// The grant's unique id.
    pub jti: String,
    /// The license owner's email.
    pub email: String,
}

/// The grandfather floor report (§7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinuityReport {
    /// The plan's catalog limit.
    pub plan_limit: u32,
    /// The captured floor, when the reported count exceeded the plan limit.
    pub grandfathered_floor: Option<u32>,
    /// `max(plan_limit, floor)`.
    pub effective_limit: u32,
    /// True until the one capture of a migrated license.
    pub capture_pending: bool,
    /// When the capture happened.
    pub captured_at: Option<DateTime<Utc>>,
}

/// An issued license, as its events describe it. Serialisable so a read model can hold it: the
/// license projection folds the same events with the same `evolve`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedLicense {
    /// Its id.
    pub license_id: LicenseId,
    /// Who owns it.
    pub owner_email: Email,
    /// Its canonical plan.
    pub plan_version: String,
    /// Its cadence.
    pub billing_cycle: Option<BillingCycle>,
    /// Its subscription state.
    pub state: SubscriptionState,
    /// Bumped by every change to what a grant says.
    pub license_version: u64,
    /// The end of the paid period.
    pub current_period_end: Option<DateTime<Utc>>,
    /// True when it came from a v5 exchange.
    pub legacy_migration: bool,
    /// True while the old recurring price still holds.
    pub grandfathered_continuity: bool,
    /// When grace started (set on entering grace, cleared on leaving).
    pub grace_started_at: Option<DateTime<Utc>>,
    /// Set once revoked; revocation is final.
    pub revoked: Option<RevocationReason>,
    /// A change waiting for the period end.
    pub scheduled_change: Option<ScheduledChange>,
    /// Installations by id.
    pub installations: BTreeMap<InstallationId, Installation>,
    /// The floor captured once for a migrated license.
    pub floor: Option<u32>,
    /// When the floor capture happened.
    pub floor_captured_at: Option<DateTime<Utc>>,
    /// The Stripe price currently billed.
    pub stripe_price_id: Option<String>,
    /// The `created` time of the newest Stripe snapshot applied.
    pub newest_stripe_snapshot: Option<DateTime<Utc>>,
    /// The first payment that names its charge: what a self-refund refunds and its window
    /// counts from. Payments recorded before payments named their charge are not here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_payment: Option<Payment>,
}

/// A payment Stripe reported for a license.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The charge (`ch_…`) that paid the invoice.
    pub charge: String,
    /// When Stripe says it was paid (the event's `created`).
    pub paid_at: DateTime<Utc>,
}

impl IssuedLicense {
    /// Active installations now.
    pub fn active_installations(&self) -> usize {
        self.installations.values().filter(|i| i.active).count()
    }

    /// When grace ends, if in grace.
    pub fn grace_until(&self) -> Option<DateTime<Utc>> {
        self.grace_started_at
            .map(|at| grace_ends_at(at, SELF_HOSTED_GRACE_DAYS))
    }

    /// The grandfather-floor report: the floor only ever raises the plan limit.
    pub fn continuity(&self, catalog: &Catalog) -> ContinuityReport {
        let plan_limit = catalog.max_monitored_systems(Some(&self.plan_version));
        ContinuityReport {
            plan_limit,
            grandfathered_floor: self.floor,
            effective_limit: self.floor.map_or(plan_limit, |floor| floor.max(plan_limit)),
            capture_pending: self.legacy_migration && self.floor_captured_at.is_none(),
            captured_at: self.floor_captured_at,
        }
    }

    /// The monitored-system limit the license persists (§9): the effective limit while it grants
    /// paid capabilities, nothing once revoked or in a non-granting state.
    pub fn paid_limit(&self, catalog: &Catalog) -> Option<u32> {
        (self.revoked.is_none() && self.state.grants_paid())
            .then(|| self.continuity(catalog).effective_limit)
    }

    /// The claims a grant for `installation_id` says now.
    pub fn grant_claims(
        &self,
        catalog: &Catalog,
        installation_id: &InstallationId,
        jti: &str,
        now: DateTime<Utc>,
    ) -> GrantClaims {
        let granting = self.state.grants_paid() && self.revoked.is_none();
        let tier = catalog
            .plan(&self.plan_version)
            .map_or("unknown", |p| p.tier.as_str());
        GrantClaims {
            lid: self.license_id.to_string(),
            iid: installation_id.to_string(),
            lv: self.license_version,
            st: self.state.grant_status().to_owned(),
            tier: tier.to_owned(),
            plan: self.plan_version.clone(),
            feat: catalog
                .capabilities(Some(&self.plan_version), granting)
                .into_iter()
                .collect(),
            max_monitored_systems: self.continuity(catalog).effective_limit,
            exp: (now + Duration::hours(GRANT_LIFETIME_HOURS)).timestamp(),
            current_period_end: self.current_period_end.map(|t| t.timestamp()),
            grace_until: self.grace_until().map(|t| t.timestamp()),
            jti: jti.to_owned(),
            email: self.owner_email.to_string(),
        }
    }
}

/// The license decider.
pub struct License;

/// The state of a license stream: nothing until issued.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseState {
    /// The license, once issued.
    pub issued: Option<IssuedLicense>,
}

/// Issue a license.
#[derive(Clone, Debug, PartialEq)]
pub struct IssueLicense {
    /// The new id (drawn by the service).
    pub license_id: LicenseId,
    /// The owner.
    pub owner_email: Email,
    /// The plan bought or migrated.
    pub plan_version: String,
    /// Its cadence.
    pub billing_cycle: Option<BillingCycle>,
    /// `active` for a purchase, `trial` for a trial.
    pub state: SubscriptionState,
    /// The end of the first paid period.
    pub current_period_end: Option<DateTime<Utc>>,
    /// How it came to be.
    pub origin: LicenseOrigin,
    /// The Stripe price billed, if any.
    pub stripe_price_id: Option<String>,
    /// First characters of the activation key, shown to help the customer recognise it.
    pub activation_key_prefix: String,
    /// The keyed hash of the activation key.
    pub activation_key_hash: SecretHash,
}

/// A Stripe subscription snapshot (`customer.subscription.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct StripeSnapshot {
    /// The Stripe event id.
    pub stripe_event_id: String,
    /// The Stripe event's `created`.
    pub created: DateTime<Utc>,
    /// The subscription's status.
    pub status: String,
    /// The subscription's period end.
    pub current_period_end: Option<DateTime<Utc>>,
    /// Where its plan comes from.
    pub plan_source: StripePlanSource,
    /// Its cadence, from the price's interval.
    pub billing_cycle: Option<BillingCycle>,
}

/// Activate (or re-activate) an installation with an activation key.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivateInstallation {
    /// A fresh id, used if the fingerprint is new.
    pub installation_id: InstallationId,
    /// The instance's stable fingerprint.
    pub fingerprint: String,
    /// The instance's name.
    pub instance_name: String,
    /// The keyed hash of the new installation token.
    pub token_hash: SecretHash,
    /// The instance's version.
    pub client_version: String,
}

/// What can be asked of a license.
#[derive(Clone, Debug, PartialEq)]
pub enum LicenseCommand {
    /// Issue it.
    Issue(Box<IssueLicense>),
    /// Change plan and/or cadence (the timing follows §4).
    ChangePlan {
        /// The target plan.
        plan_version: String,
        /// The target cadence.
        billing_cycle: Option<BillingCycle>,
        /// Why, for the record.
        reason: String,
        /// Who asked.
        source: ChangeSource,
    },
    /// Cancel at the period end.
    Cancel {
        /// Who asked.
        source: ChangeSource,
    },
    /// Apply a scheduled change whose time has come (no-op before).
    ApplyScheduledChange,
    /// Apply a Stripe subscription snapshot.
    ApplyStripeSnapshot(Box<StripeSnapshot>),
    /// `invoice.payment_failed`.
    RecordPaymentFailed {
        /// The Stripe event id.
        stripe_event_id: String,
    },
    /// `invoice.paid`.
    RecordPaymentSucceeded {
        /// The Stripe event id.
        stripe_event_id: String,
        /// The period the payment covers up to.
        current_period_end: Option<DateTime<Utc>>,
        /// The charge that paid, and when, when Stripe names it.
        payment: Option<Payment>,
    },
    /// End grace that has run its course (no-op before).
    ExpireGrace,
    /// Revoke at once (refund, dispute, erasure).
    Revoke {
        /// Why.
        reason: RevocationReason,
        /// The Stripe charge, refund or dispute id.
        reference: String,
    },
    /// Activate an installation.
    ActivateInstallation(Box<ActivateInstallation>),
    /// Deactivate an installation.
    DeactivateInstallation {
        /// Which.
        installation_id: InstallationId,
    },
    /// Issue a grant to an installation presenting its token.
    IssueGrant {
        /// The installation.
        installation_id: InstallationId,
        /// The keyed hash of the token presented.
        token_hash: SecretHash,
        /// A fresh grant id.
        jti: String,
    },
    /// Report the first settled monitored-system count of a migrated license (§7).
    CaptureFloor {
        /// The deduplicated count.
        monitored_systems: u32,
    },
}

/// What happened to a license.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum LicenseEvent {
    /// The license was issued.
    LicenseIssued {
        /// Its id.
        license_id: LicenseId,
        /// Its owner.
        owner_email: Email,
        /// Its plan.
        plan_version: String,
        /// Its cadence.
        billing_cycle: Option<BillingCycle>,
        /// Its first state.
        state: SubscriptionState,
        /// The end of its first period.
        current_period_end: Option<DateTime<Utc>>,
        /// True when migrated from v5.
        legacy_migration: bool,
        /// True when it keeps a grandfathered recurring price.
        grandfathered_continuity: bool,
        /// How it came to be.
        origin: LicenseOrigin,
        /// The Stripe price billed.
        stripe_price_id: Option<String>,
        /// The catalog in force.
        catalog_version: u32,
    },
    /// Its activation key was issued (the key itself is stored encrypted elsewhere).
    ActivationKeyIssued {
        /// First characters of the key.
        key_prefix: String,
        /// Keyed hash of the key.
        key_hash: SecretHash,
    },
    /// Its plan or cadence changed.
    PlanChanged {
        /// The plan before.
        from_plan: String,
        /// The plan after.
        to_plan: String,
        /// The cadence after.
        billing_cycle: Option<BillingCycle>,
        /// Immediate or at period end.
        timing: ChangeTiming,
        /// Why.
        reason: String,
        /// Who asked.
        source: ChangeSource,
        /// The version after the change.
        license_version: u64,
        /// The catalog in force.
        catalog_version: u32,
    },
    /// A change was scheduled for the period end.
    ChangeScheduled {
        /// The change.
        change: ScheduledChange,
        /// Why.
        reason: String,
        /// Who asked.
        source: ChangeSource,
    },
    /// The grandfathered recurring price ended for good.
    GrandfatheredContinuityEnded {
        /// Why.
        reason: String,
    },
    /// A Stripe snapshot was applied (its time guards against older ones).
    StripeSnapshotApplied {
        /// The Stripe event.
        stripe_event_id: String,
        /// Its `created`.
        created: DateTime<Utc>,
        /// The status it carried.
        status: String,
        /// The period end it carried.
        current_period_end: Option<DateTime<Utc>>,
        /// The price it carried.
        stripe_price_id: Option<String>,
    },
    /// A Stripe event changed nothing, and why.
    StripeEventIgnored {
        /// The Stripe event.
        stripe_event_id: String,
        /// Why.
        reason: String,
    },
    /// The subscription state changed.
    SubscriptionStateChanged {
        /// Before.
        from: SubscriptionState,
        /// After.
        to: SubscriptionState,
        /// Why.
        reason: String,
        /// The version after the change.
        license_version: u64,
    },
    /// A payment failed.
    PaymentFailed {
        /// The Stripe event.
        stripe_event_id: String,
    },
    /// A payment succeeded.
    PaymentSucceeded {
        /// The Stripe event.
        stripe_event_id: String,
        /// The period it covers up to.
        current_period_end: Option<DateTime<Utc>>,
        /// The charge that paid, and when (absent in events recorded before it was kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payment: Option<Payment>,
    },
    /// Grace started.
    GraceStarted {
        /// When.
        at: DateTime<Utc>,
    },
    /// Grace ended.
    GraceEnded {
        /// When.
        at: DateTime<Utc>,
    },
    /// The license was revoked.
    LicenseRevoked {
        /// Why.
        reason: RevocationReason,
        /// The Stripe object behind it.
        reference: String,
        /// The version after the change.
        license_version: u64,
    },
    /// An installation was activated, or re-activated with a new token.
    InstallationActivated {
        /// Its id.
        installation_id: InstallationId,
        /// Its fingerprint.
        fingerprint: String,
        /// Its name.
        instance_name: String,
        /// Keyed hash of its new token (any previous token is revoked).
        token_hash: SecretHash,
        /// Its version.
        client_version: String,
        /// True when the fingerprint was already active.
        reactivation: bool,
    },
    /// An installation was deactivated.
    InstallationDeactivated {
        /// Its id.
        installation_id: InstallationId,
    },
    /// A grant was issued.
    GrantIssued {
        /// What it says.
        claims: GrantClaims,
    },
    /// The grandfather floor was captured (once).
    ContinuityCaptured {
        /// The reported count.
        reported_monitored_systems: u32,
        /// The plan limit then.
        plan_limit: u32,
        /// The floor stored, only when the count exceeded the plan limit.
        grandfathered_floor: Option<u32>,
        /// When.
        captured_at: DateTime<Utc>,
    },
}

impl DomainEvent for LicenseEvent {}

/// Orders plans for the timing rule: more capabilities first, then a higher limit.
fn plan_rank(catalog: &Catalog, plan: &str) -> (usize, u32) {
    (
        catalog.capabilities(Some(plan), true).len(),
        catalog.max_monitored_systems(Some(plan)),
    )
}

/// §4: purchase, upgrades and monthly→annual are immediate; downgrades and annual→monthly wait for
/// the period end; a combined change takes the most restrictive rule.
pub fn change_timing(
    catalog: &Catalog,
    from: (&str, Option<BillingCycle>),
    to: (&str, Option<BillingCycle>),
) -> ChangeTiming {
    let tier_down = plan_rank(catalog, to.0) < plan_rank(catalog, from.0);
    let cadence_down = matches!(
        (from.1, to.1),
        (Some(BillingCycle::Annual), Some(BillingCycle::Monthly))
    );
    if tier_down || cadence_down {
        ChangeTiming::PeriodEnd
    } else {
        ChangeTiming::Immediate
    }
}

fn issued(state: &LicenseState) -> Result<&IssuedLicense, DomainError> {
    state
        .issued
        .as_ref()
        .ok_or(DomainError::NotFound { entity: "license" })
}

fn live(state: &LicenseState) -> Result<&IssuedLicense, DomainError> {
    let license = issued(state)?;
    if license.revoked.is_some() {
        return Err(DomainError::LicenseRevoked);
    }
    Ok(license)
}

impl Decider for License {
    const STREAM_TYPE: &'static str = "license";
    type State = LicenseState;
    const SNAPSHOTS: Option<SnapshotCodec<LicenseState>> = Some(SnapshotCodec::serde(1));
    type Command = LicenseCommand;
    type Event = LicenseEvent;
    type Error = DomainError;

    fn decide(
        state: &LicenseState,
        command: &LicenseCommand,
        context: &Context<'_>,
    ) -> Result<Vec<LicenseEvent>, DomainError> {
        match command {
            LicenseCommand::Issue(issue) => decide_issue(state, issue, context),
            LicenseCommand::ChangePlan {
                plan_version,
                billing_cycle,
                reason,
                source,
            } => decide_change_plan(
                live(state)?,
                (plan_version, *billing_cycle),
                reason,
                *source,
                context,
            ),
            LicenseCommand::Cancel { source } => decide_cancel(live(state)?, *source),
            LicenseCommand::ApplyScheduledChange => decide_scheduled(live(state)?, context),
            LicenseCommand::ApplyStripeSnapshot(snapshot) => {
                match ignored_when_revoked(issued(state)?, &snapshot.stripe_event_id) {
                    Some(ignored) => Ok(ignored),
                    None => decide_snapshot(issued(state)?, snapshot, context),
                }
            }
            LicenseCommand::RecordPaymentFailed { stripe_event_id } => {
                match ignored_when_revoked(issued(state)?, stripe_event_id) {
                    Some(ignored) => Ok(ignored),
                    None => decide_payment_failed(issued(state)?, stripe_event_id, context),
                }
            }
            LicenseCommand::RecordPaymentSucceeded {
                stripe_event_id,
                current_period_end,
                payment,
            } => match ignored_when_revoked(issued(state)?, stripe_event_id) {
                Some(ignored) => Ok(ignored),
                None => decide_payment_succeeded(
                    issued(state)?,
                    stripe_event_id,
                    *current_period_end,
                    payment.as_ref(),
                    context,
                ),
            },
            LicenseCommand::ExpireGrace => decide_expire_grace(live(state)?, context),
            LicenseCommand::Revoke { reason, reference } => {
                decide_revoke(issued(state)?, *reason, reference)
            }
            LicenseCommand::ActivateInstallation(activation) => {
                decide_activate(live(state)?, activation)
            }
            LicenseCommand::DeactivateInstallation { installation_id } => {
                decide_deactivate(issued(state)?, installation_id)
            }
            LicenseCommand::IssueGrant {
                installation_id,
                token_hash,
                jti,
            } => decide_grant(issued(state)?, installation_id, token_hash, jti, context),
            LicenseCommand::CaptureFloor { monitored_systems } => {
                decide_floor(issued(state)?, *monitored_systems, context)
            }
        }
    }

    fn evolve(mut state: LicenseState, event: &LicenseEvent) -> LicenseState {
        match (event, state.issued.as_mut()) {
            (
                LicenseEvent::LicenseIssued {
                    license_id,
                    owner_email,
                    plan_version,
                    billing_cycle,
                    state: subscription,
                    current_period_end,
                    legacy_migration,
                    grandfathered_continuity,
                    stripe_price_id,
                    ..
                },
                _,
            ) => {
                state.issued = Some(IssuedLicense {
                    license_id: license_id.clone(),
                    owner_email: owner_email.clone(),
                    plan_version: plan_version.clone(),
                    billing_cycle: *billing_cycle,
                    state: *subscription,
                    license_version: 1,
                    current_period_end: *current_period_end,
                    legacy_migration: *legacy_migration,
                    grandfathered_continuity: *grandfathered_continuity,
                    grace_started_at: None,
                    revoked: None,
                    scheduled_change: None,
                    installations: BTreeMap::new(),
                    floor: None,
                    floor_captured_at: None,
                    stripe_price_id: stripe_price_id.clone(),
                    newest_stripe_snapshot: None,
                    first_payment: None,
                });
            }
            (_, Some(license)) => evolve_issued(license, event),
            (_, None) => {}
        }
        state
    }
}

fn evolve_issued(license: &mut IssuedLicense, event: &LicenseEvent) {
    match event {
        LicenseEvent::LicenseIssued { .. } | LicenseEvent::ActivationKeyIssued { .. } => {}
        LicenseEvent::PlanChanged {
            to_plan,
            billing_cycle,
            license_version,
            ..
        } => {
            license.plan_version = to_plan.clone();
            license.billing_cycle = *billing_cycle;
            license.license_version = *license_version;
            license.scheduled_change = None;
        }
        LicenseEvent::ChangeScheduled { change, .. } => {
            license.scheduled_change = Some(change.clone())
        }
        LicenseEvent::GrandfatheredContinuityEnded { .. } => {
            license.grandfathered_continuity = false
        }
        LicenseEvent::StripeSnapshotApplied {
            created,
            current_period_end,
            stripe_price_id,
            ..
        } => {
            license.newest_stripe_snapshot = Some(*created);
            license.current_period_end = current_period_end.or(license.current_period_end);
            license.stripe_price_id = stripe_price_id.clone().or(license.stripe_price_id.take());
        }
        LicenseEvent::StripeEventIgnored { .. }
        | LicenseEvent::PaymentFailed { .. }
        | LicenseEvent::GrantIssued { .. } => {}
        LicenseEvent::SubscriptionStateChanged {
            to,
            license_version,
            ..
        } => {
            license.state = *to;
            license.license_version = *license_version;
            if *to == SubscriptionState::Canceled || *to == SubscriptionState::Expired {
                license.scheduled_change = None;
            }
        }
        LicenseEvent::PaymentSucceeded {
            current_period_end,
            payment,
            ..
        } => {
            license.current_period_end = current_period_end.or(license.current_period_end);
            if license.first_payment.is_none() {
                license.first_payment = payment.clone();
            }
        }
        LicenseEvent::GraceStarted { at } => license.grace_started_at = Some(*at),
        LicenseEvent::GraceEnded { .. } => license.grace_started_at = None,
        LicenseEvent::LicenseRevoked {
            reason,
            license_version,
            ..
        } => {
            license.revoked = Some(*reason);
            license.license_version = *license_version;
            license.scheduled_change = None;
        }
        LicenseEvent::InstallationActivated {
            installation_id,
            fingerprint,
            instance_name,
            token_hash,
            ..
        } => {
            license.installations.insert(
                installation_id.clone(),
                Installation {
                    installation_id: installation_id.clone(),
                    fingerprint: fingerprint.clone(),
                    instance_name: instance_name.clone(),
                    token_hash: token_hash.clone(),
                    active: true,
                },
            );
        }
        LicenseEvent::InstallationDeactivated { installation_id } => {
            if let Some(installation) = license.installations.get_mut(installation_id) {
                installation.active = false;
            }
        }
        LicenseEvent::ContinuityCaptured {
            grandfathered_floor,
            captured_at,
            ..
        } => {
            license.floor = *grandfathered_floor;
            license.floor_captured_at = Some(*captured_at);
        }
    }
}

/// A Stripe event about a revoked license changes nothing; it is recorded as ignored.
fn ignored_when_revoked(
    license: &IssuedLicense,
    stripe_event_id: &str,
) -> Option<Vec<LicenseEvent>> {
    license.revoked.map(|_| {
        vec![LicenseEvent::StripeEventIgnored {
            stripe_event_id: stripe_event_id.to_owned(),
            reason: String::from("the license is revoked"),
        }]
    })
}

fn decide_issue(
    state: &LicenseState,
    issue: &IssueLicense,
    context: &Context<'_>,
) -> Result<Vec<LicenseEvent>, DomainError> {
    if state.issued.is_some() {
        return Err(DomainError::AlreadyExists { entity: "license" });
    }
    let plan =
        context
            .catalog
            .plan(&issue.plan_version)
            .ok_or_else(|| DomainError::UnknownPlan {
                plan: issue.plan_version.clone(),
            })?;
    if !matches!(
        issue.state,
        SubscriptionState::Active | SubscriptionState::Trial
    ) {
        return Err(DomainError::invalid(
            "state",
            "a license is issued active or trialing",
        ));
    }
    let key_prefix = bounded_text("activation_key_prefix", &issue.activation_key_prefix, 16)?;
    let legacy_migration = matches!(issue.origin, LicenseOrigin::LegacyExchange { .. });
    Ok(vec![
        LicenseEvent::LicenseIssued {
            license_id: issue.license_id.clone(),
            owner_email: issue.owner_email.clone(),
            plan_version: plan.key.clone(),
            billing_cycle: issue.billing_cycle,
            state: issue.state,
            current_period_end: issue.current_period_end,
            legacy_migration,
            grandfathered_continuity: plan.grandfathered,
            origin: issue.origin.clone(),
            stripe_price_id: issue.stripe_price_id.clone(),
            catalog_version: context.catalog.version(),
        },
        LicenseEvent::ActivationKeyIssued {
            key_prefix,
            key_hash: issue.activation_key_hash.clone(),
        },
    ])
}

fn continuity_ended(
    license: &IssuedLicense,
    plan_changes: bool,
    cycle_changes: bool,
    why: &str,
) -> Option<LicenseEvent> {
    (license.grandfathered_continuity && (plan_changes || cycle_changes)).then(|| {
        LicenseEvent::GrandfatheredContinuityEnded {
            reason: why.to_owned(),
        }
    })
}

fn decide_change_plan(
    license: &IssuedLicense,
    to: (&String, Option<BillingCycle>),
    reason: &str,
    source: ChangeSource,
    context: &Context<'_>,
) -> Result<Vec<LicenseEvent>, DomainError> {
    if !license.state.grants_paid() {
        return Err(DomainError::InvalidTransition {
            from: license.state.as_str(),
            to: "plan_change",
        });
    }
    let plan = context
        .catalog
        .plan(to.0)
        .ok_or_else(|| DomainError::UnknownPlan { plan: to.0.clone() })?;
    if !plan.purchasable && source != ChangeSource::Support {
        return Err(DomainError::PlanNotPurchasable {
            plan: plan.key.clone(),
        });
    }
    let plan_changes = plan.key != license.plan_version;
    let cycle_changes = to.1 != license.billing_cycle;
    if !plan_changes && !cycle_changes {
        return Ok(Vec::new());
    }
    let reason = bounded_text("reason", reason, 500)?;
    let mut events: Vec<LicenseEvent> = continuity_ended(
        license,
        plan_changes,
        cycle_changes,
        "plan or cadence changed",
    )
    .into_iter()
    .collect();
    let timing = change_timing(
        context.catalog,
        (&license.plan_version, license.billing_cycle),
        (&plan.key, to.1),
    );
    match (timing, license.current_period_end) {
        (ChangeTiming::PeriodEnd, Some(effective_at)) => {
            events.push(LicenseEvent::ChangeScheduled {
                change: ScheduledChange::Plan {
                    plan_version: plan.key.clone(),
                    billing_cycle: to.1,
                    effective_at,
                },
                reason,
                source,
            })
        }
        _ => events.push(LicenseEvent::PlanChanged {
            from_plan: license.plan_version.clone(),
            to_plan: plan.key.clone(),
            billing_cycle: to.1,
            timing: ChangeTiming::Immediate,
            reason,
            source,
            license_version: license.license_version + 1,
            catalog_version: context.catalog.version(),
        }),
    }
    Ok(events)
}

fn decide_cancel(
    license: &IssuedLicense,
    source: ChangeSource,
) -> Result<Vec<LicenseEvent>, DomainError> {
    if !license.state.grants_paid() {
        return Err(DomainError::InvalidTransition {
            from: license.state.as_str(),
            to: "canceled",
        });
    }
    if matches!(
        license.scheduled_change,
        Some(ScheduledChange::Cancellation { .. })
    ) {
        return Ok(Vec::new());
    }
    let mut events: Vec<LicenseEvent> =
        continuity_ended(license, true, false, "subscription canceled")
            .into_iter()
            .collect();
    match license.current_period_end {
        Some(effective_at) => events.push(LicenseEvent::ChangeScheduled {
            change: ScheduledChange::Cancellation { effective_at },
            reason: String::from("canceled at period end"),
            source,
        }),
        None => events.push(end_subscription(license, "canceled")),
    }
    Ok(events)
}

/// The end of a subscription: canceled, or expired for a trial (trial→canceled is not a transition).
fn end_subscription(license: &IssuedLicense, reason: &str) -> LicenseEvent {
    let to = if license.state == SubscriptionState::Trial {
        SubscriptionState::Expired
    } else {
        SubscriptionState::Canceled
    };
    LicenseEvent::SubscriptionStateChanged {
        from: license.state,
        to,
        reason: reason.to_owned(),
        license_version: license.license_version + 1,
    }
}

fn decide_scheduled(
    license: &IssuedLicense,
    context: &Context<'_>,
) -> Result<Vec<LicenseEvent>, DomainError> {
    let Some(change) = &license.scheduled_change else {
        return Ok(Vec::new());
    };
    if context.now < change.effective_at() {
        return Ok(Vec::new());
    }
    let event = match change {
        ScheduledChange::Plan {
            plan_version,
            billing_cycle,
            ..
        } => LicenseEvent::PlanChanged {
            from_plan: license.plan_version.clone(),
            to_plan: plan_version.clone(),
            billing_cycle: *billing_cycle,
            timing: ChangeTiming::PeriodEnd,
            reason: String::from("scheduled change fell due"),
            source: ChangeSource::Schedule,
            license_version: license.license_version + 1,
            catalog_version: context.catalog.version(),
        },
        ScheduledChange::Cancellation { .. } => end_subscription(license, "canceled at period end"),
    };
    Ok(vec![event])
}

/// The state change (and grace bookkeeping) for moving to `to`, or `None` if it is no move.
fn transition(
    license: &IssuedLicense,
    to: SubscriptionState,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<LicenseEvent>, DomainError> {
    if to == license.state {
        return Ok(Vec::new());
    }
    if !license.state.can_become(to) {
        return Err(DomainError::InvalidTransition {
            from: license.state.as_str(),
            to: to.as_str(),
        });
    }
    let mut events = vec![LicenseEvent::SubscriptionStateChanged {
        from: license.state,
        to,
        reason: reason.to_owned(),
        license_version: license.license_version + 1,
    }];
    if to == SubscriptionState::Grace {
        events.push(LicenseEvent::GraceStarted { at: now });
    } else if license.state == SubscriptionState::Grace {
        events.push(LicenseEvent::GraceEnded { at: now });
    }
    if to == SubscriptionState::Canceled {
        events.extend(continuity_ended(
            license,
            true,
            false,
            "subscription canceled",
        ));
    }
    Ok(events)
}

fn decide_snapshot(
    license: &IssuedLicense,
    snapshot: &StripeSnapshot,
    context: &Context<'_>,
) -> Result<Vec<LicenseEvent>, DomainError> {
    let ignored = |reason: String| {
        Ok(vec![LicenseEvent::StripeEventIgnored {
            stripe_event_id: snapshot.stripe_event_id.clone(),
            reason,
        }])
    };
    if is_stale(snapshot.created, license.newest_stripe_snapshot) {
        return ignored(String::from("older than the newest snapshot applied"));
    }
    let target = SubscriptionState::from_stripe_status(&snapshot.status);
    let state_events = match transition(license, target, "stripe subscription status", context.now)
    {
        Ok(events) => events,
        Err(_) => {
            return ignored(format!(
                "{} cannot become {}",
                license.state.as_str(),
                target.as_str()
            ))
        }
    };
    let plan = context.catalog.derive_plan(
        &snapshot.plan_source,
        Some(&license.plan_version),
        license.stripe_price_id.as_deref(),
    );
    let mut events = vec![LicenseEvent::StripeSnapshotApplied {
        stripe_event_id: snapshot.stripe_event_id.clone(),
        created: snapshot.created,
        status: snapshot.status.clone(),
        current_period_end: snapshot.current_period_end,
        stripe_price_id: snapshot.plan_source.price_id.clone(),
    }];
    let plan_changes = plan != license.plan_version;
    let cycle_changes =
        snapshot.billing_cycle.is_some() && snapshot.billing_cycle != license.billing_cycle;
    events.extend(continuity_ended(
        license,
        plan_changes,
        cycle_changes,
        "stripe changed the plan or cadence",
    ));
    let bumped = state_events
        .iter()
        .any(|e| matches!(e, LicenseEvent::SubscriptionStateChanged { .. }));
    events.extend(state_events);
    if plan_changes || cycle_changes {
        events.push(LicenseEvent::PlanChanged {
            from_plan: license.plan_version.clone(),
            to_plan: plan,
            billing_cycle: snapshot.billing_cycle.or(license.billing_cycle),
            timing: ChangeTiming::Immediate,
            reason: String::from("stripe subscription changed"),
            source: ChangeSource::Stripe,
            license_version: license.license_version + 1 + u64::from(bumped),
            catalog_version: context.catalog.version(),
        });
    }
    Ok(events)
}

fn decide_payment_failed(
    license: &IssuedLicense,
    stripe_event_id: &str,
    context: &Context<'_>,
) -> Result<Vec<LicenseEvent>, DomainError> {
    let mut events = vec![LicenseEvent::PaymentFailed {
        stripe_event_id: stripe_event_id.to_owned(),
    }];
    if license.state == SubscriptionState::Active {
        events.extend(transition(
            license,
            SubscriptionState::Grace,
            "payment failed",
            context.now,
        )?);
    }
    Ok(events)
}

fn decide_payment_succeeded(
    license: &IssuedLicense,
    stripe_event_id: &str,
    current_period_end: Option<DateTime<Utc>>,
    payment: Option<&Payment>,
    context: &Context<'_>,
) -> Result<Vec<LicenseEvent>, DomainError> {
    let payment = payment
        .map(|p| {
            Ok::<_, DomainError>(Payment {
                charge: bounded_text("charge", &p.charge, 255)?,
                paid_at: p.paid_at,
            })
        })
        .transpose()?;
    let mut events = vec![LicenseEvent::PaymentSucceeded {
        stripe_event_id: stripe_event_id.to_owned(),
        current_period_end,
        payment,
    }];
    if matches!(
        license.state,
        SubscriptionState::Grace | SubscriptionState::Expired | SubscriptionState::Trial
    ) {
        events.extend(transition(
            license,
            SubscriptionState::Active,
            "payment succeeded",
            context.now,
        )?);
    }
    Ok(events)
}

fn decide_expire_grace(
    license: &IssuedLicense,
    context: &Context<'_>,
) -> Result<Vec<LicenseEvent>, DomainError> {
    match license.grace_until() {
        Some(until) if license.state == SubscriptionState::Grace && context.now >= until => {
            transition(
                license,
                SubscriptionState::Expired,
                "grace ended unpaid",
                context.now,
            )
        }
        _ => Ok(Vec::new()),
    }
}

fn decide_revoke(
    license: &IssuedLicense,
    reason: RevocationReason,
    reference: &str,
) -> Result<Vec<LicenseEvent>, DomainError> {
    if license.revoked.is_some() {
        return Ok(Vec::new());
    }
    Ok(vec![LicenseEvent::LicenseRevoked {
        reason,
        reference: bounded_text("reference", reference, 255)?,
        license_version: license.license_version + 1,
    }])
}

fn decide_activate(
    license: &IssuedLicense,
    activation: &ActivateInstallation,
) -> Result<Vec<LicenseEvent>, DomainError> {
    if license.state == SubscriptionState::Suspended {
        return Err(DomainError::LicenseSuspended);
    }
    let fingerprint = bounded_text(
        "instance_fingerprint",
        &activation.fingerprint,
        INSTALLATION_TEXT_LEN_MAX,
    )?;
    let instance_name = bounded_text(
        "instance_name",
        &activation.instance_name,
        INSTALLATION_TEXT_LEN_MAX,
    )?;
    let client_version = bounded_text("client_version", &activation.client_version, 64)?;
    let existing = license
        .installations
        .values()
        .find(|i| i.active && i.fingerprint == fingerprint);
    let installation_id = match existing {
        Some(installation) => installation.installation_id.clone(),
        None => {
            let current = license.active_installations();
            if current >= MAX_INSTALLATIONS {
                return Err(DomainError::MaxInstallations {
                    current,
                    limit: MAX_INSTALLATIONS,
                });
            }
            activation.installation_id.clone()
        }
    };
    Ok(vec![LicenseEvent::InstallationActivated {
        installation_id,
        fingerprint,
        instance_name,
        token_hash: activation.token_hash.clone(),
        client_version,
        reactivation: existing.is_some(),
    }])
}

fn decide_deactivate(
    license: &IssuedLicense,
    installation_id: &InstallationId,
) -> Result<Vec<LicenseEvent>, DomainError> {
    match license.installations.get(installation_id) {
        None => Err(DomainError::NotFound {
            entity: "installation",
        }),
        Some(installation) if !installation.active => Ok(Vec::new()),
        Some(_) => Ok(vec![LicenseEvent::InstallationDeactivated {
            installation_id: installation_id.clone(),
        }]),
    }
}

/// Whether the installation presenting `token_hash` may be granted now: its refusal if not (a
/// deactivated installation, a rotated token, a revoked or suspended license). The query behind
/// both a grant and the grant status a runtime asks for.
pub fn grant_refusal(
    license: &IssuedLicense,
    installation_id: &InstallationId,
    token_hash: &SecretHash,
) -> Option<DomainError> {
    let Some(installation) = license
        .installations
        .get(installation_id)
        .filter(|i| i.active)
    else {
        return Some(DomainError::InstallationRevoked);
    };
    if &installation.token_hash != token_hash {
        return Some(DomainError::TokenRevoked);
    }
    if license.revoked.is_some() {
        return Some(DomainError::LicenseRevoked);
    }
    if license.state == SubscriptionState::Suspended {
        return Some(DomainError::LicenseSuspended);
    }
    None
}

fn decide_grant(
    license: &IssuedLicense,
    installation_id: &InstallationId,
    token_hash: &SecretHash,
    jti: &str,
    context: &Context<'_>,
) -> Result<Vec<LicenseEvent>, DomainError> {
    if let Some(refusal) = grant_refusal(license, installation_id, token_hash) {
        return Err(refusal);
    }
    let jti = bounded_text("jti", jti, 128)?;
    Ok(vec![LicenseEvent::GrantIssued {
        claims: license.grant_claims(context.catalog, installation_id, &jti, context.now),
    }])
}

fn decide_floor(
    license: &IssuedLicense,
    monitored_systems: u32,
    context: &Context<'_>,
) -> Result<Vec<LicenseEvent>, DomainError> {
    if !license.legacy_migration {
        return Err(DomainError::FloorNotApplicable);
    }
    if license.floor_captured_at.is_some() {
        return Ok(Vec::new());
    }
    let plan_limit = context
        .catalog
        .max_monitored_systems(Some(&license.plan_version));
    Ok(vec![LicenseEvent::ContinuityCaptured {
        reported_monitored_systems: monitored_systems,
        plan_limit,
        grandfathered_floor: (monitored_systems > plan_limit).then_some(monitored_systems),
        captured_at: context.now,
    }])
}
