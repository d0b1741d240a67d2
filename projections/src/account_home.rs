//! The account home (`DOMAIN.md` §10, §12): one hosted account's billing, workspaces and what each
//! is entitled to, members, the self-hosted licenses of its owners, and the actions someone must
//! take. A pure function of the account and licenses read models, the catalog and an instant:
//! trials end and grace runs out with time alone, so the view is composed at read time rather than
//! stored.
//!
//! Actions needed, most urgent first (each names its subject and, where one exists, its deadline):
//! `payment_failed` (hosted billing or a license in grace: update the payment method before grace
//! ends), `trial_over`, `trial_ending` (3 days or less left), `subscription_canceled`,
//! `no_billing_record`, `workspace_failed` (a workspace whose provisioning failed),
//! `workspace_limit_reached`, `invitation_pending`.

use aggregates::account::{AccountKind, OpenAccount, TenantGrant};
use aggregates::catalog::{BillingCycle, Catalog};
use aggregates::decider::Context;
use aggregates::error::DomainError;
use aggregates::license::{IssuedLicense, RevocationReason, ScheduledChange};
use aggregates::subscription::{grace_ends_at, SubscriptionState, HOSTED_GRACE_DAYS};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// A trial this close to its end asks for a decision.
pub const TRIAL_ENDING_NOTICE_DAYS: i64 = 3;

/// The account home.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountHome {
    /// The account id.
    pub account_id: String,
    /// `individual` or `msp`.
    pub kind: AccountKind,
    /// `Cloud` or `MSP`.
    pub kind_label: &'static str,
    /// The account's name.
    pub name: String,
    /// The hosted billing record, once there is one.
    pub billing: Option<AccountBilling>,
    /// Workspaces counting against the cap, and the cap.
    pub workspaces: WorkspaceUsage,
    /// Every workspace with what it is entitled to now.
    pub tenants: Vec<TenantView>,
    /// Members, by user id.
    pub members: Vec<MemberView>,
    /// Pending invitations.
    pub invitations: Vec<MemberView>,
    /// The self-hosted licenses the account's owners hold.
    pub licenses: Vec<LicenseBilling>,
    /// What someone must do, most urgent first.
    pub actions_needed: Vec<ActionNeeded>,
}

/// The billing state of a hosted account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountBilling {
    /// The plan.
    pub plan_version: String,
    /// The plan's tier.
    pub tier: Option<String>,
    /// The subscription state.
    pub state: SubscriptionState,
    /// When grace ends, while in grace.
    pub grace_period_end: Option<DateTime<Utc>>,
    /// When the trial ends, while on the trial.
    pub trial_ends_at: Option<DateTime<Utc>>,
    /// The Stripe price billed.
    pub stripe_price_id: Option<String>,
}

/// The billing state of a self-hosted license.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LicenseBilling {
    /// The license id.
    pub license_id: String,
    /// The owner.
    pub owner_email: String,
    /// The plan.
    pub plan_version: String,
    /// The plan's tier.
    pub tier: Option<String>,
    /// The cadence.
    pub billing_cycle: Option<BillingCycle>,
    /// The subscription state.
    pub state: SubscriptionState,
    /// The end of the paid period.
    pub current_period_end: Option<DateTime<Utc>>,
    /// When grace ends, while in grace.
    pub grace_period_end: Option<DateTime<Utc>>,
    /// Why it was revoked, if it was.
    pub revoked: Option<RevocationReason>,
    /// A change waiting for the period end.
    pub scheduled_change: Option<ScheduledChange>,
    /// Installations active now.
    pub active_installations: usize,
    /// The Stripe price billed.
    pub stripe_price_id: Option<String>,
}

impl LicenseBilling {
    /// The billing view of a license.
    pub fn of(license: &IssuedLicense, catalog: &Catalog) -> LicenseBilling {
        LicenseBilling {
            license_id: license.license_id.to_string(),
            owner_email: license.owner_email.to_string(),
            plan_version: license.plan_version.clone(),
            tier: catalog.plan(&license.plan_version).map(|p| p.tier.clone()),
            billing_cycle: license.billing_cycle,
            state: license.state,
            current_period_end: license.current_period_end,
            grace_period_end: license.grace_until(),
            revoked: license.revoked,
            scheduled_change: license.scheduled_change.clone(),
            active_installations: license.active_installations(),
            stripe_price_id: license.stripe_price_id.clone(),
        }
    }
}

/// Workspaces in use against the plan's cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WorkspaceUsage {
    /// Workspaces that count (not canceled, deleting or deleted).
    pub current: usize,
    /// The plan's cap.
    pub limit: usize,
}

/// A workspace and what it is entitled to now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantView {
    /// The tenant id.
    pub tenant_id: String,
    /// Its state.
    pub state: &'static str,
    /// Since when.
    pub state_since: DateTime<Utc>,
    /// The host its runtime answers on, once pinned.
    pub instance_host: Option<String>,
    /// What its lease grants now; `None` when it gets no lease.
    pub entitlements: Option<TenantGrant>,
    /// Why it gets no lease (`tenant_inactive`, `non_granting_state`, `trial_over`).
    pub lease_unavailable: Option<&'static str>,
}

/// A member or a pending invitation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// The user id (a member) or invitation id (pending).
    pub id: String,
    /// Their email.
    pub email: String,
    /// Owner, Admin, Tech or Read-only.
    pub role: &'static str,
}

/// Something someone must do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActionNeeded {
    /// A stable code (see the module documentation).
    pub code: &'static str,
    /// What it is about: the account, a tenant, a license or an invitation id.
    pub subject: String,
    /// By when, where there is a deadline.
    pub due_at: Option<DateTime<Utc>>,
    /// What to do, in words.
    pub message: String,
}

/// The account home of `account` at `now`, with the licenses its owners hold.
pub fn account_home(
    account: &OpenAccount,
    licenses: &[IssuedLicense],
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> AccountHome {
    let context = Context::new(now, catalog);
    let (current, limit) = account.workspace_usage(&context);
    let billing = account.billing.as_ref().map(|b| AccountBilling {
        plan_version: b.plan_version.clone(),
        tier: catalog.plan(&b.plan_version).map(|p| p.tier.clone()),
        state: b.state,
        grace_period_end: (b.state == SubscriptionState::Grace)
            .then_some(b.grace_started_at)
            .flatten()
            .map(|at| grace_ends_at(at, HOSTED_GRACE_DAYS)),
        trial_ends_at: (b.state == SubscriptionState::Trial)
            .then_some(b.trial_ends_at)
            .flatten(),
        stripe_price_id: b.stripe_price_id.clone(),
    });
    let tenants = account
        .tenants
        .iter()
        .map(|(tenant_id, tenant)| {
            let grant = account.tenant_grant(tenant_id, &context);
            TenantView {
                tenant_id: tenant_id.to_string(),
                state: tenant.state.as_str(),
                state_since: tenant.state_since,
                instance_host: tenant.instance_host.clone(),
                lease_unavailable: match &grant {
                    Err(DomainError::LeaseUnavailable { reason }) => Some(*reason),
                    _ => None,
                },
                entitlements: grant.ok(),
            }
        })
        .collect();
    let licenses: Vec<LicenseBilling> = licenses
        .iter()
        .map(|license| LicenseBilling::of(license, catalog))
        .collect();
    let mut home = AccountHome {
        account_id: account.account_id.to_string(),
        kind: account.kind,
        kind_label: account.kind.label(),
        name: account.display_name.clone(),
        billing,
        workspaces: WorkspaceUsage { current, limit },
        tenants,
        members: account
            .members
            .iter()
            .map(|(id, m)| MemberView {
                id: id.to_string(),
                email: m.email.to_string(),
                role: m.role.display(),
            })
            .collect(),
        invitations: account
            .invitations
            .iter()
            .map(|(id, i)| MemberView {
                id: id.to_string(),
                email: i.email.to_string(),
                role: i.role.display(),
            })
            .collect(),
        licenses,
        actions_needed: Vec::new(),
    };
    home.actions_needed = actions_needed(&home, now);
    home
}

fn action(
    code: &'static str,
    subject: &str,
    due_at: Option<DateTime<Utc>>,
    message: String,
) -> ActionNeeded {
    ActionNeeded {
        code,
        subject: subject.to_owned(),
        due_at,
        message,
    }
}

/// What the home's state asks someone to do at `now`, most urgent first.
fn actions_needed(home: &AccountHome, now: DateTime<Utc>) -> Vec<ActionNeeded> {
    let account = home.account_id.as_str();
    let mut actions = Vec::new();
    match &home.billing {
        Some(billing) if billing.state == SubscriptionState::Grace => actions.push(action(
            "payment_failed",
            account,
            billing.grace_period_end,
            String::from("A payment failed. Update the payment method before grace ends, or the subscription and its workspaces are canceled."),
        )),
        Some(billing) if billing.state == SubscriptionState::Canceled => actions.push(action(
            "subscription_canceled",
            account,
            None,
            String::from("The subscription is canceled. Subscribe again to restore the workspaces."),
        )),
        Some(billing) => {
            if let Some(end) = billing.trial_ends_at {
                if now >= end {
                    actions.push(action(
                        "trial_over",
                        account,
                        Some(end),
                        String::from("The trial is over. Subscribe to keep the workspaces entitled."),
                    ));
                } else if end - now <= Duration::days(TRIAL_ENDING_NOTICE_DAYS) {
                    actions.push(action(
                        "trial_ending",
                        account,
                        Some(end),
                        String::from("The trial ends soon. Subscribe to keep the workspaces entitled."),
                    ));
                }
            }
        }
        None => actions.push(action(
            "no_billing_record",
            account,
            None,
            String::from("The account has no subscription yet. Subscribe to create workspaces."),
        )),
    }
    for license in &home.licenses {
        if license.state == SubscriptionState::Grace && license.revoked.is_none() {
            actions.push(action(
                "payment_failed",
                &license.license_id,
                license.grace_period_end,
                String::from("A payment for this license failed. Update the payment method before grace ends."),
            ));
        }
    }
    for tenant in home.tenants.iter().filter(|t| t.state == "failed") {
        actions.push(action(
            "workspace_failed",
            &tenant.tenant_id,
            None,
            String::from("This workspace could not be provisioned. Delete it and create it again, or contact support."),
        ));
    }
    if home.billing.is_some() && home.workspaces.current >= home.workspaces.limit {
        actions.push(action(
            "workspace_limit_reached",
            account,
            None,
            format!(
                "All {} workspaces of the plan are in use. Upgrade to create more.",
                home.workspaces.limit
            ),
        ));
    }
    for invitation in &home.invitations {
        actions.push(action(
            "invitation_pending",
            &invitation.id,
            None,
            format!("{} has not accepted the invitation yet.", invitation.email),
        ));
    }
    actions
}
