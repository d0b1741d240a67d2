//! Trials (`DOMAIN.md` §8): 14 days of Pro capabilities with `max_monitored_systems` 15, once per
//! org, with the start rate-limited to 6 attempts in a sliding 15 minutes.
//!
//! Denials are facts and are recorded (`trial_denied`), so they count as attempts; a rate-limited
//! attempt is refused without an event, so abuse cannot grow the stream. One stream per org.

use crate::decider::{Context, Decider, DomainEvent};
use crate::error::DomainError;
use crate::limiter::SlidingWindow;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Length of a trial.
pub const TRIAL_DAYS: i64 = 14;
/// The trial plan's key in the catalog (Pro capabilities, 15 monitored systems).
pub const TRIAL_PLAN: &str = "trial";
/// Start attempts allowed per org in the window.
pub const TRIAL_START_ATTEMPTS_MAX: usize = 6;
/// The sliding window of the start limiter.
pub const TRIAL_START_WINDOW_SECONDS: i64 = 15 * 60;

/// The trial decider.
pub struct Trial;

/// An org's trial state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrialState {
    /// When the trial started (once per org).
    pub trial_started_at: Option<DateTime<Utc>>,
    /// When it ends.
    pub trial_ends_at: Option<DateTime<Utc>>,
    /// Recent start attempts.
    pub attempts: SlidingWindow,
}

/// Start a trial.
#[derive(Clone, Debug, PartialEq)]
pub struct StartTrial {
    /// The org has an active license.
    pub license_active: bool,
    /// The org has an active subscription.
    pub subscription_active: bool,
    /// The org has completed signup (an eligible org that has not is sent to sign up).
    pub signed_up: bool,
    /// Where an eligible org signs up.
    pub signup_url: String,
}

/// What happened to an org's trial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum TrialEvent {
    /// The trial started.
    TrialStarted {
        /// When.
        started_at: DateTime<Utc>,
        /// When it ends.
        ends_at: DateTime<Utc>,
        /// The plan it grants.
        plan_version: String,
        /// The limit it grants.
        max_monitored_systems: u32,
    },
    /// A start was denied.
    TrialDenied {
        /// The denial code.
        code: String,
        /// The reason, for `trial_not_available`.
        reason: Option<String>,
        /// Where to sign up, for `trial_signup_required`.
        action_url: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
}

impl TrialEvent {
    /// The error a denial answers with; `None` for a started trial.
    pub fn denial(&self) -> Option<DomainError> {
        let TrialEvent::TrialDenied {
            code,
            reason,
            action_url,
            ..
        } = self
        else {
            return None;
        };
        Some(match (code.as_str(), reason.as_deref()) {
            ("trial_already_used", _) => DomainError::TrialAlreadyUsed,
            ("trial_not_available", Some("license_active")) => DomainError::TrialNotAvailable {
                reason: "license_active",
            },
            ("trial_not_available", _) => DomainError::TrialNotAvailable {
                reason: "subscription_active",
            },
            _ => DomainError::TrialSignupRequired {
                action_url: action_url.clone().unwrap_or_default(),
            },
        })
    }
}

impl DomainEvent for TrialEvent {}

fn denied(
    code: &str,
    reason: Option<&str>,
    action_url: Option<&str>,
    at: DateTime<Utc>,
) -> Vec<TrialEvent> {
    vec![TrialEvent::TrialDenied {
        code: code.to_owned(),
        reason: reason.map(str::to_owned),
        action_url: action_url.map(str::to_owned),
        at,
    }]
}

impl Decider for Trial {
    const STREAM_TYPE: &'static str = "trial";
    type State = TrialState;
    type Command = StartTrial;
    type Event = TrialEvent;
    type Error = DomainError;

    fn decide(
        state: &TrialState,
        command: &StartTrial,
        context: &Context<'_>,
    ) -> Result<Vec<TrialEvent>, DomainError> {
        let now = context.now;
        let window = Duration::seconds(TRIAL_START_WINDOW_SECONDS);
        if let Some(retry_after_seconds) =
            state
                .attempts
                .retry_after_seconds(now, TRIAL_START_ATTEMPTS_MAX, window)
        {
            return Err(DomainError::TrialRateLimited {
                retry_after_seconds,
            });
        }
        if state.trial_started_at.is_some() {
            return Ok(denied("trial_already_used", None, None, now));
        }
        if command.license_active {
            return Ok(denied(
                "trial_not_available",
                Some("license_active"),
                None,
                now,
            ));
        }
        if command.subscription_active {
            return Ok(denied(
                "trial_not_available",
                Some("subscription_active"),
                None,
                now,
            ));
        }
        if !command.signed_up {
            return Ok(denied(
                "trial_signup_required",
                None,
                Some(&command.signup_url),
                now,
            ));
        }
        Ok(vec![TrialEvent::TrialStarted {
            started_at: now,
            ends_at: now + Duration::days(TRIAL_DAYS),
            plan_version: String::from(TRIAL_PLAN),
            max_monitored_systems: context.catalog.max_monitored_systems(Some(TRIAL_PLAN)),
        }])
    }

    fn evolve(mut state: TrialState, event: &TrialEvent) -> TrialState {
        match event {
            TrialEvent::TrialStarted {
                started_at,
                ends_at,
                ..
            } => {
                state.trial_started_at = Some(*started_at);
                state.trial_ends_at = Some(*ends_at);
                state.attempts.record(*started_at, TRIAL_START_ATTEMPTS_MAX);
            }
            TrialEvent::TrialDenied { at, .. } => {
                state.attempts.record(*at, TRIAL_START_ATTEMPTS_MAX)
            }
        }
        state
    }
}
