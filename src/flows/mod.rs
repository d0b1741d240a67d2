//! The use cases, one module per capability, over the engine and the gateways: every transport
//! (the JSON API, the CLI) calls these. This module holds what they share: their one error type,
//! and the helpers that turn decided events into parts of an atomic append.

pub mod access;
pub mod activity;
pub mod billing;
pub mod billing_portal;
pub mod catalog;
pub mod erasure;
pub mod exchange;
pub mod hosted;
pub mod license_cache;
pub mod licensing;
pub mod lifecycle;
pub mod mail;
pub mod owned_licenses;
pub mod purchase;
pub mod queue;
pub mod recovery;
pub mod self_refund;
pub mod sign_in;
pub mod signup;
pub mod staff;
pub mod support;
pub mod trials;
pub mod workspaces;

use crate::crypto::signing::JwtError;
use crate::engine::command::{CommandError, COMMAND_ATTEMPTS_MAX};
use crate::engine::decision::RunError;
use crate::engine::store::StoreError;
use crate::gateways::stripe::StripeGatewayError;
use aggregates::decider::CodecError;
use aggregates::error::DomainError;
use aggregates::log::StreamName;

/// Why a service flow failed. The HTTP layer maps it in one place (`ApiError::flow`).
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The domain refused.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Loading or deciding failed.
    #[error(transparent)]
    Command(#[from] CommandError<DomainError>),
    /// An event did not fit the log's encoding.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Signing failed.
    #[error(transparent)]
    Jwt(#[from] JwtError),
    /// Stripe failed.
    #[error(transparent)]
    Stripe(#[from] StripeGatewayError),
    /// No license has this activation key.
    #[error("unknown activation key")]
    UnknownActivationKey,
    /// No installation has this token.
    #[error("unknown installation token")]
    UnknownInstallationToken,
    /// The staff token is malformed, unknown or revoked.
    #[error("unknown staff token")]
    UnknownStaffToken,
    /// A decider or the recorded log broke its own contract (a decision or a recorded outcome
    /// without the event it must hold): a bug, answered as an opaque internal error, never as a
    /// refusal the client could act on.
    #[error("contract broken: {0}")]
    Broken(&'static str),
    /// Every attempt met a concurrent writer.
    #[error("the record kept changing; gave up after {COMMAND_ATTEMPTS_MAX} attempts")]
    Contended,
}

impl FlowError {
    /// Whether the database could not be reached (worth stopping a batch of work for).
    pub fn is_unavailable(&self) -> bool {
        match self {
            FlowError::Store(store) => store.is_unavailable(),
            FlowError::Command(CommandError::Store(store)) => store.is_unavailable(),
            _ => false,
        }
    }
}

impl From<RunError> for FlowError {
    fn from(error: RunError) -> FlowError {
        match error {
            RunError::Store(store) => FlowError::Store(store),
            RunError::Contended { .. } => FlowError::Contended,
            not_loaded @ RunError::NotLoaded(_) => {
                FlowError::Store(StoreError::Invariant(not_loaded.to_string()))
            }
        }
    }
}

/// A stream name from an id that came from outside or from the log; a bad one is not found.
pub fn stream(stream_type: &str, id: &str) -> Result<StreamName, DomainError> {
    StreamName::parse(stream_type, id).map_err(|e| DomainError::invalid("id", e.to_string()))
}
