//! Trial starts (`DOMAIN.md` §8): once per org, rate-limited, denials recorded.
//!
//! The org is an account id when it has signed up; the ledger reads that account's billing to know
//! whether a subscription is already active. An org the ledger does not know is sent to sign up.
//! Which licenses belong to an org is not yet modelled, so `license_active` is only ever false here.

use crate::command::{decide_all, load};
use crate::flow::FlowError;
use crate::store::{AppendBatch, Store, StreamAppend};
use aggregates::account::Account;
use aggregates::catalog::Catalog;
use aggregates::decider::{encode, Context, Decider};
use aggregates::error::DomainError;
use aggregates::ids::AccountId;
use aggregates::log::{EventMetadata, StreamName};
use aggregates::trial::{StartTrial, Trial, TrialEvent, TrialState};

/// Starts the trial of `org_id`. A denial is recorded, then answered as its error.
pub async fn start_trial(
    store: &dyn Store,
    catalog: &Catalog,
    org_id: &str,
    signup_url: &str,
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
    let account = match AccountId::parse(org_id) {
        Ok(_) => {
            load::<Account>(
                store,
                &StreamName::parse(Account::STREAM_TYPE, org_id)
                    .expect("an account id is a stream id"),
            )
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
    let trial_stream = StreamName::parse(Trial::STREAM_TYPE, org_id)
        .map_err(|e| DomainError::invalid("org_id", e.to_string()))?;
    let (state, version) = load::<Trial>(store, &trial_stream).await?;
    let context = Context::new(metadata.effective_at, catalog);
    let (events, after) = decide_all::<Trial>(state, &[command], &context)?;
    let append = StreamAppend {
        stream: trial_stream,
        expected_version: version,
        events: events.iter().map(encode).collect::<Result<_, _>>()?,
    };
    store
        .append_batch(AppendBatch {
            appends: vec![append],
            metadata,
            idempotency: None,
        })
        .await?;
    match events.iter().find_map(TrialEvent::denial) {
        Some(denial) => Err(denial.into()),
        None => Ok(after),
    }
}
