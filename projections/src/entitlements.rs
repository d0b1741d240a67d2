//! The entitlement payload of a self-hosted license (`DOMAIN.md` §14, with the continuity block of
//! §7): what a runtime or the portal reads. A pure function of the license and the catalog at an
//! instant; the service serves it for an installation, and the read model keeps it per license.

use aggregates::catalog::Catalog;
use aggregates::license::{ContinuityReport, IssuedLicense};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One limit and where usage stands against it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LimitView {
    /// The limit key (`max_monitored_systems`).
    pub key: String,
    /// The limit; `None` when unlimited or not granted.
    pub limit: Option<u32>,
    /// Usage now, when known.
    pub current: Option<u32>,
    /// `ok`, `warning` or `enforced`.
    pub state: &'static str,
}

/// The entitlement payload of §14.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entitlements {
    /// Capabilities granted now.
    pub capabilities: Vec<String>,
    /// Limits and usage.
    pub limits: Vec<LimitView>,
    /// The subscription state (`revoked` once revoked).
    pub subscription_state: String,
    /// The plan.
    pub plan_version: String,
    /// The plan's tier.
    pub tier: Option<String>,
    /// When a trial ends.
    pub trial_expires_at: Option<DateTime<Utc>>,
    /// Whole days of trial left, rounded up.
    pub trial_days_remaining: Option<i64>,
    /// Whether the license grants anything now.
    pub valid: bool,
    /// The owner.
    pub licensed_email: String,
    /// When the paid period ends.
    pub expires_at: Option<DateTime<Utc>>,
    /// Lifetime plans never expire.
    pub is_lifetime: bool,
    /// Whole days of the period left, rounded up.
    pub days_remaining: Option<i64>,
    /// Whether the license is in grace.
    pub in_grace_period: bool,
    /// When grace ends.
    pub grace_period_end: Option<DateTime<Utc>>,
    /// Days of history kept.
    pub max_history_days: u32,
    /// The grandfather-floor block of §7.
    pub continuity: ContinuityReport,
}

/// The limit state of §14: `ok` when unlimited; `enforced` at or over the limit; `warning` at
/// N−1 for limits 2 to 10, else from 90%.
pub fn limit_state(limit: Option<u32>, current: Option<u32>) -> &'static str {
    let (Some(limit), Some(current)) = (limit, current) else {
        return "ok";
    };
    if current >= limit {
        return "enforced";
    }
    let warns = if (2..=10).contains(&limit) {
        current + 1 >= limit
    } else {
        u64::from(current) * 10 >= u64::from(limit) * 9
    };
    if warns {
        "warning"
    } else {
        "ok"
    }
}

fn days_until(end: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    let seconds = (end - now).num_seconds().max(0);
    (seconds + 86_399) / 86_400
}

/// The entitlements of `license` at `now`, with `current` monitored systems if known.
pub fn license_entitlements(
    license: &IssuedLicense,
    catalog: &Catalog,
    now: DateTime<Utc>,
    current: Option<u32>,
) -> Entitlements {
    let granting = license.revoked.is_none() && license.state.grants_paid();
    let plan = Some(license.plan_version.as_str());
    let limit = license.paid_limit(catalog);
    let trial_end = (license.state == aggregates::subscription::SubscriptionState::Trial)
        .then_some(license.current_period_end)
        .flatten();
    Entitlements {
        capabilities: catalog.capabilities(plan, granting).into_iter().collect(),
        limits: vec![LimitView {
            key: String::from("max_monitored_systems"),
            limit,
            current,
            state: limit_state(limit, current),
        }],
        subscription_state: if license.revoked.is_some() {
            String::from("revoked")
        } else {
            license.state.as_str().to_owned()
        },
        plan_version: license.plan_version.clone(),
        tier: catalog.plan(&license.plan_version).map(|p| p.tier.clone()),
        trial_expires_at: trial_end,
        trial_days_remaining: trial_end.map(|end| days_until(end, now)),
        valid: granting,
        licensed_email: license.owner_email.to_string(),
        expires_at: license.current_period_end,
        is_lifetime: license.plan_version == "lifetime",
        days_remaining: license.current_period_end.map(|end| days_until(end, now)),
        in_grace_period: license.state == aggregates::subscription::SubscriptionState::Grace,
        grace_period_end: license.grace_until(),
        max_history_days: catalog.history_days(plan, granting),
        continuity: license.continuity(catalog),
    }
}

#[cfg(test)]
mod tests {
    use super::limit_state;

    #[test]
    fn the_limit_state_table_of_domain_md() {
        let table = [
            (None, Some(100), "ok"),
            (Some(5), Some(5), "enforced"),
            (Some(5), Some(7), "enforced"),
            (Some(5), Some(4), "warning"),
            (Some(5), Some(3), "ok"),
            (Some(10), Some(9), "warning"),
            (Some(15), Some(14), "warning"),
            (Some(15), Some(13), "ok"),
            (Some(400), Some(360), "warning"),
            (Some(400), Some(359), "ok"),
            (Some(1), Some(0), "ok"),
            (Some(15), None, "ok"),
        ];
        for (limit, current, state) in table {
            assert_eq!(limit_state(limit, current), state, "{limit:?} {current:?}");
        }
    }
}
