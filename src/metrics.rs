//! Metrics in the Prometheus text format: what this process counted, and what the store says.
//!
//! Counters (batches, events, errors, leadership) are per process. Positions and lag are read from
//! the database at scrape time, so every process reports the same truth whichever one runs a
//! projection. Lag is counted in positions: on PostgreSQL a rolled-back append leaves a gap, so the
//! lag is an upper bound on the events still to fold.

use crate::engine::projection::ProjectionFold;
use crate::engine::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Clone, Copy, Default)]
struct ProjectionCounters {
    batches_total: u64,
    events_total: u64,
    errors_total: u64,
    leading: bool,
}

/// What became of the emails this process tried to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailOutcome {
    /// The mail server (or the outbox folder) took it.
    Delivered,
    /// An attempt failed; it will be retried.
    Failed,
    /// It will not be sent (expired, superseded, erased recipient, or out of attempts).
    Abandoned,
}

/// This process's counters.
#[derive(Default)]
pub struct Metrics {
    projections: Mutex<BTreeMap<&'static str, ProjectionCounters>>,
    mail: Mutex<[u64; 3]>,
}

impl Metrics {
    fn update(&self, projection: &'static str, change: impl FnOnce(&mut ProjectionCounters)) {
        let mut projections = self
            .projections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        change(projections.entry(projection).or_default());
    }

    /// Counts a committed batch of `events` events.
    pub fn record_batch(&self, projection: &'static str, events: usize) {
        self.update(projection, |c| {
            c.batches_total += 1;
            c.events_total += events as u64;
        });
    }

    /// Counts a failed batch.
    pub fn record_error(&self, projection: &'static str) {
        self.update(projection, |c| c.errors_total += 1);
    }

    /// Records whether this process runs the projection.
    pub fn set_leading(&self, projection: &'static str, leading: bool) {
        self.update(projection, |c| c.leading = leading);
    }

    /// Counts one delivery attempt's outcome.
    pub fn record_mail(&self, outcome: MailOutcome) {
        self.mail.lock().unwrap_or_else(PoisonError::into_inner)[outcome as usize] += 1;
    }

    /// The mail counter's samples, one per outcome.
    fn mail_samples(&self) -> Vec<(String, i64)> {
        let mail = *self.mail.lock().unwrap_or_else(PoisonError::into_inner);
        [
            ("delivered", MailOutcome::Delivered),
            ("failed", MailOutcome::Failed),
            ("abandoned", MailOutcome::Abandoned),
        ]
        .into_iter()
        .map(|(label, outcome)| {
            (
                format!("{{outcome=\"{label}\"}}"),
                mail[outcome as usize] as i64,
            )
        })
        .collect()
    }

    /// The lag of each projection's active generation, in positions behind the head.
    pub async fn lags(
        store: &dyn Store,
        folds: &[Arc<dyn ProjectionFold>],
    ) -> Result<(aggregates::log::Position, Vec<(&'static str, i64)>), StoreError> {
        let head = store.head_position().await?;
        let mut lags = Vec::with_capacity(folds.len());
        for fold in folds {
            let checkpoint =
                crate::engine::projection::active_checkpoint(store, fold.name()).await?;
            lags.push((fold.name(), (head.0 - checkpoint.0).max(0)));
        }
        Ok((head, lags))
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub async fn render(
        &self,
        store: &dyn Store,
        folds: &[Arc<dyn ProjectionFold>],
    ) -> Result<String, StoreError> {
        let (head, lags) = Metrics::lags(store, folds).await?;
        let counters = self
            .projections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut text = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, i64)>| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(text, "{name}{labels} {value}");
            }
        };
        let per_projection = |value: &dyn Fn(&str) -> i64| -> Vec<(String, i64)> {
            folds
                .iter()
                .map(|fold| {
                    (
                        format!("{{projection=\"{}\"}}", fold.name()),
                        value(fold.name()),
                    )
                })
                .collect()
        };
        let counter = |name: &str, pick: fn(&ProjectionCounters) -> u64| {
            counters.get(name).map_or(0, |c| pick(c) as i64)
        };
        family(
            "pulse_account_log_head_position",
            "gauge",
            "Position of the newest event readers may see.",
            vec![(String::new(), head.0)],
        );
        family(
            "pulse_account_projection_lag_positions",
            "gauge",
            "Positions between the log head and the projection's active checkpoint.",
            lags.iter()
                .map(|(name, lag)| (format!("{{projection=\"{name}\"}}"), *lag))
                .collect(),
        );
        family(
            "pulse_account_projection_batches_total",
            "counter",
            "Batches this process committed.",
            per_projection(&|name| counter(name, |c| c.batches_total)),
        );
        family(
            "pulse_account_projection_events_total",
            "counter",
            "Events this process folded.",
            per_projection(&|name| counter(name, |c| c.events_total)),
        );
        family(
            "pulse_account_projection_errors_total",
            "counter",
            "Batches that failed in this process.",
            per_projection(&|name| counter(name, |c| c.errors_total)),
        );
        family(
            "pulse_account_projection_leader",
            "gauge",
            "1 when this process runs the projection.",
            per_projection(&|name| i64::from(counters.get(name).is_some_and(|c| c.leading))),
        );
        family(
            "pulse_account_mail_total",
            "counter",
            "Email delivery attempts this process made, by outcome.",
            self.mail_samples(),
        );
        let appends = store.append_groups();
        family(
            "pulse_account_append_groups_total",
            "counter",
            "Groups of appends this process committed (group commit: one transaction each).",
            vec![(String::new(), appends.groups as i64)],
        );
        family(
            "pulse_account_appends_total",
            "counter",
            "Appends those groups held; divided by the groups, the mean group size.",
            vec![(String::new(), appends.appends as i64)],
        );
        Ok(text)
    }
}
