//! A sliding-window attempt limiter folded from events: at most `attempts_max` attempts in any
//! `window`. Used by trial starts (§8) and legacy exchanges (§5.4). The attempts it keeps are
//! bounded by `attempts_max`, so a stream's state never grows with abuse.

use chrono::{DateTime, Duration, Utc};

/// Recent attempts, oldest first, at most `attempts_max` of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlidingWindow {
    attempts: Vec<DateTime<Utc>>,
}

impl SlidingWindow {
    /// Records an attempt, forgetting the oldest beyond `attempts_max`.
    pub fn record(&mut self, at: DateTime<Utc>, attempts_max: usize) {
        self.attempts.push(at);
        if self.attempts.len() > attempts_max {
            let excess = self.attempts.len() - attempts_max;
            self.attempts.drain(..excess);
        }
    }

    /// `None` when another attempt is allowed at `now`; otherwise the seconds until the oldest
    /// attempt in the window leaves it (rounded up, at least 1).
    pub fn retry_after_seconds(
        &self,
        now: DateTime<Utc>,
        attempts_max: usize,
        window: Duration,
    ) -> Option<i64> {
        let in_window: Vec<_> = self
            .attempts
            .iter()
            .filter(|at| now - **at < window)
            .collect();
        if in_window.len() < attempts_max {
            return None;
        }
        let oldest = in_window.first().copied().copied()?;
        let remaining_ms = (oldest + window - now).num_milliseconds();
        Some(((remaining_ms + 999) / 1_000).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap() + Duration::seconds(seconds)
    }

    #[test]
    fn the_window_allows_attempts_max_then_says_when_the_oldest_leaves() {
        let window = Duration::seconds(900);
        let mut limiter = SlidingWindow::default();
        for n in 0..6 {
            assert_eq!(limiter.retry_after_seconds(at(n * 10), 6, window), None);
            limiter.record(at(n * 10), 6);
        }
        assert_eq!(limiter.retry_after_seconds(at(100), 6, window), Some(800));
        assert_eq!(limiter.retry_after_seconds(at(899), 6, window), Some(1));
        assert_eq!(
            limiter.retry_after_seconds(at(900), 6, window),
            None,
            "the oldest has left"
        );
    }

    #[test]
    fn a_fraction_of_a_second_rounds_up_and_the_answer_is_at_least_one() {
        let window = Duration::seconds(900);
        let mut limiter = SlidingWindow::default();
        limiter.record(at(0), 1);
        let almost = at(899) + Duration::milliseconds(999);
        assert_eq!(limiter.retry_after_seconds(almost, 1, window), Some(1));
        assert_eq!(
            limiter.retry_after_seconds(at(0) + Duration::milliseconds(500), 1, window),
            Some(900)
        );
    }

    #[test]
    fn only_attempts_max_attempts_are_kept() {
        let mut limiter = SlidingWindow::default();
        for n in 0..100 {
            limiter.record(at(n), 6);
        }
        assert_eq!(limiter.attempts.len(), 6);
        assert_eq!(limiter.attempts[0], at(94));
    }
}
