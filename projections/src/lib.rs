//! Read models of Pulse Account as pure folds over recorded events.
//!
//! A projection here is a [`DocumentProjection`]: for each event it names the documents the event
//! touches and folds the event into each of them. It knows nothing of storage, batching, checkpoints
//! or wake-ups; the service's projection runner owns those, and writes each batch's documents
//! together with the checkpoint in one transaction. Because every fold is pure and deterministic, a
//! rebuild from position 0 must reproduce the same documents, which the tests check.

pub mod account_home;
pub mod accounts;
pub mod entitlements;
pub mod licenses;
pub mod mail_outbox;
pub mod replay;
pub mod stream_index;
pub mod subject_streams;
pub mod tenant_work;

use aggregates::log::RecordedEvent;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;

/// A read model made of keyed JSON documents, folded event by event.
pub trait DocumentProjection: Send + Sync + 'static {
    /// The projection's stable name, used for its checkpoint, its metrics and the CLI.
    const NAME: &'static str;
    /// One document of the read model.
    type Document: Serialize + DeserializeOwned + Clone + PartialEq + Send;

    /// The keys of the documents `event` changes; empty when it changes none.
    fn document_keys(event: &RecordedEvent) -> Vec<String>;

    /// Folds `event` into the document stored under `key` (`None` when there is none yet).
    /// Returning `Ok(None)` deletes the document. An error stops the runner at this event: the
    /// batch is not written and the event is retried, never skipped.
    fn apply(
        key: &str,
        document: Option<Self::Document>,
        event: &RecordedEvent,
    ) -> Result<Option<Self::Document>, FoldError>;
}

/// A fold that cannot apply an event (for example a payload it cannot read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldError {
    /// What went wrong, for the operator.
    pub reason: String,
}

impl FoldError {
    /// A fold error with a reason.
    pub fn new(reason: impl Into<String>) -> FoldError {
        FoldError {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FoldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for FoldError {}
