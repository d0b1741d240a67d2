//! The legacy v5 exchange (`DOMAIN.md` §5.4): a v5 license token becomes a v6 license with
//! `legacy_migration = true`, on the grandfathered plan of its cadence.
//!
//! The service verifies the v5 JWT (IO and keys are its business) and passes the verdict; this
//! decider turns it into the outcome and records every failure. Outcomes decided elsewhere: 409
//! `MAX_INSTALLATIONS` by the license's activation, 409 conflict when concurrent attempts keep
//! colliding (the command handler's retries run out), 5xx when the store fails. One stream per
//! legacy license, so a repeated exchange lands on the same v6 license.

use crate::catalog::BillingCycle;
use crate::decider::{Context, Decider, DomainEvent};
use crate::error::DomainError;
use crate::ids::{Email, LicenseId};
use crate::limiter::SlidingWindow;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Exchange attempts allowed per legacy license in the window (§17: chosen, upstream is silent).
pub const EXCHANGE_ATTEMPTS_MAX: usize = 10;
/// The sliding window of the exchange limiter.
pub const EXCHANGE_WINDOW_SECONDS: i64 = 60 * 60;

/// What the service found when it verified a legacy token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LegacyTokenCheck {
    /// Not a 3-part dotted JWT, or required claims missing.
    Malformed,
    /// The signature does not verify, or the token is outside its lifetime.
    Invalid,
    /// A verified token and what it says.
    Verified(LegacyLicense),
}

/// The claims of a verified v5 license token, and what the legacy records say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyLicense {
    /// The v5 license id.
    pub legacy_license_id: String,
    /// Its owner.
    pub email: Email,
    /// Its cadence.
    pub billing_cycle: BillingCycle,
    /// Revoked in v5.
    pub revoked: bool,
    /// A renewal issued a newer key; this one is stale.
    pub renewed_key_available: bool,
    /// Whether v5 marks it migratable (lifetime or custom deals may not be).
    pub migratable: bool,
}

/// The exchange decider.
pub struct LegacyExchange;

/// A legacy license's exchange state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangeState {
    /// The v6 license it became.
    pub license_id: Option<LicenseId>,
    /// Recent attempts.
    pub attempts: SlidingWindow,
}

/// Exchange a legacy token.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeLegacyLicense {
    /// The verification verdict.
    pub check: LegacyTokenCheck,
    /// A fresh license id, used on the first success.
    pub new_license_id: LicenseId,
}

/// What happened to an exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum ExchangeEvent {
    /// The exchange succeeded.
    LegacyExchangeSucceeded {
        /// The v5 license.
        legacy_license_id: String,
        /// The v6 license it became.
        license_id: LicenseId,
        /// The grandfathered plan it keeps.
        plan_version: String,
        /// Its owner.
        email: Email,
        /// True the first time (the license must be issued).
        first: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// The exchange failed.
    LegacyExchangeFailed {
        /// The failure code.
        code: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl ExchangeEvent {
    /// The error a failure answers with; `None` for a success.
    pub fn failure(&self) -> Option<DomainError> {
        let ExchangeEvent::LegacyExchangeFailed { code, .. } = self else {
            return None;
        };
        Some(match code.as_str() {
            "exchange_malformed" => DomainError::ExchangeMalformed,
            "exchange_revoked" => DomainError::ExchangeRevoked,
            "RENEWED_KEY_AVAILABLE" => DomainError::RenewedKeyAvailable,
            "exchange_not_migratable" => DomainError::ExchangeNotMigratable,
            _ => DomainError::ExchangeInvalid,
        })
    }
}

impl DomainEvent for ExchangeEvent {}

fn failed(error: DomainError, at: DateTime<Utc>) -> Vec<ExchangeEvent> {
    vec![ExchangeEvent::LegacyExchangeFailed {
        code: error.code().to_owned(),
        at,
    }]
}

/// The grandfathered plan a v5 license keeps.
pub fn grandfathered_plan(cycle: BillingCycle) -> &'static str {
    match cycle {
        BillingCycle::Monthly => "v5_pro_monthly_grandfathered",
        BillingCycle::Annual => "v5_pro_annual_grandfathered",
    }
}

impl Decider for LegacyExchange {
    const STREAM_TYPE: &'static str = "legacy_exchange";
    type State = ExchangeState;
    type Command = ExchangeLegacyLicense;
    type Event = ExchangeEvent;
    type Error = DomainError;

    fn decide(
        state: &ExchangeState,
        command: &ExchangeLegacyLicense,
        context: &Context<'_>,
    ) -> Result<Vec<ExchangeEvent>, DomainError> {
        let now = context.now;
        let window = Duration::seconds(EXCHANGE_WINDOW_SECONDS);
        if let Some(retry_after_seconds) =
            state
                .attempts
                .retry_after_seconds(now, EXCHANGE_ATTEMPTS_MAX, window)
        {
            return Err(DomainError::ExchangeRateLimited {
                retry_after_seconds,
            });
        }
        let legacy = match &command.check {
            LegacyTokenCheck::Malformed => return Ok(failed(DomainError::ExchangeMalformed, now)),
            LegacyTokenCheck::Invalid => return Ok(failed(DomainError::ExchangeInvalid, now)),
            LegacyTokenCheck::Verified(legacy) => legacy,
        };
        let refusal = if legacy.revoked {
            Some(DomainError::ExchangeRevoked)
        } else if legacy.renewed_key_available {
            Some(DomainError::RenewedKeyAvailable)
        } else if !legacy.migratable {
            Some(DomainError::ExchangeNotMigratable)
        } else {
            None
        };
        if let Some(error) = refusal {
            return Ok(failed(error, now));
        }
        Ok(vec![ExchangeEvent::LegacyExchangeSucceeded {
            legacy_license_id: legacy.legacy_license_id.clone(),
            license_id: state
                .license_id
                .clone()
                .unwrap_or_else(|| command.new_license_id.clone()),
            plan_version: grandfathered_plan(legacy.billing_cycle).to_owned(),
            email: legacy.email.clone(),
            first: state.license_id.is_none(),
            at: now,
        }])
    }

    fn evolve(mut state: ExchangeState, event: &ExchangeEvent) -> ExchangeState {
        match event {
            ExchangeEvent::LegacyExchangeSucceeded { license_id, at, .. } => {
                state.license_id.get_or_insert_with(|| license_id.clone());
                state.attempts.record(*at, EXCHANGE_ATTEMPTS_MAX);
            }
            ExchangeEvent::LegacyExchangeFailed { at, .. } => {
                state.attempts.record(*at, EXCHANGE_ATTEMPTS_MAX)
            }
        }
        state
    }
}
