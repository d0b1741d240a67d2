//! Subscription lifecycle (`DOMAIN.md` §4): states, the valid-transition table, Stripe status
//! mapping, grace periods, and the out-of-order guard for Stripe snapshots.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Days of grace after a failed payment for a self-hosted license (§17).
pub const SELF_HOSTED_GRACE_DAYS: i64 = 7;
/// Days of grace after a failed payment for a hosted account (§4, §17).
pub const HOSTED_GRACE_DAYS: i64 = 14;

/// Where a subscription is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Trialing: paid capabilities until `trial_ends_at`.
    Trial,
    /// Paid and current.
    Active,
    /// Payment failed: paid capabilities, with a warning, until grace ends.
    Grace,
    /// Lapsed: no paid capabilities.
    Expired,
    /// Canceled: no paid capabilities.
    Canceled,
    /// Paused or locked: no paid capabilities.
    Suspended,
}

impl SubscriptionState {
    /// Every state, for tables and property tests.
    pub const ALL: [SubscriptionState; 6] = [
        SubscriptionState::Trial,
        SubscriptionState::Active,
        SubscriptionState::Grace,
        SubscriptionState::Expired,
        SubscriptionState::Canceled,
        SubscriptionState::Suspended,
    ];

    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Trial => "trial",
            SubscriptionState::Active => "active",
            SubscriptionState::Grace => "grace",
            SubscriptionState::Expired => "expired",
            SubscriptionState::Canceled => "canceled",
            SubscriptionState::Suspended => "suspended",
        }
    }

    /// Whether the state grants paid capabilities (trial, active, grace).
    pub fn grants_paid(self) -> bool {
        matches!(
            self,
            SubscriptionState::Trial | SubscriptionState::Active | SubscriptionState::Grace
        )
    }

    /// Whether `self → next` is in the table of §4. Staying in the same state is not a transition.
    pub fn can_become(self, next: SubscriptionState) -> bool {
        use SubscriptionState::*;
        matches!(
            (self, next),
            (Trial, Active | Expired)
                | (Active, Grace | Suspended | Canceled)
                | (Grace, Active | Expired | Canceled)
                | (Expired, Active)
                | (Suspended, Active | Expired)
        )
    }

    /// The `st` claim of a grant (§5.3): active→active, grace→grace, anything else→suspended.
    pub fn grant_status(self) -> &'static str {
        match self {
            SubscriptionState::Active => "active",
            SubscriptionState::Grace => "grace",
            _ => "suspended",
        }
    }

    /// Maps a Stripe subscription status (§4): `active`→active, `trialing`→trial,
    /// `past_due`/`unpaid`→grace, `canceled`→canceled, `paused`→suspended, `incomplete*` and anything
    /// unknown→expired.
    pub fn from_stripe_status(status: &str) -> SubscriptionState {
        match status.trim() {
            "active" => SubscriptionState::Active,
            "trialing" => SubscriptionState::Trial,
            "past_due" | "unpaid" => SubscriptionState::Grace,
            "canceled" => SubscriptionState::Canceled,
            "paused" => SubscriptionState::Suspended,
            _ => SubscriptionState::Expired,
        }
    }
}

/// When grace that started at `started_at` ends, given its length in days.
pub fn grace_ends_at(started_at: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    started_at + Duration::days(days)
}

/// The out-of-order guard (§9): a Stripe snapshot created before the newest one already applied
/// must not overwrite it. Equal timestamps are applied (Stripe's `created` has one-second
/// resolution; the event id keeps each effective once).
pub fn is_stale(incoming_created: DateTime<Utc>, newest_applied: Option<DateTime<Utc>>) -> bool {
    newest_applied.is_some_and(|newest| incoming_created < newest)
}
