//! Trial starts (`DOMAIN.md` §8): once per org, rate-limited, denials recorded. Concurrent starts
//! for one org are decided one after another (a lost race decides again), so each gets the
//! domain's answer.
//!
//! The org is an account id when it has signed up; the ledger reads that account's billing to know
//! whether a subscription is already active, and puts the account on the trial when it starts (so
//! the leases of its tenants carry it). An org the ledger does not know is sent to sign up.
//! Which licenses belong to an org is not yet modelled, so `license_active` is only ever false here.

use crate::engine::command::pause_before_retry;
use crate::engine::command::{decide_all, load, load_until, recorded_events};
use crate::engine::store::{AppendBatch, BatchOutcome, Idempotency, Store, StoreError};
use crate::flows::{part, stream, FlowError, FLOW_ATTEMPTS_MAX};
use aggregates::account::{Account, AccountCommand};
use aggregates::catalog::Catalog;
use aggregates::decider::{Context, Decider};
use aggregates::error::DomainError;
use aggregates::ids::AccountId;
use aggregates::log::EventMetadata;
use aggregates::trial::{StartTrial, Trial, TrialEvent, TrialState};

/// Starts the trial of `org_id`. A denial is recorded, then answered as its error. With an
/// idempotency key, a retry answers exactly what the first attempt did (its start or its denial).
pub async fn start_trial(
    store: &dyn Store,
    catalog: &Catalog,
    org_id: &str,
    signup_url: &str,
    idempotency_key: Option<&str>,
    metadata: EventMetadata,
) -> Result<TrialState, FlowError> {
    let org_ok = !org_id.is_empty()
        && org_id.len() <= 128
        && org_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !org_ok {
        return Err(DomainError::invalid("org_id", "must be 1 to 128 of A-Z a-z 0-9 _ -").into());
    }
    let idempotency = idempotency_key
        .map(|key| Idempotency::scoped("trial", key, &serde_json::json!({ "org_id": org_id })));
    if let Some(idempotency) = &idempotency {
        if let Some(previous) = store.idempotent_outcome(idempotency).await? {
            return replayed(store, &previous).await;
        }
    }
    for attempt in 1..=FLOW_ATTEMPTS_MAX {
        pause_before_retry(attempt).await;
        match try_start(
            store,
            catalog,
            org_id,
            signup_url,
            idempotency.clone(),
            &metadata,
        )
        .await
        {
            Err(FlowError::Store(StoreError::WrongExpectedVersion { .. })) => continue,
            other => return other,
        }
    }
    Err(FlowError::Contended)
}

/// One attempt: decide on the trial (and the org's account) as loaded, append both at once.
async fn try_start(
    store: &dyn Store,
    catalog: &Catalog,
    org_id: &str,
    signup_url: &str,
    idempotency: Option<Idempotency>,
    metadata: &EventMetadata,
) -> Result<TrialState, FlowError> {
    let trial_stream = stream(Trial::STREAM_TYPE, org_id)?;
    let account = match AccountId::parse(org_id) {
        Ok(_) => {
            load::<Account>(store, &stream(Account::STREAM_TYPE, org_id)?)
                .await?
                .0
                .account
        }
        Err(_) => None,
    };
    let command = StartTrial {
        license_active: false,
        subscription_active: account
            .as_ref()
            .and_then(|a| a.billing.as_ref())
            .is_some_and(|b| b.state.grants_paid()),
        signed_up: account.is_some(),
        signup_url: format!("{signup_url}?org_id={org_id}"),
    };
    let (state, version) = load::<Trial>(store, &trial_stream).await?;
    let context = Context::new(metadata.effective_at, catalog);
    let (events, after) = decide_all::<Trial>(state, &[command], &context)?;
    let mut appends: Vec<_> = part::<Trial>(trial_stream, version, &events)?
        .into_iter()
        .collect();
    // A signed-up org's account goes on the trial in the same append, so its leases carry it.
    if let (
        Some(account),
        Some(TrialEvent::TrialStarted {
            started_at,
            ends_at,
            ..
        }),
    ) = (&account, events.first())
    {
        let account_stream = stream(Account::STREAM_TYPE, account.account_id.as_str())?;
        let (account_state, account_version) = load::<Account>(store, &account_stream).await?;
        let grant = AccountCommand::GrantTrial {
            started_at: *started_at,
            ends_at: *ends_at,
        };
        let (account_events, _) = decide_all::<Account>(account_state, &[grant], &context)?;
        appends.extend(part::<Account>(
            account_stream,
            account_version,
            &account_events,
        )?);
    }
    let outcome = store
        .append_batch(AppendBatch {
            appends,
            metadata: metadata.clone(),
            idempotency,
        })
        .await?;
    if outcome.replayed() {
        return replayed(store, &outcome).await;
    }
    match events.iter().find_map(TrialEvent::denial) {
        Some(denial) => Err(denial.into()),
        None => Ok(after),
    }
}

/// The answer a recorded trial start gave: its denial, or the trial as it stood right after.
async fn replayed(store: &dyn Store, outcome: &BatchOutcome) -> Result<TrialState, FlowError> {
    let appended = outcome
        .outcomes
        .first()
        .ok_or(DomainError::NotFound { entity: "trial" })?;
    let events = recorded_events::<Trial>(store, appended).await?;
    if let Some(denial) = events.iter().find_map(TrialEvent::denial) {
        return Err(denial.into());
    }
    Ok(
        load_until::<Trial>(store, &appended.stream, appended.stream_version)
            .await?
            .0,
    )
}
