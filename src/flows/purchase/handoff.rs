//! Purchase handoffs (`DOMAIN.md` §6.1–6.2): an installation starts a purchase; the browser
//! resolves it.

use super::{Checkout, CreateHandoffRequest};
use crate::engine::command::{handle, Command, CommandError};
use crate::engine::store::{BatchOutcome, Idempotency, StoreError};
use crate::flows::FlowError;
use aggregates::decider::Decider;
use aggregates::handoff::{Handoff, HandoffCommand, PurchaseHandoff};
use aggregates::ids::{HandoffId, IntentId};
use aggregates::log::EventMetadata;
use rand::RngCore;

impl Checkout<'_> {
    /// Creates a handoff and its checkout intent; returns the handoff.
    #[tracing::instrument(skip_all, fields(handoff_id = tracing::field::Empty))]
    pub async fn create_handoff(
        &self,
        request: &CreateHandoffRequest,
        idempotency_key: Option<&str>,
        metadata: EventMetadata,
    ) -> Result<Handoff, FlowError> {
        let idempotency = idempotency_key.map(|key| Idempotency::scoped("handoff", key, request));
        // A retry answers the handoff the first request created: look the key up before a new
        // handoff id is drawn, or the retry would be another request.
        if let Some(idempotency) = &idempotency {
            if let Some(previous) = self.store.idempotent_outcome(idempotency).await? {
                return self.replayed_handoff(&previous).await;
            }
        }
        let handoff_id = HandoffId::from_entropy(rand::rngs::OsRng.next_u64());
        tracing::Span::current().record("handoff_id", handoff_id.as_str());
        let command = HandoffCommand::Create {
            handoff_id: handoff_id.clone(),
            intent_id: IntentId::from_entropy(rand::rngs::OsRng.next_u64()),
            feature: request.feature.clone(),
            success_url: request.success_url.clone(),
            cancel_url: request.cancel_url.clone(),
            purchase_return_jti: request.purchase_return_jti.clone(),
        };
        let outcome = handle::<PurchaseHandoff>(
            self.store,
            Command {
                stream_id: handoff_id.as_str(),
                command: &command,
                context: self.context(metadata.effective_at),
                idempotency: idempotency.clone(),
                metadata,
            },
        )
        .await;
        match outcome {
            Ok(outcome) => {
                let created = outcome.appended.ok_or_else(|| {
                    StoreError::Invariant(String::from("creating a handoff appended nothing"))
                })?;
                Ok(self
                    .handoff(&HandoffId::parse(created.stream.stream_id())?)
                    .await?
                    .0)
            }
            // A concurrent request with the same key won: answer what it created.
            Err(CommandError::Store(reused @ StoreError::IdempotencyKeyReused { .. })) => {
                let previous = match &idempotency {
                    Some(idempotency) => self.store.idempotent_outcome(idempotency).await?,
                    None => None,
                };
                match previous {
                    Some(previous) => self.replayed_handoff(&previous).await,
                    None => Err(reused.into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The handoff a recorded creation created.
    async fn replayed_handoff(&self, outcome: &BatchOutcome) -> Result<Handoff, FlowError> {
        let created = outcome
            .outcomes
            .iter()
            .find(|o| o.stream.stream_type() == PurchaseHandoff::STREAM_TYPE)
            .ok_or(StoreError::IdempotencyKeyReused {
                key: String::from("handoff"),
            })?;
        Ok(self
            .handoff(&HandoffId::parse(created.stream.stream_id())?)
            .await?
            .0)
    }

    /// The browser's lookup: stamps `resolved_at` on the first one, returns the handoff.
    #[tracing::instrument(skip_all, fields(handoff_id = %handoff_id))]
    pub async fn resolve_handoff(
        &self,
        handoff_id: &HandoffId,
        metadata: EventMetadata,
    ) -> Result<Handoff, FlowError> {
        handle::<PurchaseHandoff>(
            self.store,
            Command {
                stream_id: handoff_id.as_str(),
                command: &HandoffCommand::Resolve,
                context: self.context(metadata.effective_at),
                idempotency: None,
                metadata,
            },
        )
        .await?;
        Ok(self.handoff(handoff_id).await?.0)
    }
}
