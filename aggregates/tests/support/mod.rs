//! Given/when/then for deciders: `given(events).at(now).when(command).then(events)` or
//! `.then_err(error)`. Failures point at the test line (`#[track_caller]`).

#![allow(dead_code, unreachable_pub)]

use aggregates::catalog::Catalog;
use aggregates::decider::{Context, Decider};
use chrono::{DateTime, Duration, TimeZone, Utc};
use std::fmt::Debug;
use std::sync::LazyLock;

/// Catalog v1, parsed once for all tests.
pub static CATALOG: LazyLock<Catalog> = LazyLock::new(Catalog::v1);

/// A fixed instant tests start from: 2026-04-01T12:00:00Z.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 1, 12, 0, 0).unwrap()
}

/// `t0` plus some seconds.
pub fn at(seconds: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(seconds)
}

/// The past a scenario starts from.
pub struct Given<D: Decider> {
    events: Vec<D::Event>,
    now: DateTime<Utc>,
}

/// Starts a scenario from these past events.
pub fn given<D: Decider>(events: Vec<D::Event>) -> Given<D> {
    Given { events, now: t0() }
}

/// The scenario with its command.
pub struct When<D: Decider> {
    state: D::State,
    result: Result<Vec<D::Event>, D::Error>,
}

impl<D: Decider> Given<D> {
    /// Decides at this instant instead of `t0`.
    pub fn at(mut self, now: DateTime<Utc>) -> Given<D> {
        self.now = now;
        self
    }

    /// The state the past events fold into.
    pub fn state(&self) -> D::State {
        self.events.iter().fold(D::State::default(), D::evolve)
    }

    /// Decides the command.
    pub fn when(self, command: D::Command) -> When<D> {
        let state = self.state();
        let result = D::decide(&state, &command, &Context::new(self.now, &CATALOG));
        When { state, result }
    }
}

impl<D: Decider> When<D>
where
    D::Event: Debug + PartialEq,
    D::Error: Debug + PartialEq,
{
    /// Asserts exactly these events were decided, and returns the state after them.
    #[track_caller]
    pub fn then(self, expected: Vec<D::Event>) -> D::State {
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "decided events differ");
                events.iter().fold(self.state, D::evolve)
            }
            Err(error) => panic!("expected events {expected:?}, got error {error:?}"),
        }
    }

    /// Asserts the command was refused with this error.
    #[track_caller]
    pub fn then_err(self, expected: D::Error) {
        match self.result {
            Ok(events) => panic!("expected error {expected:?}, got events {events:?}"),
            Err(error) => assert_eq!(error, expected),
        }
    }

    /// The raw result, for assertions on parts of the events.
    pub fn result(self) -> Result<Vec<D::Event>, D::Error> {
        self.result
    }
}
