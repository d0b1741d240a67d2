//! The closed set of reasons the domain refuses a command, each with its stable `code`.
//!
//! Codes named in `DOMAIN.md` are used exactly as written there (`MAX_INSTALLATIONS`,
//! `trial_rate_limited`, `workspace_limit_reached`, …). Where `DOMAIN.md` names an outcome but not
//! its code (an invalid legacy token, a refused transition), the code chosen here is listed in
//! `README.md` and is equally a contract. How a code becomes an HTTP status is the service's
//! business; this enum only says *why*.

use std::fmt;

/// Why a command was refused. Every variant maps to exactly one code (see [`DomainError::code`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainError {
    /// The input breaks a documented shape or rule; `field` names it.
    InvalidInput {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it, for a human.
        reason: String,
    },
    /// The plan key is not in the catalog in force.
    UnknownPlan {
        /// The plan key as given.
        plan: String,
    },
    /// The plan exists but cannot be bought (grandfathered or continuity-only).
    PlanNotPurchasable {
        /// The plan key.
        plan: String,
    },
    /// The stream does not exist yet (nothing was issued, opened or created).
    NotFound {
        /// What was looked for, e.g. `license`.
        entity: &'static str,
    },
    /// The stream already exists and the command would create it again.
    AlreadyExists {
        /// What exists, e.g. `license`.
        entity: &'static str,
    },
    /// A subscription-state transition outside the table of `DOMAIN.md` §4.
    InvalidTransition {
        /// The current state.
        from: &'static str,
        /// The refused target.
        to: &'static str,
    },
    /// A fourth concurrent installation of one license.
    MaxInstallations {
        /// Active installations now.
        current: usize,
        /// The cap.
        limit: usize,
    },
    /// The installation token presented is not the current one.
    TokenRevoked,
    /// The installation was deactivated.
    InstallationRevoked,
    /// The license was revoked (refund, dispute) or is otherwise dead.
    LicenseRevoked,
    /// The license is suspended.
    LicenseSuspended,
    /// The grandfather floor applies only to licenses migrated from v5.
    FloorNotApplicable,
    /// A completed handoff cannot start another checkout.
    HandoffCompleted,
    /// The handoff's hour has passed.
    HandoffExpired,
    /// The checkout session is not one this handoff started.
    UnknownCheckoutSession,
    /// Redemption: the key or session belongs to another redemption.
    RedemptionConflict,
    /// Redemption: the same key started less than 30 seconds ago.
    RedemptionInProgress,
    /// Redemption: the key was already activated (terminal).
    RedemptionAlreadyActivated,
    /// Legacy exchange: the token is not a 3-part JWT with the required claims.
    ExchangeMalformed,
    /// Legacy exchange: a renewed key exists; the stale one cannot be exchanged.
    RenewedKeyAvailable,
    /// Legacy exchange: the token's signature or lifetime is invalid.
    ExchangeInvalid,
    /// Legacy exchange: the legacy license was revoked.
    ExchangeRevoked,
    /// Legacy exchange: this legacy license cannot be migrated.
    ExchangeNotMigratable,
    /// Legacy exchange: too many attempts for this legacy license.
    ExchangeRateLimited {
        /// Seconds until the next attempt may be made.
        retry_after_seconds: i64,
    },
    /// Trial: too many start attempts in the sliding window.
    TrialRateLimited {
        /// Seconds until the oldest attempt leaves the window (at least 1).
        retry_after_seconds: i64,
    },
    /// Trial: the org must sign up first.
    TrialSignupRequired {
        /// Where to sign up.
        action_url: String,
    },
    /// Trial: a license or subscription is already active.
    TrialNotAvailable {
        /// `license_active` or `subscription_active`.
        reason: &'static str,
    },
    /// Trial: the org used its trial.
    TrialAlreadyUsed,
    /// Workspaces: the account has no billing record.
    NoBillingRecord,
    /// Workspaces: the account's subscription is canceled.
    SubscriptionCanceled,
    /// Workspaces: the plan's workspace cap is reached.
    WorkspaceLimitReached {
        /// Workspaces that count now.
        current: usize,
        /// The plan's cap.
        limit: usize,
    },
    /// Access: the actor's role does not allow this.
    Forbidden {
        /// What the actor tried.
        action: &'static str,
    },
    /// Access: only an Owner grants or touches owner rows.
    OwnerRequired,
    /// Access: the last owner cannot be demoted or removed.
    LastOwner,
    /// Access: the email is already a member.
    AlreadyMember,
    /// Hosted lease: unknown refresh token, or a host other than the tenant's.
    LeaseTokenInvalid,
    /// Hosted lease: the token is valid but no lease can be issued now.
    LeaseUnavailable {
        /// `tenant_inactive`, `non_granting_state`, `revoked` or `trial_over`.
        reason: &'static str,
    },
    /// Sign-in: the link or code is unknown, used, expired or has had too many wrong tries.
    InvalidToken,
    /// Workspaces: only a running workspace whose runtime has reported its host can be opened.
    WorkspaceNotReady {
        /// The workspace's state.
        state: &'static str,
    },
    /// Self-refund: this license cannot be refunded by its owner.
    RefundNotEligible {
        /// Why not.
        reason: crate::self_refund::RefundRefusal,
    },
    /// Self-refund: a refund of this license is being made right now.
    RefundInProgress,
    /// A catalog version must be newer than every published one.
    CatalogVersionNotNewer {
        /// The newest published version.
        latest: u32,
    },
}

impl DomainError {
    /// The stable code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::InvalidInput { .. } => "invalid_request",
            DomainError::UnknownPlan { .. } => "unknown_plan",
            DomainError::PlanNotPurchasable { .. } => "plan_not_purchasable",
            DomainError::NotFound { .. } => "not_found",
            DomainError::AlreadyExists { .. } => "already_exists",
            DomainError::InvalidTransition { .. } => "invalid_transition",
            DomainError::MaxInstallations { .. } => "MAX_INSTALLATIONS",
            DomainError::TokenRevoked => "TOKEN_REVOKED",
            DomainError::InstallationRevoked => "INSTALLATION_REVOKED",
            DomainError::LicenseRevoked => "LICENSE_REVOKED",
            DomainError::LicenseSuspended => "LICENSE_SUSPENDED",
            DomainError::FloorNotApplicable => "floor_not_applicable",
            DomainError::HandoffCompleted => "handoff_completed",
            DomainError::HandoffExpired => "handoff_expired",
            DomainError::UnknownCheckoutSession => "unknown_checkout_session",
            DomainError::RedemptionConflict => "conflict",
            DomainError::RedemptionInProgress => "in_progress",
            DomainError::RedemptionAlreadyActivated => "already_activated",
            DomainError::ExchangeMalformed => "exchange_malformed",
            DomainError::RenewedKeyAvailable => "RENEWED_KEY_AVAILABLE",
            DomainError::ExchangeInvalid => "exchange_invalid",
            DomainError::ExchangeRevoked => "exchange_revoked",
            DomainError::ExchangeNotMigratable => "exchange_not_migratable",
            DomainError::ExchangeRateLimited { .. } => "exchange_rate_limited",
            DomainError::TrialRateLimited { .. } => "trial_rate_limited",
            DomainError::TrialSignupRequired { .. } => "trial_signup_required",
            DomainError::TrialNotAvailable { .. } => "trial_not_available",
            DomainError::TrialAlreadyUsed => "trial_already_used",
            DomainError::NoBillingRecord => "no_billing_record",
            DomainError::SubscriptionCanceled => "subscription_canceled",
            DomainError::WorkspaceLimitReached { .. } => "workspace_limit_reached",
            DomainError::Forbidden { .. } => "forbidden",
            DomainError::OwnerRequired => "owner_required",
            DomainError::LastOwner => "last_owner",
            DomainError::AlreadyMember => "already_member",
            DomainError::LeaseTokenInvalid => "lease_token_invalid",
            DomainError::LeaseUnavailable { .. } => "lease_unavailable",
            DomainError::CatalogVersionNotNewer { .. } => "catalog_version_not_newer",
            DomainError::InvalidToken => "invalid_token",
            DomainError::WorkspaceNotReady { .. } => "workspace_not_ready",
            DomainError::RefundNotEligible { .. } => "refund_not_eligible",
            DomainError::RefundInProgress => "refund_in_progress",
        }
    }

    /// Shorthand for [`DomainError::InvalidInput`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> DomainError {
        DomainError::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainError::InvalidInput { field, reason } => write!(f, "{field}: {reason}"),
            DomainError::UnknownPlan { plan } => write!(f, "plan {plan:?} is not in the catalog"),
            DomainError::PlanNotPurchasable { plan } => write!(f, "plan {plan:?} cannot be bought"),
            DomainError::NotFound { entity } => write!(f, "no such {entity}"),
            DomainError::AlreadyExists { entity } => write!(f, "the {entity} already exists"),
            DomainError::InvalidTransition { from, to } => write!(f, "{from} cannot become {to}"),
            DomainError::MaxInstallations { current, limit } => {
                write!(f, "{current} of {limit} installations are active")
            }
            DomainError::WorkspaceLimitReached { current, limit } => {
                write!(f, "{current} of {limit} workspaces are in use")
            }
            DomainError::ExchangeRateLimited {
                retry_after_seconds,
            }
            | DomainError::TrialRateLimited {
                retry_after_seconds,
            } => {
                write!(f, "too many attempts; retry in {retry_after_seconds} s")
            }
            DomainError::TrialNotAvailable { reason } => write!(f, "no trial: {reason}"),
            DomainError::Forbidden { action } => write!(f, "your role does not allow: {action}"),
            DomainError::CatalogVersionNotNewer { latest } => {
                write!(f, "catalog version {latest} or newer is already published")
            }
            DomainError::WorkspaceNotReady { state } => {
                write!(f, "the workspace is {state}: it opens once it runs")
            }
            DomainError::RefundNotEligible { reason } => {
                write!(f, "this license cannot be refunded: {}", reason.explain())
            }
            DomainError::RefundInProgress => f.write_str(
                "a refund of this license is being made; ask again in a minute to see its outcome",
            ),
            DomainError::InvalidToken => f.write_str(
                "the sign-in link or code is not valid: it was used, it expired, or a newer one was sent",
            ),
            other => f.write_str(other.code()),
        }
    }
}

impl std::error::Error for DomainError {}

#[cfg(test)]
mod tests {
    use super::DomainError::{self, *};
    use std::collections::BTreeSet;

    /// One value of every variant: adding a variant without a distinct code fails here.
    fn every_variant() -> Vec<DomainError> {
        vec![
            InvalidInput {
                field: "f",
                reason: String::new(),
            },
            UnknownPlan {
                plan: String::new(),
            },
            PlanNotPurchasable {
                plan: String::new(),
            },
            NotFound { entity: "e" },
            AlreadyExists { entity: "e" },
            InvalidTransition { from: "a", to: "b" },
            MaxInstallations {
                current: 3,
                limit: 3,
            },
            TokenRevoked,
            InstallationRevoked,
            LicenseRevoked,
            LicenseSuspended,
            FloorNotApplicable,
            HandoffCompleted,
            HandoffExpired,
            UnknownCheckoutSession,
            RedemptionConflict,
            RedemptionInProgress,
            RedemptionAlreadyActivated,
            ExchangeMalformed,
            RenewedKeyAvailable,
            ExchangeInvalid,
            ExchangeRevoked,
            ExchangeNotMigratable,
            ExchangeRateLimited {
                retry_after_seconds: 1,
            },
            TrialRateLimited {
                retry_after_seconds: 1,
            },
            TrialSignupRequired {
                action_url: String::new(),
            },
            TrialNotAvailable {
                reason: "license_active",
            },
            TrialAlreadyUsed,
            NoBillingRecord,
            SubscriptionCanceled,
            WorkspaceLimitReached {
                current: 1,
                limit: 1,
            },
            Forbidden { action: "a" },
            OwnerRequired,
            LastOwner,
            AlreadyMember,
            LeaseTokenInvalid,
            LeaseUnavailable {
                reason: "tenant_inactive",
            },
            CatalogVersionNotNewer { latest: 1 },
            InvalidToken,
            WorkspaceNotReady {
                state: "provisioning",
            },
            RefundNotEligible {
                reason: crate::self_refund::RefundRefusal::NotPaid,
            },
            RefundInProgress,
        ]
    }

    #[test]
    fn every_variant_has_its_own_code() {
        let variants = every_variant();
        let codes: BTreeSet<_> = variants.iter().map(DomainError::code).collect();
        assert_eq!(codes.len(), variants.len());
    }

    #[test]
    fn the_codes_named_in_domain_md_are_used_exactly() {
        let codes: BTreeSet<_> = every_variant().iter().map(DomainError::code).collect();
        for code in [
            "MAX_INSTALLATIONS",
            "TOKEN_REVOKED",
            "INSTALLATION_REVOKED",
            "LICENSE_REVOKED",
            "LICENSE_SUSPENDED",
            "exchange_malformed",
            "RENEWED_KEY_AVAILABLE",
            "trial_rate_limited",
            "trial_signup_required",
            "trial_not_available",
            "trial_already_used",
            "no_billing_record",
            "subscription_canceled",
            "workspace_limit_reached",
            "conflict",
            "already_activated",
            "in_progress",
        ] {
            assert!(codes.contains(code), "{code}");
        }
    }
}
