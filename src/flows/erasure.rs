//! The data-delete job: erases one person's personal data (the `erase` CLI command).
//!
//! In order: it records the erasure in the log (`erasure/<person id>`, before anything is
//! destroyed, so no erasure goes unrecorded), forgets the person in the portal (their user,
//! pending invitations and sessions: a later sign-in is a new user), destroys the person's data keys (crypto-shredding:
//! every value sealed under them now reads as erased, and the log is not rewritten, so every export
//! and seal still verifies), waits until every process has forgotten its cached keys, deletes the
//! stream snapshots, rebuilds every read model from the log, and deletes the snapshots once more
//! (a load that had read one before the first deletion may have saved another), so that no
//! snapshot or read model still holds the plaintext; last, it has the store rewrite its files,
//! so no deleted row lingers there. Running it again for the same person is
//! safe: it records the request again, destroys any key made since, and rebuilds.

use crate::engine::command::{handle, Command};
use crate::engine::personal_data::{PersonalDataStore, ERASURE_CHECK_INTERVAL};
use crate::engine::projection::runner::{Runner, RunnerConfig, RunnerError};
use crate::engine::projection::ProjectionFold;
use crate::engine::store::{EventStore, PersonKeyStore, Store};
use crate::flows::FlowError;
use crate::metrics::Metrics;
use aggregates::decider::Context;
use aggregates::erasure::{ErasePersonalData, PersonErasure};
use aggregates::ids::Email;
use aggregates::log::{EventMetadata, Position};
use aggregates::user::{User, UserCommand};
use std::sync::Arc;

/// What an erasure did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasureReport {
    /// The person erased.
    pub person_id: String,
    /// Where the erasure was recorded.
    pub position: Position,
    /// The data keys destroyed (none when an earlier run destroyed them all).
    pub keys_destroyed: Vec<String>,
    /// The stream snapshots deleted (all of them: they may hold the plaintext).
    pub snapshots_deleted: u64,
    /// The read models rebuilt, and how many events each refolded.
    pub rebuilt: Vec<(&'static str, u64)>,
}

/// Why an erasure did not finish. Whatever step failed, running it again completes it.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// Recording the erasure or destroying the keys failed.
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// Rebuilding a read model failed; the keys are destroyed already.
    #[error("the keys are destroyed, but rebuilding the read models failed")]
    Rebuild(#[from] RunnerError),
}

/// Progress of the rebuild: the read model, the position reached and the head.
pub type RebuildProgress<'a> = dyn FnMut(&'static str, Position, Position) + Send + 'a;

/// Erases `email`'s personal data for `reason`.
#[tracing::instrument(skip_all, fields(person_id = tracing::field::Empty))]
pub async fn erase(
    store: Arc<PersonalDataStore>,
    projections: &[Arc<dyn ProjectionFold>],
    metrics: Arc<Metrics>,
    email: &Email,
    reason: &str,
    metadata: EventMetadata,
    progress: &mut RebuildProgress<'_>,
) -> Result<ErasureReport, ErasureError> {
    let person_id = store.person_id(email.as_str());
    tracing::Span::current().record("person_id", person_id.as_str());
    let recorded = record_and_forget(store.as_ref(), &person_id, reason, metadata).await?;
    let keys_destroyed = store
        .erase_person_keys(&person_id)
        .await
        .map_err(FlowError::from)?;
    // Every other process forgets its cached keys within one check interval; after that no load
    // or fold anywhere can produce the plaintext again, so what is derived from it goes now.
    tokio::time::sleep(2 * ERASURE_CHECK_INTERVAL).await;
    let snapshots_deleted = store.delete_snapshots().await.map_err(FlowError::from)?;
    tracing::info!(%person_id, keys = keys_destroyed.len(), snapshots_deleted, "personal data erased; rebuilding read models");
    let store: Arc<dyn Store> = store;
    let rebuilt = rebuild_all(&store, projections, metrics, progress).await?;
    // A load that read a snapshot before the deletion above and folded on may have saved a new one.
    let snapshots_deleted =
        snapshots_deleted + store.delete_snapshots().await.map_err(FlowError::from)?;
    // Deleted rows can linger in the store's files (free pages, old log frames, old row
    // versions) until rewritten: rewrite them now.
    store.scrub_deleted_rows().await.map_err(FlowError::from)?;
    Ok(ErasureReport {
        person_id,
        position: recorded
            .appended
            .as_ref()
            .map_or(Position::START, |appended| appended.last_position()),
        keys_destroyed,
        snapshots_deleted,
        rebuilt,
    })
}

/// Records the erasure (before anything is destroyed, so none goes unrecorded) and forgets the
/// person in the portal: no user, no pending invitation, no session.
async fn record_and_forget(
    store: &PersonalDataStore,
    person_id: &str,
    reason: &str,
    metadata: EventMetadata,
) -> Result<crate::engine::command::CommandOutcome<aggregates::erasure::ErasureEvent>, FlowError> {
    let catalog = aggregates::catalog::Catalog::v1();
    let at = metadata.effective_at;
    let recorded = handle::<PersonErasure>(
        store,
        Command {
            stream_id: person_id,
            command: &ErasePersonalData {
                person_id: person_id.to_owned(),
                reason: reason.to_owned(),
            },
            context: Context::new(at, &catalog),
            metadata: metadata.clone(),
            idempotency: None,
        },
    )
    .await?;
    handle::<User>(
        store,
        Command {
            stream_id: person_id,
            command: &UserCommand::Forget,
            context: Context::new(at, &catalog),
            metadata,
            idempotency: None,
        },
    )
    .await?;
    Ok(recorded)
}

/// Rebuilds every read model from the log.
async fn rebuild_all(
    store: &Arc<dyn Store>,
    projections: &[Arc<dyn ProjectionFold>],
    metrics: Arc<Metrics>,
    progress: &mut RebuildProgress<'_>,
) -> Result<Vec<(&'static str, u64)>, ErasureError> {
    let mut rebuilt = Vec::with_capacity(projections.len());
    for fold in projections {
        let runner = Runner::new(
            Arc::clone(store),
            Arc::clone(fold),
            RunnerConfig::rebuild(),
            Arc::clone(&metrics),
        )
        .map_err(FlowError::from)?;
        let name = runner.name();
        let report = runner
            .rebuild(&mut |reached, head| progress(name, reached, head))
            .await?;
        rebuilt.push((name, report.events));
    }
    Ok(rebuilt)
}
