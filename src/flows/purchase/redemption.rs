//! The redemption record of a purchase (`DOMAIN.md` §6.6): begun, activated or failed.

use super::{parse_handoff_id, BeginRedemptionRequest, Checkout, EndRedemptionRequest};
use crate::engine::command::{handle, load, load_until, Command};
use crate::engine::store::Idempotency;
use crate::flows::{stream, FlowError};
use aggregates::decider::Decider;
use aggregates::error::DomainError;
use aggregates::ids::HandoffId;
use aggregates::index::CheckoutSessionIndex;
use aggregates::log::{EventMetadata, StreamName};
use aggregates::redemption::{Redemption, RedemptionCommand, RedemptionRecord};

impl Checkout<'_> {
    /// Runs a redemption command on the handoff's redemption record and returns the record.
    /// Decides a redemption command and answers with the record as that command left it, so a
    /// retry under the same `Idempotency-Key` gets the first answer even if the record moved on.
    async fn redemption(
        &self,
        handoff_id: &HandoffId,
        command: RedemptionCommand,
        idempotency: Option<Idempotency>,
        metadata: EventMetadata,
    ) -> Result<RedemptionRecord, FlowError> {
        let outcome = handle::<Redemption>(
            self.store,
            Command {
                stream_id: handoff_id.as_str(),
                command: &command,
                context: self.context(metadata.effective_at),
                metadata,
                idempotency,
            },
        )
        .await?;
        let (state, _) = load_until::<Redemption>(
            self.store,
            &stream(Redemption::STREAM_TYPE, handoff_id.as_str())?,
            outcome.stream_version,
        )
        .await?;
        state
            .record
            .ok_or(FlowError::Broken("a redemption decision left no record"))
    }

    /// Begins (or restarts) a redemption, following the decision table of §6.6.
    #[tracing::instrument(skip_all, fields(handoff_id = %request.portal_handoff_id))]
    pub async fn begin_redemption(
        &self,
        request: &BeginRedemptionRequest,
        idempotency_key: Option<&str>,
        metadata: EventMetadata,
    ) -> Result<RedemptionRecord, FlowError> {
        let handoff_id = parse_handoff_id(&request.portal_handoff_id)?;
        let session_handoff =
            match StreamName::parse(CheckoutSessionIndex::STREAM_TYPE, &request.session_id) {
                Ok(index) => {
                    load::<CheckoutSessionIndex>(self.store, &index)
                        .await?
                        .0
                        .handoff_id
                }
                Err(_) => None,
            };
        let command = RedemptionCommand::Begin {
            handoff_id: handoff_id.clone(),
            purchase_return_jti: request.purchase_return_jti.clone(),
            session_id: request.session_id.clone(),
            session_handoff,
        };
        let idempotency =
            idempotency_key.map(|key| Idempotency::scoped("redemption-begin", key, request));
        self.redemption(&handoff_id, command, idempotency, metadata)
            .await
    }

    /// Ends a redemption: activated when no failure is given, failed otherwise.
    #[tracing::instrument(skip_all, fields(handoff_id = %request.portal_handoff_id, activated))]
    pub async fn end_redemption(
        &self,
        request: &EndRedemptionRequest,
        activated: bool,
        idempotency_key: Option<&str>,
        metadata: EventMetadata,
    ) -> Result<RedemptionRecord, FlowError> {
        let handoff_id = parse_handoff_id(&request.portal_handoff_id)?;
        let purchase_return_jti = request.purchase_return_jti.clone();
        let command = if activated {
            RedemptionCommand::MarkActivated {
                purchase_return_jti,
                license_id: request.license_id.clone(),
            }
        } else {
            RedemptionCommand::MarkFailed {
                purchase_return_jti,
                failure_reason: request
                    .failure_reason
                    .clone()
                    .ok_or_else(|| DomainError::invalid("failure_reason", "is required"))?,
                failure_message: request
                    .failure_message
                    .clone()
                    .ok_or_else(|| DomainError::invalid("failure_message", "is required"))?,
            }
        };
        let idempotency = idempotency_key.map(|key| {
            let route = if activated {
                "redemption-activated"
            } else {
                "redemption-failed"
            };
            Idempotency::scoped(route, key, request)
        });
        self.redemption(&handoff_id, command, idempotency, metadata)
            .await
    }
}
