//! Rules that fall due with time alone: a license's grace ends unpaid after 7 days and its
//! scheduled change applies at the period end; a hosted account's grace ends after 14 days
//! (cancelling its workspaces), and a workspace provisioning for 15 minutes or more fails.
//!
//! The deciders own every rule (each timed command decides nothing until it is due); this module
//! only finds candidates and asks. A sweep pages through the `licenses` and `accounts` read models,
//! decides each timed command on the document purely, and only where that yields events runs the
//! command for real — which reloads the stream, so a stale document or a concurrent sweep in
//! another process can never apply a rule twice. One stream's failure is logged and counted and
//! the sweep goes on. A sweep reads every license and account: O(records) per interval, which is
//! why the interval is minutes, not seconds.

use crate::engine::command::{handle, Command, CommandError};
use crate::engine::store::{Store, StoreError};
use aggregates::account::{Account, AccountCommand, AccountState, OpenAccount};
use aggregates::catalog::Catalog;
use aggregates::decider::{Context, Decider};
use aggregates::error::DomainError;
use aggregates::license::{IssuedLicense, License, LicenseCommand, LicenseState};
use aggregates::log::EventMetadata;
use chrono::{DateTime, Utc};
use projections::accounts::Accounts;
use projections::licenses::Licenses;
use projections::DocumentProjection;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::sync::watch;

/// Documents read per page of a sweep.
pub const SWEEP_PAGE: usize = 500;

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Licenses and accounts looked at.
    pub examined: usize,
    /// Timed commands that took effect.
    pub applied: usize,
    /// Timed commands that failed (logged; retried at the next sweep).
    pub failed: usize,
}

/// Applies every timed rule due at `now`.
pub async fn sweep(
    store: &dyn Store,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    sweep_read_model::<Licenses, License>(
        store,
        catalog,
        now,
        &[
            LicenseCommand::ExpireGrace,
            LicenseCommand::ApplyScheduledChange,
        ],
        |license: IssuedLicense| {
            (
                license.license_id.to_string(),
                LicenseState {
                    issued: Some(license),
                },
            )
        },
        &mut report,
    )
    .await?;
    sweep_read_model::<Accounts, Account>(
        store,
        catalog,
        now,
        &[
            AccountCommand::FailStuckProvisioning,
            AccountCommand::EnforceGrace,
        ],
        |account: OpenAccount| {
            (
                account.account_id.to_string(),
                AccountState {
                    account: Some(account),
                },
            )
        },
        &mut report,
    )
    .await?;
    Ok(report)
}

/// Sweeps one read model whose documents are the states of decider `D`'s streams.
async fn sweep_read_model<P, D>(
    store: &dyn Store,
    catalog: &Catalog,
    now: DateTime<Utc>,
    timed: &[D::Command],
    state_of: impl Fn(P::Document) -> (String, D::State),
    report: &mut SweepReport,
) -> Result<(), StoreError>
where
    P: DocumentProjection,
    P::Document: DeserializeOwned,
    D: Decider<Error = DomainError>,
    D::Command: std::fmt::Debug,
{
    let context = Context::new(now, catalog);
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_documents(P::NAME, after.as_deref(), SWEEP_PAGE)
            .await?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        for (key, body) in page {
            report.examined += 1;
            let document: P::Document = serde_json::from_value(body).map_err(|e| {
                StoreError::Invariant(format!("unreadable {} document {key:?}: {e}", P::NAME))
            })?;
            let (stream_id, state) = state_of(document);
            for command in timed {
                let due = D::decide(&state, command, &context).is_ok_and(|e| !e.is_empty());
                if !due {
                    continue;
                }
                match apply::<D>(store, &stream_id, command, &context).await {
                    Ok(true) => report.applied += 1,
                    Ok(false) => {}
                    Err(error) => {
                        report.failed += 1;
                        tracing::error!(stream_id, ?command, %error, "a timed rule failed; retrying at the next sweep");
                    }
                }
            }
        }
    }
}

/// Runs one timed command through the command handler; whether it took effect.
async fn apply<D: Decider<Error = DomainError>>(
    store: &dyn Store,
    stream_id: &str,
    command: &D::Command,
    context: &Context<'_>,
) -> Result<bool, CommandError<DomainError>> {
    let outcome = handle::<D>(
        store,
        Command {
            stream_id,
            command,
            context: Context::new(context.now, context.catalog),
            metadata: EventMetadata {
                actor: String::from("system:lifecycle"),
                causation_id: None,
                correlation_id: None,
                request_id: None,
                effective_at: context.now,
            },
            idempotency: None,
        },
    )
    .await?;
    Ok(!outcome.events.is_empty())
}

/// Sweeps every `interval` until `stopped` turns true. A failed sweep is logged and retried at
/// the next tick.
pub async fn sweep_periodically(
    store: std::sync::Arc<dyn Store>,
    catalog: std::sync::Arc<Catalog>,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    while !*stopped.borrow() {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.changed() => continue,
        }
        match sweep(store.as_ref(), &catalog, Utc::now()).await {
            Ok(report) if report.applied > 0 || report.failed > 0 => tracing::info!(
                examined = report.examined,
                applied = report.applied,
                failed = report.failed,
                "lifecycle sweep"
            ),
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "the lifecycle sweep failed; retrying at the next interval")
            }
        }
    }
}
