//! Hosted accounts (`DOMAIN.md` §10): opening an account from a paid Cloud or MSP checkout,
//! refreshing a tenant's entitlement lease, and the provisioner's side of a tenant (its
//! credentials, the states it reports).
//!
//! A `cloud_*` or `msp_*` checkout opens the account, makes the buyer its Owner (their user, made
//! on the way if the email had none), records its
//! billing and provisions the first tenant with its lease refresh token, in the same append as the
//! Stripe receipt. The refresh token is derived from the tenant id under the server's secret (never
//! stored; its keyed hash is the lookup index), so the provisioner that boots the tenant obtains it
//! again through [`tenant_credentials`].

use crate::crypto::secrets::{Secret, LEASE_REFRESH_TOKEN_HEX_LEN, LEASE_REFRESH_TOKEN_PREFIX};
use crate::crypto::KeyMaterial;
use crate::engine::command::{decide_all, handle, load, load_until, recorded_events, Command};
use crate::engine::decision::{run, Attempt, Decided, Decision, Reads};
use crate::engine::store::{BatchOutcome, Idempotency, Store, StoreError};
use crate::flows::sign_in::person_of;
use crate::flows::{stream, FlowError};
use aggregates::account::{
    Account, AccountCommand, AccountEvent, AccountKind, LeaseClaims, Tenant, TenantState,
};
use aggregates::catalog::Catalog;
use aggregates::decider::{Context, Decider};
use aggregates::error::DomainError;
use aggregates::handoff::StartedCheckout;
use aggregates::ids::{AccountId, Email, SecretHash, TenantId, UserId};
use aggregates::index::{BindLeaseRefresh, LeaseRefreshIndex};
use aggregates::log::{EventMetadata, StreamName};
use aggregates::subscription::SubscriptionState;
use aggregates::user::{User, UserCommand};
use async_trait::async_trait;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The lease refresh token of a tenant (`etr_hosted_` + 48 hex), derived under the server secret.
pub fn lease_refresh_token(keys: &KeyMaterial, tenant_id: &TenantId) -> Secret {
    keys.hasher.derive_hex(
        LEASE_REFRESH_TOKEN_PREFIX,
        &format!("tenant:{tenant_id}"),
        LEASE_REFRESH_TOKEN_HEX_LEN,
    )
}

/// Opens a hosted account from a completed checkout, into `decision`: the account (named
/// `display_name`, else after the owner's email domain) with its Owner, billing and first tenant,
/// and the tenant's refresh-token index; returns the new account's id.
pub async fn open_account<T>(
    reads: &mut Reads<'_>,
    keys: &KeyMaterial,
    context: &Context<'_>,
    (checkout, display_name): (&StartedCheckout, Option<&str>),
    owner_email: Email,
    decision: Decision<T>,
) -> Result<(AccountId, Decision<T>), FlowError> {
    let account_id = AccountId::from_entropy(rand::rngs::OsRng.next_u64());
    let (owner, decision) = owner_user(reads, keys, context, &owner_email, decision).await?;
    let tenant_id = TenantId::from_entropy(rand::rngs::OsRng.next_u64());
    let token_hash = keys
        .hasher
        .hash(lease_refresh_token(keys, &tenant_id).expose());
    let kind = if checkout.tier == "msp" {
        AccountKind::Msp
    } else {
        AccountKind::Individual
    };
    let commands = [
        AccountCommand::Open {
            account_id: account_id.clone(),
            kind,
            display_name: display_name
                .or_else(|| owner_email.as_str().split('@').nth(1))
                .unwrap_or("Pulse Cloud")
                .to_owned(),
            owner: owner.clone(),
            owner_email,
        },
        AccountCommand::RecordBilling {
            plan_version: checkout.plan_key.clone(),
            state: if checkout.trial {
                SubscriptionState::Trial
            } else {
                SubscriptionState::Active
            },
        },
        AccountCommand::ProvisionTenant {
            actor: owner,
            tenant_id: tenant_id.clone(),
            refresh_token_hash: token_hash.clone(),
            display_name: None,
        },
    ];
    let (account_events, _) = decide_all::<Account>(Default::default(), &commands, context)?;
    let decision = decision.create::<Account>(
        stream(Account::STREAM_TYPE, account_id.as_str())?,
        &account_events,
    )?;
    let decision = bind_refresh_token(
        reads,
        &token_hash,
        &account_id,
        tenant_id,
        context,
        decision,
    )
    .await?;
    Ok((account_id, decision))
}

/// The buyer's user, registered into `decision` if the email had none.
async fn owner_user<T>(
    reads: &mut Reads<'_>,
    keys: &KeyMaterial,
    context: &Context<'_>,
    email: &Email,
    decision: Decision<T>,
) -> Result<(UserId, Decision<T>), FlowError> {
    let person = stream(User::STREAM_TYPE, &person_of(keys, email))?;
    let user = reads.load::<User>(&person).await?;
    let owner = user.user.as_ref().map_or_else(
        || UserId::from_entropy(rand::rngs::OsRng.next_u64()),
        |user| user.user_id.clone(),
    );
    let register = UserCommand::Register {
        user_id: owner.clone(),
        email: email.clone(),
    };
    let (registered, _) = decide_all::<User>(user, &[register], context)?;
    Ok((owner, decision.append::<User>(person, &registered)?))
}

/// Binds a tenant's refresh-token hash in the lease-refresh index, into `decision`.
async fn bind_refresh_token<T>(
    reads: &mut Reads<'_>,
    token_hash: &SecretHash,
    account_id: &AccountId,
    tenant_id: TenantId,
    context: &Context<'_>,
    decision: Decision<T>,
) -> Result<Decision<T>, FlowError> {
    let index = stream(LeaseRefreshIndex::STREAM_TYPE, token_hash.as_str())?;
    let binding = reads.load::<LeaseRefreshIndex>(&index).await?;
    let bind = BindLeaseRefresh {
        account_id: account_id.clone(),
        tenant_id,
    };
    let (events, _) = decide_all::<LeaseRefreshIndex>(binding, &[bind], context)?;
    Ok(decision.append::<LeaseRefreshIndex>(index, &events)?)
}

/// Provisions another workspace of an account for `actor`, named `display_name` if given, with
/// its lease refresh token: the account's decision (permissions, caps) and the token's index in
/// one append.
#[tracing::instrument(skip_all, fields(account_id = %account_id))]
pub async fn provision_tenant(
    store: &dyn Store,
    keys: &KeyMaterial,
    catalog: &Catalog,
    account_id: &AccountId,
    (actor, display_name): (&UserId, Option<&str>),
    metadata: EventMetadata,
) -> Result<TenantId, FlowError> {
    let attempt = Provision {
        account_stream: stream(Account::STREAM_TYPE, account_id.as_str())?,
        account_id,
        actor,
        display_name,
        keys,
        context: Context::new(metadata.effective_at, catalog),
    };
    match run(store, &metadata, None, &attempt).await? {
        Decided::Appended { answer, .. } | Decided::Unchanged(answer) => Ok(answer),
        Decided::Replayed(_) => {
            Err(StoreError::Invariant(String::from("an unkeyed provisioning was replayed")).into())
        }
    }
}

/// Another workspace of an account, with its lease refresh token's index entry.
struct Provision<'a> {
    account_stream: StreamName,
    account_id: &'a AccountId,
    actor: &'a UserId,
    display_name: Option<&'a str>,
    keys: &'a KeyMaterial,
    context: Context<'a>,
}

#[async_trait]
impl Attempt for Provision<'_> {
    type Answer = TenantId;
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<TenantId>, FlowError> {
        let tenant_id = TenantId::from_entropy(rand::rngs::OsRng.next_u64());
        let token_hash = self
            .keys
            .hasher
            .hash(lease_refresh_token(self.keys, &tenant_id).expose());
        let state = reads.load::<Account>(&self.account_stream).await?;
        let command = AccountCommand::ProvisionTenant {
            actor: self.actor.clone(),
            tenant_id: tenant_id.clone(),
            refresh_token_hash: token_hash.clone(),
            display_name: self.display_name.map(str::to_owned),
        };
        let (events, _) = decide_all::<Account>(state, &[command], &self.context)?;
        let decision = Decision::answer(tenant_id.clone())
            .append::<Account>(self.account_stream.clone(), &events)?;
        bind_refresh_token(
            reads,
            &token_hash,
            self.account_id,
            tenant_id,
            &self.context,
            decision,
        )
        .await
    }
}

/// The provisioner fetches a tenant's lease refresh token to boot its runtime with. The token is
/// derived again (never stored) and checked against the hash the tenant was provisioned with.
#[tracing::instrument(skip_all, fields(account_id, tenant_id))]
pub async fn tenant_credentials(
    store: &dyn Store,
    keys: &KeyMaterial,
    account_id: &str,
    tenant_id: &str,
) -> Result<(Tenant, Secret), FlowError> {
    let (tenant_id, tenant) = load_tenant(store, account_id, tenant_id).await?;
    let token = lease_refresh_token(keys, &tenant_id);
    if tenant.refresh_token_hash.as_ref() != Some(&keys.hasher.hash(token.expose())) {
        return Err(DomainError::NotFound {
            entity: "tenant credentials",
        }
        .into());
    }
    Ok((tenant, token))
}

/// A tenant of an account as the account stream has it now; 404 for either unknown.
pub async fn load_tenant(
    store: &dyn Store,
    account_id: &str,
    tenant_id: &str,
) -> Result<(TenantId, Tenant), FlowError> {
    let not_found = || DomainError::NotFound { entity: "tenant" };
    let tenant_id = TenantId::parse(tenant_id).map_err(|_| not_found())?;
    let account_id = AccountId::parse(account_id).map_err(|_| not_found())?;
    let (state, _) =
        load::<Account>(store, &stream(Account::STREAM_TYPE, account_id.as_str())?).await?;
    let tenant = state
        .account
        .and_then(|account| account.tenants.get(&tenant_id).cloned())
        .ok_or_else(not_found)?;
    Ok((tenant_id, tenant))
}

/// The provisioner reports a tenant's new state (`active` once booted, `failed`, `deleted`, …).
/// With an `Idempotency-Key`, a retry changes nothing and answers the tenant as the first request
/// left it.
#[tracing::instrument(skip_all, fields(account_id, tenant_id, to = ?change.state))]
pub async fn change_tenant_state(
    store: &dyn Store,
    catalog: &Catalog,
    account_id: &str,
    tenant_id: &str,
    change: &TenantStateChange,
    idempotency_key: Option<&str>,
    metadata: EventMetadata,
) -> Result<Tenant, FlowError> {
    let (tenant_id, _) = load_tenant(store, account_id, tenant_id).await?;
    let command = AccountCommand::ChangeTenantState {
        tenant_id: tenant_id.clone(),
        to: change.state,
        reason: change.reason.clone(),
    };
    let idempotency = idempotency_key.map(|key| {
        Idempotency::scoped("tenant-state", key,
            &serde_json::json!({ "account_id": account_id, "tenant_id": tenant_id, "change": change }),
        )
    });
    let outcome = handle::<Account>(
        store,
        Command {
            stream_id: account_id,
            command: &command,
            context: Context::new(metadata.effective_at, catalog),
            metadata,
            idempotency,
        },
    )
    .await?;
    let (state, _) = load_until::<Account>(
        store,
        &stream(Account::STREAM_TYPE, account_id)?,
        outcome.stream_version,
    )
    .await?;
    state
        .account
        .and_then(|account| account.tenants.get(&tenant_id).cloned())
        .ok_or_else(|| DomainError::NotFound { entity: "tenant" }.into())
}

/// What the provisioner reports of a tenant.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantStateChange {
    /// The state it is in now (`active`, `failed`, `suspended`, `canceled`, `deleting`, `deleted`).
    #[schema(value_type = String, example = "active")]
    pub state: TenantState,
    /// Why, for the record.
    pub reason: String,
}

/// What a tenant runtime presents to refresh its lease.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRefreshRequest {
    /// The account (org) id.
    pub org_id: String,
    /// The host the runtime answers on.
    pub instance_host: String,
    /// The tenant's `etr_hosted_…` token.
    pub entitlement_refresh_token: String,
}

/// `POST /api/entitlements/refresh`: a signed lease for the tenant presenting its refresh token.
/// Every lease issued is an event. With an `Idempotency-Key`, a retry answers the lease the first
/// request issued (its recorded claims signed again: Ed25519 is deterministic, so the JWT is
/// byte-identical) and issues no new one.
#[tracing::instrument(skip_all, fields(account_id = %request.org_id, instance_host = %request.instance_host, tenant_id = tracing::field::Empty))]
pub async fn refresh_lease(
    store: &dyn Store,
    keys: &KeyMaterial,
    catalog: &Catalog,
    request: &LeaseRefreshRequest,
    idempotency_key: Option<&str>,
    metadata: EventMetadata,
) -> Result<String, FlowError> {
    let LeaseRefreshRequest {
        org_id,
        instance_host,
        entitlement_refresh_token: refresh_token,
    } = request;
    let well_formed = refresh_token
        .strip_prefix(LEASE_REFRESH_TOKEN_PREFIX)
        .is_some_and(|hex| {
            hex.len() == LEASE_REFRESH_TOKEN_HEX_LEN && hex.bytes().all(|b| b.is_ascii_hexdigit())
        });
    if !well_formed {
        return Err(DomainError::LeaseTokenInvalid.into());
    }
    let token_hash = keys.hasher.hash(refresh_token);
    let index = stream(LeaseRefreshIndex::STREAM_TYPE, token_hash.as_str())?;
    let (binding, _) = load::<LeaseRefreshIndex>(store, &index).await?;
    let Some((account_id, tenant_id)) = binding.bound else {
        return Err(DomainError::LeaseTokenInvalid.into());
    };
    tracing::Span::current().record("tenant_id", tenant_id.as_str());
    if account_id.as_str() != org_id {
        return Err(DomainError::LeaseTokenInvalid.into());
    }
    let account_stream = stream(Account::STREAM_TYPE, account_id.as_str())?;
    let idempotency = idempotency_key.map(|key| {
        Idempotency::scoped(
            "lease",
            key,
            &serde_json::json!({
                "org_id": org_id,
                "instance_host": instance_host,
                "token_hash": token_hash,
            }),
        )
    });
    let attempt = IssueLease {
        account_stream: account_stream.clone(),
        command: AccountCommand::IssueLease {
            tenant_id,
            instance_host: instance_host.to_owned(),
            refresh_token_hash: token_hash,
        },
        context: Context::new(metadata.effective_at, catalog),
    };
    match run(store, &metadata, idempotency.as_ref(), &attempt).await? {
        Decided::Appended { answer, .. } | Decided::Unchanged(answer) => {
            Ok(keys.signer.sign(&answer)?)
        }
        Decided::Replayed(previous) => {
            replayed_lease(store, keys, &account_stream, &previous).await
        }
    }
}

/// A lease for a tenant's runtime: the account decides it (tenant state, billing, trial).
struct IssueLease<'a> {
    account_stream: StreamName,
    command: AccountCommand,
    context: Context<'a>,
}

#[async_trait]
impl Attempt for IssueLease<'_> {
    type Answer = LeaseClaims;
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<LeaseClaims>, FlowError> {
        let state = reads.load::<Account>(&self.account_stream).await?;
        let (events, _) =
            decide_all::<Account>(state, std::slice::from_ref(&self.command), &self.context)?;
        let claims = issued_claims(&events)?;
        Ok(Decision::answer(claims).append::<Account>(self.account_stream.clone(), &events)?)
    }
}

/// The claims of the lease a decision issued.
fn issued_claims(events: &[AccountEvent]) -> Result<LeaseClaims, FlowError> {
    events
        .iter()
        .find_map(|e| match e {
            AccountEvent::LeaseIssued { claims } => Some(claims.clone()),
            _ => None,
        })
        .ok_or(FlowError::Broken("a lease decision issued no lease"))
}

/// The lease an earlier request under the same idempotency key issued, signed again.
async fn replayed_lease(
    store: &dyn Store,
    keys: &KeyMaterial,
    account_stream: &StreamName,
    previous: &BatchOutcome,
) -> Result<String, FlowError> {
    let appended = previous
        .outcomes
        .iter()
        .find(|o| &o.stream == account_stream)
        .ok_or(FlowError::Broken(
            "a recorded lease refresh holds no account events",
        ))?;
    let events = recorded_events::<Account>(store, appended).await?;
    Ok(keys.signer.sign(&issued_claims(&events)?)?)
}
