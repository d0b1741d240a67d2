//! Hosted accounts (`DOMAIN.md` §10, §11): members and roles, invitations, billing, and tenants
//! (workspaces) with their caps. An MSP account's subscription applies to all its tenants.
//!
//! One stream per account. Role rules: Owner and Admin change workspaces, members and billing;
//! only an Owner grants or touches owner rows; the last owner can be neither demoted nor removed.

use crate::catalog::StripePlanSource;
use crate::decider::{Context, Decider, DomainEvent, SnapshotCodec};
use crate::error::DomainError;
use crate::ids::{bounded_text, AccountId, Email, InvitationId, SecretHash, TenantId, UserId};
use crate::subscription::{grace_ends_at, is_stale, SubscriptionState, HOSTED_GRACE_DAYS};
use crate::trial::TRIAL_PLAN;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A tenant still provisioning after this long has failed (§10).
pub const PROVISIONING_STUCK_SECONDS: i64 = 15 * 60;
/// Longest account display name.
pub const DISPLAY_NAME_LEN_MAX: usize = 120;
/// Longest workspace name.
pub const TENANT_NAME_LEN_MAX: usize = 80;
/// Members plus pending invitations one account may hold: a bound on the stream's state.
pub const MEMBERS_MAX: usize = 500;

/// An individual (Cloud) account or an MSP account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// One organisation's Cloud account.
    Individual,
    /// A managed-service provider operating many tenants.
    Msp,
}

impl AccountKind {
    /// The label the portal shows (`Cloud` or `MSP`).
    pub fn label(self) -> &'static str {
        match self {
            AccountKind::Individual => "Cloud",
            AccountKind::Msp => "MSP",
        }
    }
}

/// A member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including owner rows.
    Owner,
    /// Workspaces, members and billing.
    Admin,
    /// View and open workspaces, view the roster.
    Tech,
    /// View and open workspaces, view the roster.
    ReadOnly,
}

impl Role {
    /// The name customers see: Owner, Admin, Tech, Read-only (never `read_only`, never `member`).
    pub fn display(self) -> &'static str {
        match self {
            Role::Owner => "Owner",
            Role::Admin => "Admin",
            Role::Tech => "Tech",
            Role::ReadOnly => "Read-only",
        }
    }

    /// The role inside a tenant: owner→owner, admin→admin, tech→editor, read_only→viewer.
    pub fn tenant_role(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Tech => "editor",
            Role::ReadOnly => "viewer",
        }
    }

    /// Whether the role changes workspaces, members and billing.
    pub fn can_manage(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// A tenant's state (§10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    /// Being created.
    Provisioning,
    /// Running.
    Active,
    /// Stopped, kept.
    Suspended,
    /// Canceled, kept until deleted.
    Canceled,
    /// Being deleted.
    Deleting,
    /// Gone.
    Deleted,
    /// Provisioning failed.
    Failed,
}

impl TenantState {
    /// The name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Provisioning => "provisioning",
            TenantState::Active => "active",
            TenantState::Suspended => "suspended",
            TenantState::Canceled => "canceled",
            TenantState::Deleting => "deleting",
            TenantState::Deleted => "deleted",
            TenantState::Failed => "failed",
        }
    }

    /// Whether the tenant counts against the workspace cap: `canceled`, `deleting` and `deleted`
    /// do not.
    pub fn counts_toward_cap(self) -> bool {
        !matches!(
            self,
            TenantState::Canceled | TenantState::Deleting | TenantState::Deleted
        )
    }

    /// The tenant transitions this ledger allows (`DOMAIN.md` names the states, not the moves;
    /// this table is our decision and is listed in `README.md`).
    pub fn can_become(self, next: TenantState) -> bool {
        use TenantState::*;
        matches!(
            (self, next),
            (Provisioning, Active | Failed | Canceled)
                | (Active, Suspended | Canceled | Deleting)
                | (Suspended, Active | Canceled | Deleting)
                | (Canceled, Active | Deleting)
                | (Failed, Deleting)
                | (Deleting, Deleted)
        )
    }
}

/// A member of an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Their email.
    pub email: Email,
    /// Their role.
    pub role: Role,
    /// Since when they are a member (unknown for memberships recorded before schema 2).
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
}

/// A pending invitation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// Who is invited.
    pub email: Email,
    /// The role they will get.
    pub role: Role,
    /// Since when it is pending (unknown for invitations recorded before schema 2).
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
}

/// The account's billing record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Billing {
    /// The canonical plan.
    pub plan_version: String,
    /// The subscription state.
    pub state: SubscriptionState,
    /// When grace started.
    pub grace_started_at: Option<DateTime<Utc>>,
    /// The Stripe price billed, when Stripe said.
    pub stripe_price_id: Option<String>,
    /// The `created` time of the newest Stripe snapshot applied.
    pub newest_stripe_snapshot: Option<DateTime<Utc>>,
    /// When the org's trial started, while billing is the trial.
    pub trial_started_at: Option<DateTime<Utc>>,
    /// When the org's trial ends, while billing is the trial.
    pub trial_ends_at: Option<DateTime<Utc>>,
}

/// A tenant (workspace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Its state.
    pub state: TenantState,
    /// Since when.
    pub state_since: DateTime<Utc>,
    /// The keyed hash of its lease refresh token (`etr_hosted_…`).
    pub refresh_token_hash: Option<SecretHash>,
    /// The host its runtime answers on, pinned by its first lease refresh.
    pub instance_host: Option<String>,
    /// What people call it, if it was named.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// An open account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAccount {
    /// Its id.
    pub account_id: AccountId,
    /// Individual or MSP.
    pub kind: AccountKind,
    /// Its name.
    pub display_name: String,
    /// Members by user id.
    pub members: BTreeMap<UserId, Member>,
    /// Pending invitations by id.
    pub invitations: BTreeMap<InvitationId, Invitation>,
    /// The billing record, once Stripe or a trial created one.
    pub billing: Option<Billing>,
    /// Tenants by id.
    pub tenants: BTreeMap<TenantId, Tenant>,
}

impl OpenAccount {
    /// How many owners there are.
    pub fn owners(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.role == Role::Owner)
            .count()
    }

    /// Tenants counting against the cap, and the cap.
    pub fn workspace_usage(&self, context: &Context<'_>) -> (usize, usize) {
        let current = self
            .tenants
            .values()
            .filter(|t| t.state.counts_toward_cap())
            .count();
        let plan = self.billing.as_ref().map(|b| b.plan_version.as_str());
        (current, context.catalog.max_workspaces(plan) as usize)
    }

    /// Whether a tenant is entitled now: it is active and the account's subscription (for an MSP,
    /// the one subscription of all its tenants) grants paid capabilities.
    pub fn tenant_entitled(&self, tenant_id: &TenantId) -> bool {
        let tenant_active = self
            .tenants
            .get(tenant_id)
            .is_some_and(|t| t.state == TenantState::Active);
        tenant_active && self.billing.as_ref().is_some_and(|b| b.state.grants_paid())
    }

    /// What a tenant is entitled to at `context.now` (what its lease would say), or why it gets
    /// nothing (§10): the tenant must be active, the account's subscription (for an MSP, the one
    /// subscription of all its tenants) must grant, and a trial must not be over.
    pub fn tenant_grant(
        &self,
        tenant_id: &TenantId,
        context: &Context<'_>,
    ) -> Result<TenantGrant, DomainError> {
        let tenant = self
            .tenants
            .get(tenant_id)
            .ok_or(DomainError::NotFound { entity: "tenant" })?;
        if tenant.state != TenantState::Active {
            return Err(DomainError::LeaseUnavailable {
                reason: "tenant_inactive",
            });
        }
        let billing = self
            .billing
            .as_ref()
            .filter(|b| b.state.grants_paid())
            .ok_or(DomainError::LeaseUnavailable {
                reason: "non_granting_state",
            })?;
        let trial_ends_at = (billing.state == SubscriptionState::Trial)
            .then_some(billing.trial_ends_at)
            .flatten();
        if trial_ends_at.is_some_and(|end| context.now >= end) {
            return Err(DomainError::LeaseUnavailable {
                reason: "trial_over",
            });
        }
        let plan = Some(billing.plan_version.as_str());
        Ok(TenantGrant {
            owner_email: self
                .members
                .values()
                .find(|m| m.role == Role::Owner)
                .map(|m| m.email.to_string())
                .unwrap_or_default(),
            plan_version: billing.plan_version.clone(),
            subscription_state: billing.state,
            capabilities: context
                .catalog
                .capabilities(plan, true)
                .into_iter()
                .collect(),
            limits: LeaseLimits {
                max_monitored_systems: context.catalog.max_monitored_systems(plan),
            },
            trial_started_at: trial_ends_at.and(billing.trial_started_at),
            trial_ends_at,
        })
    }

    fn member_role(&self, actor: &UserId) -> Result<Role, DomainError> {
        self.members
            .get(actor)
            .map(|m| m.role)
            .ok_or(DomainError::Forbidden {
                action: "act on this account",
            })
    }

    fn manager(&self, actor: &UserId, action: &'static str) -> Result<Role, DomainError> {
        let role = self.member_role(actor)?;
        if !role.can_manage() {
            return Err(DomainError::Forbidden { action });
        }
        Ok(role)
    }
}

/// The account decider.
pub struct Account;

/// The state of an account stream: nothing until opened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// The account, once opened.
    pub account: Option<OpenAccount>,
}

/// What can be asked of an account.
#[derive(Clone, Debug, PartialEq)]
pub enum AccountCommand {
    /// Open it with its first owner.
    Open {
        /// A fresh id.
        account_id: AccountId,
        /// Individual or MSP.
        kind: AccountKind,
        /// Its name.
        display_name: String,
        /// The first owner.
        owner: UserId,
        /// The first owner's email.
        owner_email: Email,
    },
    /// Rename it.
    Rename {
        /// Who asks.
        actor: UserId,
        /// The new name.
        display_name: String,
    },
    /// Invite someone: a known user joins at once, an unknown email gets a pending invitation.
    Invite {
        /// Who asks.
        actor: UserId,
        /// A fresh id, used for a pending invitation.
        invitation_id: InvitationId,
        /// Who.
        email: Email,
        /// As what.
        role: Role,
        /// The user with this email, if one exists.
        existing_user: Option<UserId>,
    },
    /// A pending invitation is accepted.
    AcceptInvitation {
        /// Which.
        invitation_id: InvitationId,
        /// The user accepting.
        user_id: UserId,
    },
    /// Withdraw a pending invitation.
    WithdrawInvitation {
        /// Who asks.
        actor: UserId,
        /// Which.
        invitation_id: InvitationId,
    },
    /// Change a member's role.
    ChangeRole {
        /// Who asks.
        actor: UserId,
        /// Whose role.
        member: UserId,
        /// The new role.
        role: Role,
    },
    /// Remove a member.
    RemoveMember {
        /// Who asks.
        actor: UserId,
        /// Whom.
        member: UserId,
    },
    /// Record the billing state Stripe (or a trial) established.
    RecordBilling {
        /// The plan.
        plan_version: String,
        /// The state.
        state: SubscriptionState,
    },
    /// Create a workspace.
    ProvisionTenant {
        /// Who asks.
        actor: UserId,
        /// A fresh id.
        tenant_id: TenantId,
        /// The keyed hash of the tenant's new lease refresh token.
        refresh_token_hash: SecretHash,
        /// What people call it, if given (1 to [`TENANT_NAME_LEN_MAX`] characters).
        display_name: Option<String>,
    },
    /// Delete a workspace: a running one goes to `deleting` (the provisioner tears it down), one
    /// never booted to `canceled`.
    RemoveTenant {
        /// Who asks.
        actor: UserId,
        /// Which.
        tenant_id: TenantId,
    },
    /// Put the account on the org trial (§8): Pro capabilities, 15 systems, until `ends_at`.
    GrantTrial {
        /// When the trial started.
        started_at: DateTime<Utc>,
        /// When it ends.
        ends_at: DateTime<Utc>,
    },
    /// Issue a hosted entitlement lease to a tenant runtime presenting its refresh token (§10).
    IssueLease {
        /// The tenant.
        tenant_id: TenantId,
        /// The host the runtime answers on.
        instance_host: String,
        /// The keyed hash of the refresh token presented.
        refresh_token_hash: SecretHash,
    },
    /// Move a tenant to another state (provisioner, lifecycle jobs).
    ChangeTenantState {
        /// Which.
        tenant_id: TenantId,
        /// The new state.
        to: TenantState,
        /// Why.
        reason: String,
    },
    /// Mark tenants provisioning for 15 minutes or more as failed.
    FailStuckProvisioning,
    /// Apply what Stripe says of the account's subscription (§9): its status, and its plan when the
    /// event carries one. An older snapshot than the newest applied changes nothing.
    ApplyStripeStatus {
        /// The Stripe event.
        stripe_event_id: String,
        /// Its `created`.
        created: DateTime<Utc>,
        /// The subscription status (`active`, `past_due`, …).
        status: String,
        /// Where the plan comes from, when the event carries the subscription.
        plan_source: Option<StripePlanSource>,
    },
    /// Cancel a hosted subscription (and its tenants) in grace for 14 days or more.
    EnforceGrace,
}

/// What happened to an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum AccountEvent {
    /// The account was opened.
    AccountOpened {
        /// Its id.
        account_id: AccountId,
        /// Individual or MSP.
        kind: AccountKind,
        /// Its name.
        display_name: String,
    },
    /// It was renamed.
    AccountRenamed {
        /// The new name.
        display_name: String,
    },
    /// A member was invited (pending).
    MemberInvited {
        /// The invitation.
        invitation_id: InvitationId,
        /// Who.
        email: Email,
        /// As what.
        role: Role,
        /// By whom.
        invited_by: UserId,
        /// When (schema 2; `null` for invitations recorded before).
        #[serde(default)]
        at: Option<DateTime<Utc>>,
    },
    /// Someone joined.
    MemberJoined {
        /// Who.
        user_id: UserId,
        /// Their email.
        email: Email,
        /// Their role.
        role: Role,
        /// The invitation accepted, if any.
        invitation_id: Option<InvitationId>,
        /// When (schema 2; `null` for memberships recorded before).
        #[serde(default)]
        at: Option<DateTime<Utc>>,
    },
    /// A pending invitation was withdrawn.
    InvitationWithdrawn {
        /// Which.
        invitation_id: InvitationId,
        /// By whom.
        withdrawn_by: UserId,
    },
    /// A member's role changed.
    MemberRoleChanged {
        /// Whose.
        user_id: UserId,
        /// Before.
        from: Role,
        /// After.
        to: Role,
        /// By whom.
        changed_by: UserId,
    },
    /// A member was removed.
    MemberRemoved {
        /// Who.
        user_id: UserId,
        /// By whom.
        removed_by: UserId,
    },
    /// The billing record changed.
    BillingRecorded {
        /// The plan.
        plan_version: String,
        /// The state.
        state: SubscriptionState,
        /// When.
        at: DateTime<Utc>,
    },
    /// A tenant was provisioned.
    TenantProvisioned {
        /// Its id.
        tenant_id: TenantId,
        /// By whom.
        provisioned_by: UserId,
        /// When.
        at: DateTime<Utc>,
        /// The keyed hash of its lease refresh token.
        #[serde(default)]
        refresh_token_hash: Option<SecretHash>,
        /// What people call it (schema 2; `null` when none was given or before schema 2).
        #[serde(default)]
        display_name: Option<String>,
    },
    /// A tenant's runtime host was pinned by its first lease refresh.
    InstanceHostPinned {
        /// Which tenant.
        tenant_id: TenantId,
        /// The host.
        instance_host: String,
    },
    /// A Stripe snapshot of the account's subscription was applied.
    StripeSnapshotApplied {
        /// The Stripe event.
        stripe_event_id: String,
        /// Its `created`.
        created: DateTime<Utc>,
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
    /// The account is on the org trial.
    TrialGranted {
        /// When the trial started.
        started_at: DateTime<Utc>,
        /// When it ends.
        ends_at: DateTime<Utc>,
    },
    /// A hosted entitlement lease was issued.
    LeaseIssued {
        /// What it says.
        claims: LeaseClaims,
    },
    /// A tenant's state changed.
    TenantStateChanged {
        /// Which.
        tenant_id: TenantId,
        /// Before.
        from: TenantState,
        /// After.
        to: TenantState,
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for AccountEvent {
    fn schema_version(&self) -> i32 {
        // Schema 2 added `at` to memberships and invitations, and `display_name` to workspaces.
        if matches!(
            self,
            AccountEvent::MemberInvited { .. }
                | AccountEvent::MemberJoined { .. }
                | AccountEvent::TenantProvisioned { .. }
        ) {
            2
        } else {
            1
        }
    }
}

impl Decider for Account {
    const STREAM_TYPE: &'static str = "account";
    type State = AccountState;
    const SNAPSHOTS: Option<SnapshotCodec<AccountState>> = Some(SnapshotCodec::serde(3));
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = DomainError;

    fn decide(
        state: &AccountState,
        command: &AccountCommand,
        context: &Context<'_>,
    ) -> Result<Vec<AccountEvent>, DomainError> {
        if let AccountCommand::Open {
            account_id,
            kind,
            display_name,
            owner,
            owner_email,
        } = command
        {
            if state.account.is_some() {
                return Err(DomainError::AlreadyExists { entity: "account" });
            }
            return Ok(vec![
                AccountEvent::AccountOpened {
                    account_id: account_id.clone(),
                    kind: *kind,
                    display_name: bounded_text("display_name", display_name, DISPLAY_NAME_LEN_MAX)?,
                },
                AccountEvent::MemberJoined {
                    user_id: owner.clone(),
                    email: owner_email.clone(),
                    role: Role::Owner,
                    invitation_id: None,
                    at: Some(context.now),
                },
            ]);
        }
        let account = state
            .account
            .as_ref()
            .ok_or(DomainError::NotFound { entity: "account" })?;
        match command {
            AccountCommand::Open { .. } => Err(DomainError::AlreadyExists { entity: "account" }),
            AccountCommand::Rename {
                actor,
                display_name,
            } => {
                account.manager(actor, "rename the account")?;
                let display_name =
                    bounded_text("display_name", display_name, DISPLAY_NAME_LEN_MAX)?;
                Ok((display_name != account.display_name)
                    .then_some(AccountEvent::AccountRenamed { display_name })
                    .into_iter()
                    .collect())
            }
            AccountCommand::Invite {
                actor,
                invitation_id,
                email,
                role,
                existing_user,
            } => decide_invite(
                account,
                context.now,
                actor,
                invitation_id,
                email,
                *role,
                existing_user.as_ref(),
            ),
            AccountCommand::AcceptInvitation {
                invitation_id,
                user_id,
            } => decide_accept(account, invitation_id, user_id, context.now),
            AccountCommand::WithdrawInvitation {
                actor,
                invitation_id,
            } => decide_withdraw(account, actor, invitation_id),
            AccountCommand::ChangeRole {
                actor,
                member,
                role,
            } => decide_change_role(account, actor, member, *role),
            AccountCommand::RemoveMember { actor, member } => decide_remove(account, actor, member),
            AccountCommand::RecordBilling {
                plan_version,
                state,
            } => {
                let plan_version = context.catalog.canonical_plan(plan_version);
                let unchanged = account
                    .billing
                    .as_ref()
                    .is_some_and(|b| b.plan_version == plan_version && b.state == *state);
                Ok((!unchanged)
                    .then_some(AccountEvent::BillingRecorded {
                        plan_version,
                        state: *state,
                        at: context.now,
                    })
                    .into_iter()
                    .collect())
            }
            AccountCommand::ProvisionTenant {
                actor,
                tenant_id,
                refresh_token_hash,
                display_name,
            } => decide_provision(
                account,
                actor,
                (tenant_id, display_name.as_deref()),
                refresh_token_hash,
                context,
            ),
            AccountCommand::RemoveTenant { actor, tenant_id } => {
                decide_remove_tenant(account, actor, tenant_id, context)
            }
            AccountCommand::IssueLease {
                tenant_id,
                instance_host,
                refresh_token_hash,
            } => decide_lease(
                account,
                tenant_id,
                instance_host,
                refresh_token_hash,
                context,
            ),
            AccountCommand::ChangeTenantState {
                tenant_id,
                to,
                reason,
            } => {
                let tenant = account
                    .tenants
                    .get(tenant_id)
                    .ok_or(DomainError::NotFound { entity: "tenant" })?;
                if tenant.state == *to {
                    return Ok(Vec::new());
                }
                if !tenant.state.can_become(*to) {
                    return Err(DomainError::InvalidTransition {
                        from: tenant.state.as_str(),
                        to: to.as_str(),
                    });
                }
                let reason = bounded_text("reason", reason, 500)?;
                Ok(vec![tenant_changed(
                    tenant_id,
                    tenant.state,
                    *to,
                    &reason,
                    context.now,
                )])
            }
            AccountCommand::FailStuckProvisioning => Ok(account
                .tenants
                .iter()
                .filter(|(_, t)| {
                    t.state == TenantState::Provisioning
                        && context.now - t.state_since
                            >= Duration::seconds(PROVISIONING_STUCK_SECONDS)
                })
                .map(|(id, t)| {
                    tenant_changed(
                        id,
                        t.state,
                        TenantState::Failed,
                        "provisioning for 15 minutes or more",
                        context.now,
                    )
                })
                .collect()),
            AccountCommand::EnforceGrace => decide_enforce_grace(account, context),
            AccountCommand::GrantTrial {
                started_at,
                ends_at,
            } => {
                if account
                    .billing
                    .as_ref()
                    .is_some_and(|b| b.state.grants_paid())
                {
                    return Err(DomainError::TrialNotAvailable {
                        reason: "subscription_active",
                    });
                }
                Ok(vec![AccountEvent::TrialGranted {
                    started_at: *started_at,
                    ends_at: *ends_at,
                }])
            }
            AccountCommand::ApplyStripeStatus {
                stripe_event_id,
                created,
                status,
                plan_source,
            } => decide_stripe_status(
                account,
                stripe_event_id,
                *created,
                status,
                plan_source.as_ref(),
                context,
            ),
        }
    }

    fn evolve(mut state: AccountState, event: &AccountEvent) -> AccountState {
        match (event, state.account.as_mut()) {
            (
                AccountEvent::AccountOpened {
                    account_id,
                    kind,
                    display_name,
                },
                _,
            ) => {
                state.account = Some(OpenAccount {
                    account_id: account_id.clone(),
                    kind: *kind,
                    display_name: display_name.clone(),
                    members: BTreeMap::new(),
                    invitations: BTreeMap::new(),
                    billing: None,
                    tenants: BTreeMap::new(),
                });
            }
            (_, Some(account)) => evolve_open(account, event),
            (_, None) => {}
        }
        state
    }
}

fn evolve_open(account: &mut OpenAccount, event: &AccountEvent) {
    match event {
        AccountEvent::AccountOpened { .. } => {}
        AccountEvent::AccountRenamed { display_name } => {
            account.display_name = display_name.clone()
        }
        AccountEvent::MemberInvited {
            invitation_id,
            email,
            role,
            at,
            ..
        } => {
            account.invitations.insert(
                invitation_id.clone(),
                Invitation {
                    email: email.clone(),
                    role: *role,
                    since: *at,
                },
            );
        }
        AccountEvent::MemberJoined {
            user_id,
            email,
            role,
            invitation_id,
            at,
        } => {
            if let Some(invitation_id) = invitation_id {
                account.invitations.remove(invitation_id);
            }
            account.members.insert(
                user_id.clone(),
                Member {
                    email: email.clone(),
                    role: *role,
                    since: *at,
                },
            );
        }
        AccountEvent::InvitationWithdrawn { invitation_id, .. } => {
            account.invitations.remove(invitation_id);
        }
        AccountEvent::MemberRoleChanged { user_id, to, .. } => {
            if let Some(member) = account.members.get_mut(user_id) {
                member.role = *to;
            }
        }
        AccountEvent::MemberRemoved { user_id, .. } => {
            account.members.remove(user_id);
        }
        AccountEvent::BillingRecorded {
            plan_version,
            state,
            at,
        } => {
            let grace_started_at = match (state, account.billing.as_ref()) {
                (SubscriptionState::Grace, Some(b)) if b.state == SubscriptionState::Grace => {
                    b.grace_started_at
                }
                (SubscriptionState::Grace, _) => Some(*at),
                _ => None,
            };
            let (stripe_price_id, newest_stripe_snapshot) =
                account.billing.as_ref().map_or((None, None), |b| {
                    (b.stripe_price_id.clone(), b.newest_stripe_snapshot)
                });
            account.billing = Some(Billing {
                stripe_price_id,
                newest_stripe_snapshot,
                trial_started_at: None,
                trial_ends_at: None,
                plan_version: plan_version.clone(),
                state: *state,
                grace_started_at,
            });
        }
        AccountEvent::TenantProvisioned {
            tenant_id,
            at,
            refresh_token_hash,
            display_name,
            ..
        } => {
            account.tenants.insert(
                tenant_id.clone(),
                Tenant {
                    state: TenantState::Provisioning,
                    state_since: *at,
                    refresh_token_hash: refresh_token_hash.clone(),
                    instance_host: None,
                    display_name: display_name.clone(),
                },
            );
        }
        AccountEvent::InstanceHostPinned {
            tenant_id,
            instance_host,
        } => {
            if let Some(tenant) = account.tenants.get_mut(tenant_id) {
                tenant
                    .instance_host
                    .get_or_insert_with(|| instance_host.clone());
            }
        }
        AccountEvent::LeaseIssued { .. } | AccountEvent::StripeEventIgnored { .. } => {}
        AccountEvent::TrialGranted {
            started_at,
            ends_at,
        } => {
            account.billing = Some(Billing {
                plan_version: String::from(TRIAL_PLAN),
                state: SubscriptionState::Trial,
                grace_started_at: None,
                stripe_price_id: None,
                newest_stripe_snapshot: None,
                trial_started_at: Some(*started_at),
                trial_ends_at: Some(*ends_at),
            });
        }
        AccountEvent::StripeSnapshotApplied {
            created,
            stripe_price_id,
            ..
        } => {
            if let Some(billing) = account.billing.as_mut() {
                billing.newest_stripe_snapshot = Some(*created);
                billing.stripe_price_id =
                    stripe_price_id.clone().or(billing.stripe_price_id.take());
            }
        }
        AccountEvent::TenantStateChanged {
            tenant_id, to, at, ..
        } => {
            if let Some(tenant) = account.tenants.get_mut(tenant_id) {
                tenant.state = *to;
                tenant.state_since = *at;
            }
        }
    }
}

fn tenant_changed(
    tenant_id: &TenantId,
    from: TenantState,
    to: TenantState,
    reason: &str,
    at: DateTime<Utc>,
) -> AccountEvent {
    AccountEvent::TenantStateChanged {
        tenant_id: tenant_id.clone(),
        from,
        to,
        reason: reason.to_owned(),
        at,
    }
}

fn decide_invite(
    account: &OpenAccount,
    now: DateTime<Utc>,
    actor: &UserId,
    invitation_id: &InvitationId,
    email: &Email,
    role: Role,
    existing_user: Option<&UserId>,
) -> Result<Vec<AccountEvent>, DomainError> {
    let actor_role = account.manager(actor, "invite members")?;
    if role == Role::Owner && actor_role != Role::Owner {
        return Err(DomainError::OwnerRequired);
    }
    if account.members.values().any(|m| &m.email == email) {
        return Err(DomainError::AlreadyMember);
    }
    // One pending invitation per email: inviting it again with another role replaces it.
    let pending = account
        .invitations
        .iter()
        .find(|(_, invitation)| &invitation.email == email);
    if let Some((_, invitation)) = pending {
        if invitation.role == role && existing_user.is_none() {
            return Ok(Vec::new());
        }
        if invitation.role == Role::Owner && actor_role != Role::Owner {
            return Err(DomainError::OwnerRequired);
        }
    }
    if pending.is_none() && account.members.len() + account.invitations.len() >= MEMBERS_MAX {
        return Err(DomainError::invalid(
            "email",
            format!("an account holds at most {MEMBERS_MAX} members and invitations"),
        ));
    }
    let pending_id = pending.map(|(id, _)| id.clone());
    Ok(match existing_user {
        Some(user_id) => vec![AccountEvent::MemberJoined {
            user_id: user_id.clone(),
            email: email.clone(),
            role,
            invitation_id: pending_id,
            at: Some(now),
        }],
        None => pending_id
            .map(|withdrawn| AccountEvent::InvitationWithdrawn {
                invitation_id: withdrawn,
                withdrawn_by: actor.clone(),
            })
            .into_iter()
            .chain([AccountEvent::MemberInvited {
                invitation_id: invitation_id.clone(),
                email: email.clone(),
                role,
                invited_by: actor.clone(),
                at: Some(now),
            }])
            .collect(),
    })
}

fn decide_accept(
    account: &OpenAccount,
    invitation_id: &InvitationId,
    user_id: &UserId,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, DomainError> {
    let invitation = account
        .invitations
        .get(invitation_id)
        .ok_or(DomainError::NotFound {
            entity: "invitation",
        })?;
    if account.members.contains_key(user_id) {
        return Err(DomainError::AlreadyMember);
    }
    Ok(vec![AccountEvent::MemberJoined {
        user_id: user_id.clone(),
        email: invitation.email.clone(),
        role: invitation.role,
        at: Some(now),
        invitation_id: Some(invitation_id.clone()),
    }])
}

fn decide_withdraw(
    account: &OpenAccount,
    actor: &UserId,
    invitation_id: &InvitationId,
) -> Result<Vec<AccountEvent>, DomainError> {
    let actor_role = account.manager(actor, "withdraw invitations")?;
    let invitation = account
        .invitations
        .get(invitation_id)
        .ok_or(DomainError::NotFound {
            entity: "invitation",
        })?;
    if invitation.role == Role::Owner && actor_role != Role::Owner {
        return Err(DomainError::OwnerRequired);
    }
    Ok(vec![AccountEvent::InvitationWithdrawn {
        invitation_id: invitation_id.clone(),
        withdrawn_by: actor.clone(),
    }])
}

fn decide_change_role(
    account: &OpenAccount,
    actor: &UserId,
    member: &UserId,
    role: Role,
) -> Result<Vec<AccountEvent>, DomainError> {
    let actor_role = account.manager(actor, "change roles")?;
    let current = account
        .members
        .get(member)
        .ok_or(DomainError::NotFound { entity: "member" })?
        .role;
    if (current == Role::Owner || role == Role::Owner) && actor_role != Role::Owner {
        return Err(DomainError::OwnerRequired);
    }
    if current == role {
        return Ok(Vec::new());
    }
    if current == Role::Owner && account.owners() == 1 {
        return Err(DomainError::LastOwner);
    }
    Ok(vec![AccountEvent::MemberRoleChanged {
        user_id: member.clone(),
        from: current,
        to: role,
        changed_by: actor.clone(),
    }])
}

fn decide_remove(
    account: &OpenAccount,
    actor: &UserId,
    member: &UserId,
) -> Result<Vec<AccountEvent>, DomainError> {
    let actor_role = account.manager(actor, "remove members")?;
    let current = account
        .members
        .get(member)
        .ok_or(DomainError::NotFound { entity: "member" })?
        .role;
    if current == Role::Owner && actor_role != Role::Owner {
        return Err(DomainError::OwnerRequired);
    }
    if current == Role::Owner && account.owners() == 1 {
        return Err(DomainError::LastOwner);
    }
    Ok(vec![AccountEvent::MemberRemoved {
        user_id: member.clone(),
        removed_by: actor.clone(),
    }])
}

fn decide_provision(
    account: &OpenAccount,
    actor: &UserId,
    (tenant_id, display_name): (&TenantId, Option<&str>),
    refresh_token_hash: &SecretHash,
    context: &Context<'_>,
) -> Result<Vec<AccountEvent>, DomainError> {
    account.manager(actor, "create workspaces")?;
    let display_name = display_name
        .map(|name| bounded_text("display_name", name, TENANT_NAME_LEN_MAX))
        .transpose()?;
    if account.tenants.contains_key(tenant_id) {
        return Err(DomainError::AlreadyExists { entity: "tenant" });
    }
    let billing = account
        .billing
        .as_ref()
        .ok_or(DomainError::NoBillingRecord)?;
    if !billing.state.grants_paid() {
        return Err(DomainError::SubscriptionCanceled);
    }
    let (current, limit) = account.workspace_usage(context);
    if current >= limit {
        return Err(DomainError::WorkspaceLimitReached { current, limit });
    }
    Ok(vec![AccountEvent::TenantProvisioned {
        tenant_id: tenant_id.clone(),
        provisioned_by: actor.clone(),
        at: context.now,
        refresh_token_hash: Some(refresh_token_hash.clone()),
        display_name,
    }])
}

fn decide_remove_tenant(
    account: &OpenAccount,
    actor: &UserId,
    tenant_id: &TenantId,
    context: &Context<'_>,
) -> Result<Vec<AccountEvent>, DomainError> {
    let role = account.manager(actor, "delete workspaces")?;
    let tenant = account
        .tenants
        .get(tenant_id)
        .ok_or(DomainError::NotFound { entity: "tenant" })?;
    if matches!(
        tenant.state,
        TenantState::Deleting | TenantState::Deleted | TenantState::Canceled
    ) {
        return Ok(Vec::new());
    }
    // A running workspace is torn down by the provisioner; one never booted is just canceled.
    let to = [TenantState::Deleting, TenantState::Canceled]
        .into_iter()
        .find(|to| tenant.state.can_become(*to))
        .ok_or(DomainError::InvalidTransition {
            from: tenant.state.as_str(),
            to: TenantState::Deleting.as_str(),
        })?;
    Ok(vec![tenant_changed(
        tenant_id,
        tenant.state,
        to,
        &format!("deleted by an {}", role.display()),
        context.now,
    )])
}

fn decide_enforce_grace(
    account: &OpenAccount,
    context: &Context<'_>,
) -> Result<Vec<AccountEvent>, DomainError> {
    let Some(billing) = &account.billing else {
        return Ok(Vec::new());
    };
    let due = billing.state == SubscriptionState::Grace
        && billing
            .grace_started_at
            .is_some_and(|at| context.now >= grace_ends_at(at, HOSTED_GRACE_DAYS));
    if !due {
        return Ok(Vec::new());
    }
    let mut events = vec![AccountEvent::BillingRecorded {
        plan_version: billing.plan_version.clone(),
        state: SubscriptionState::Canceled,
        at: context.now,
    }];
    events.extend(
        account
            .tenants
            .iter()
            .filter(|(_, t)| t.state.can_become(TenantState::Canceled))
            .map(|(id, t)| {
                tenant_changed(
                    id,
                    t.state,
                    TenantState::Canceled,
                    "hosted grace ended unpaid",
                    context.now,
                )
            }),
    );
    Ok(events)
}

/// The issuer of hosted entitlement leases (§10).
pub const LEASE_ISSUER: &str = "pulse-pro-entitlement-lease";
/// The audience of hosted entitlement leases (§10).
pub const LEASE_AUDIENCE: &str = "pulse-pro-entitlement-cache";
/// Lifetime of a paid lease (§10); a trial lease lives until the trial ends.
pub const LEASE_LIFETIME_HOURS: i64 = 24;
/// Longest instance host accepted.
pub const INSTANCE_HOST_LEN_MAX: usize = 253;

/// The limits block of a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseLimits {
    /// The monitored-system limit of the account's plan.
    pub max_monitored_systems: u32,
}

/// What a hosted entitlement lease says (§10). Recorded in `lease_issued` and signed by the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseClaims {
    /// Always [`LEASE_ISSUER`].
    pub iss: String,
    /// Always [`LEASE_AUDIENCE`].
    pub aud: String,
    /// The tenant.
    pub sub: String,
    /// The org (account) id.
    pub org_id: String,
    /// The account owner's email.
    pub email: String,
    /// The host the tenant runtime answers on.
    pub instance_host: String,
    /// The account's plan.
    pub plan_version: String,
    /// The account's subscription state.
    pub subscription_state: String,
    /// Capabilities granted.
    pub capabilities: Vec<String>,
    /// Limits granted.
    pub limits: LeaseLimits,
    /// When a trial started (none for a paid account).
    pub trial_started_at: Option<i64>,
    /// When a trial ends (none for a paid account).
    pub trial_ends_at: Option<i64>,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

/// What an entitled tenant is granted now: the entitlement part of its lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantGrant {
    /// The account owner's email.
    pub owner_email: String,
    /// The account's plan.
    pub plan_version: String,
    /// The account's subscription state.
    pub subscription_state: SubscriptionState,
    /// Capabilities granted.
    pub capabilities: Vec<String>,
    /// Limits granted.
    pub limits: LeaseLimits,
    /// When the trial started, while on a trial.
    pub trial_started_at: Option<DateTime<Utc>>,
    /// When the trial ends, while on a trial.
    pub trial_ends_at: Option<DateTime<Utc>>,
}

fn decide_lease(
    account: &OpenAccount,
    tenant_id: &TenantId,
    instance_host: &str,
    refresh_token_hash: &SecretHash,
    context: &Context<'_>,
) -> Result<Vec<AccountEvent>, DomainError> {
    let tenant = account
        .tenants
        .get(tenant_id)
        .ok_or(DomainError::LeaseTokenInvalid)?;
    if tenant.refresh_token_hash.as_ref() != Some(refresh_token_hash) {
        return Err(DomainError::LeaseTokenInvalid);
    }
    let host =
        bounded_text("instance_host", instance_host, INSTANCE_HOST_LEN_MAX)?.to_ascii_lowercase();
    if tenant
        .instance_host
        .as_ref()
        .is_some_and(|pinned| pinned != &host)
    {
        return Err(DomainError::LeaseTokenInvalid);
    }
    let grant = account.tenant_grant(tenant_id, context)?;
    let claims = LeaseClaims {
        iss: String::from(LEASE_ISSUER),
        aud: String::from(LEASE_AUDIENCE),
        sub: tenant_id.to_string(),
        org_id: account.account_id.to_string(),
        email: grant.owner_email,
        instance_host: host.clone(),
        plan_version: grant.plan_version,
        subscription_state: grant.subscription_state.as_str().to_owned(),
        capabilities: grant.capabilities,
        limits: grant.limits,
        trial_started_at: grant.trial_started_at.map(|t| t.timestamp()),
        trial_ends_at: grant.trial_ends_at.map(|t| t.timestamp()),
        iat: context.now.timestamp(),
        exp: grant
            .trial_ends_at
            .unwrap_or(context.now + Duration::hours(LEASE_LIFETIME_HOURS))
            .timestamp(),
    };
    let mut events = Vec::new();
    if tenant.instance_host.is_none() {
        events.push(AccountEvent::InstanceHostPinned {
            tenant_id: tenant_id.clone(),
            instance_host: host,
        });
    }
    events.push(AccountEvent::LeaseIssued { claims });
    Ok(events)
}

fn decide_stripe_status(
    account: &OpenAccount,
    stripe_event_id: &str,
    created: DateTime<Utc>,
    status: &str,
    plan_source: Option<&StripePlanSource>,
    context: &Context<'_>,
) -> Result<Vec<AccountEvent>, DomainError> {
    let billing = account
        .billing
        .as_ref()
        .ok_or(DomainError::NoBillingRecord)?;
    let ignored = |reason: String| {
        Ok(vec![AccountEvent::StripeEventIgnored {
            stripe_event_id: stripe_event_id.to_owned(),
            reason,
        }])
    };
    if is_stale(created, billing.newest_stripe_snapshot) {
        return ignored(String::from("older than the newest snapshot applied"));
    }
    let target = SubscriptionState::from_stripe_status(status);
    if target != billing.state && !billing.state.can_become(target) {
        return ignored(format!(
            "{} cannot become {}",
            billing.state.as_str(),
            target.as_str()
        ));
    }
    let plan = match plan_source {
        Some(source) => context.catalog.derive_plan(
            source,
            Some(&billing.plan_version),
            billing.stripe_price_id.as_deref(),
        ),
        None => billing.plan_version.clone(),
    };
    let mut events = vec![AccountEvent::StripeSnapshotApplied {
        stripe_event_id: stripe_event_id.to_owned(),
        created,
        stripe_price_id: plan_source.and_then(|source| source.price_id.clone()),
    }];
    if target != billing.state || plan != billing.plan_version {
        events.push(AccountEvent::BillingRecorded {
            plan_version: plan,
            state: target,
            at: context.now,
        });
    }
    Ok(events)
}
