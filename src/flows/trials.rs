//! Trial starts (`DOMAIN.md` §8): once per org, rate-limited, denials recorded. The decision is
//! pure ([`decide_start`]) and runs through the decision runner, so concurrent starts for one org
//! are decided one after another and each gets the domain's answer.
//!
//! The org is an account id when it has signed up; the ledger reads that account's billing to know
//! whether a subscription is already active, and puts the account on the trial when it starts (so
//! the leases of its tenants carry it). An org the ledger does not know is sent to sign up.
//! Which licenses belong to an org is not yet modelled, so `license_active` is only ever false here.

use crate::engine::command::{decide_all, load_until, recorded_events};
use crate::engine::decision::{run, Attempt, Decided, Decision, Reads};
use crate::engine::store::{BatchOutcome, Idempotency, Store};
use crate::flows::{stream, FlowError};
use aggregates::account::{Account, AccountCommand, AccountEvent, AccountState};
use aggregates::catalog::Catalog;
use aggregates::decider::{Context, Decider};
use aggregates::error::DomainError;
use aggregates::ids::AccountId;
use aggregates::log::{EventMetadata, StreamName};
use aggregates::trial::{StartTrial, Trial, TrialEvent, TrialState};
use async_trait::async_trait;

/// Starts the trial of `org_id`. A denial is recorded, then answered as its error. With an
/// idempotency key, a retry answers exactly what the first attempt did (its start or its denial).
#[tracing::instrument(skip_all, fields(org_id = %org_id))]
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
    let account_stream = match AccountId::parse(org_id) {
        Ok(_) => Some(stream(Account::STREAM_TYPE, org_id)?),
        Err(_) => None,
    };
    let start = StartAttempt {
        trial_stream: stream(Trial::STREAM_TYPE, org_id)?,
        account_stream,
        signup_url: format!("{signup_url}?org_id={org_id}"),
        context: Context::new(metadata.effective_at, catalog),
    };
    let decided = run(store, &metadata, idempotency.as_ref(), &start).await?;
    match decided {
        Decided::Replayed(outcome) => replayed(store, &outcome).await,
        Decided::Appended { answer, .. } | Decided::Unchanged(answer) => Ok(answer?),
    }
}

/// A trial start: the org's trial, and its account when it has signed up.
struct StartAttempt<'a> {
    trial_stream: StreamName,
    account_stream: Option<StreamName>,
    signup_url: String,
    context: Context<'a>,
}

#[async_trait]
impl Attempt for StartAttempt<'_> {
    type Answer = Result<TrialState, DomainError>;
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<Self::Answer>, FlowError> {
        let account = match &self.account_stream {
            Some(account_stream) => Some(reads.load::<Account>(account_stream).await?),
            None => None,
        };
        let trial = reads.load::<Trial>(&self.trial_stream).await?;
        let started = decide_start(trial, account.as_ref(), &self.signup_url, &self.context)?;
        let mut decision = Decision::answer(started.answer)
            .append::<Trial>(self.trial_stream.clone(), &started.trial_events)?;
        if let Some(account_stream) = &self.account_stream {
            decision =
                decision.append::<Account>(account_stream.clone(), &started.account_events)?;
        }
        Ok(decision)
    }
}

/// What a trial start decided: the trial's events, the account's (it goes on the trial in the
/// same append, so its leases carry it), and the answer (a denial is recorded, then answered).
struct TrialStartDecision {
    trial_events: Vec<TrialEvent>,
    account_events: Vec<AccountEvent>,
    answer: Result<TrialState, DomainError>,
}

/// Decides a trial start over the org's trial and, when it has signed up, its account.
fn decide_start(
    trial: TrialState,
    account: Option<&AccountState>,
    signup_url: &str,
    context: &Context<'_>,
) -> Result<TrialStartDecision, DomainError> {
    let opened = account.and_then(|state| state.account.as_ref());
    let command = StartTrial {
        license_active: false,
        subscription_active: opened
            .and_then(|a| a.billing.as_ref())
            .is_some_and(|b| b.state.grants_paid()),
        signed_up: opened.is_some(),
        signup_url: signup_url.to_owned(),
    };
    let (trial_events, after) = decide_all::<Trial>(trial, &[command], context)?;
    let account_events = match (account, trial_events.first()) {
        (
            Some(account),
            Some(TrialEvent::TrialStarted {
                started_at,
                ends_at,
                ..
            }),
        ) if account.account.is_some() => {
            let grant = AccountCommand::GrantTrial {
                started_at: *started_at,
                ends_at: *ends_at,
            };
            decide_all::<Account>(account.clone(), &[grant], context)?.0
        }
        _ => Vec::new(),
    };
    let answer = match trial_events.iter().find_map(TrialEvent::denial) {
        Some(denial) => Err(denial),
        None => Ok(after),
    };
    Ok(TrialStartDecision {
        trial_events,
        account_events,
        answer,
    })
}

/// The answer a recorded trial start gave: its denial, or the trial as it stood right after.
async fn replayed(store: &dyn Store, outcome: &BatchOutcome) -> Result<TrialState, FlowError> {
    let appended = outcome.outcomes.first().ok_or(FlowError::Broken(
        "a recorded trial start wrote no trial event",
    ))?;
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
