//! Request limits per client address, kept in this process's memory: the sign-in request's 20 a
//! minute per IP (`../shared/design/PORTAL.md` §2). Several processes each count on their own, so
//! behind a load balancer over `n` processes a client may make up to `n` times the limit; the
//! per-email limit, which protects the mailbox, comes from the log and holds across processes.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Clients remembered at once; when full, those with no request in the window are forgotten, and
/// if all are recent the oldest half goes (a flood of addresses cannot grow memory).
pub const CLIENTS_TRACKED_MAX: usize = 10_000;

/// At most `requests_max` requests per client in any `window`.
pub struct ClientLimit {
    requests_max: usize,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl ClientLimit {
    /// A limit of `requests_max` requests per `window`.
    pub fn new(requests_max: usize, window: Duration) -> ClientLimit {
        ClientLimit {
            requests_max,
            window,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `client` at `now`; `Err(seconds)` when it is over the limit, with the
    /// seconds until its oldest request leaves the window (at least 1). A refused request is not
    /// counted.
    pub fn admit(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if clients.len() >= CLIENTS_TRACKED_MAX && !clients.contains_key(&client) {
            self.forget_idle(&mut clients, now);
        }
        let recent = clients.entry(client).or_default();
        while recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= self.window)
        {
            recent.pop_front();
        }
        if recent.len() >= self.requests_max {
            let oldest = *recent.front().expect("a full window has an oldest request");
            let wait = self.window.saturating_sub(now.duration_since(oldest));
            return Err(wait.as_secs_f64().ceil().max(1.0) as u64);
        }
        recent.push_back(now);
        Ok(())
    }

    fn forget_idle(&self, clients: &mut HashMap<IpAddr, VecDeque<Instant>>, now: Instant) {
        clients.retain(|_, recent| {
            recent
                .back()
                .is_some_and(|at| now.duration_since(*at) < self.window)
        });
        if clients.len() >= CLIENTS_TRACKED_MAX {
            let mut newest: Vec<(IpAddr, Instant)> = clients
                .iter()
                .filter_map(|(ip, recent)| recent.back().map(|at| (*ip, *at)))
                .collect();
            newest.sort_by_key(|(_, at)| *at);
            for (ip, _) in newest.iter().take(newest.len() / 2) {
                clients.remove(ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_admits_requests_max_then_says_when_to_retry() {
        let limit = ClientLimit::new(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let start = Instant::now();
        for n in 0..3 {
            assert_eq!(limit.admit(ip, start + Duration::from_secs(n)), Ok(()));
        }
        assert_eq!(limit.admit(ip, start + Duration::from_secs(10)), Err(50));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(limit.admit(other, start + Duration::from_secs(10)), Ok(()));
        assert_eq!(limit.admit(ip, start + Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn a_flood_of_addresses_never_grows_past_the_bound() {
        let limit = ClientLimit::new(1, Duration::from_secs(60));
        let now = Instant::now();
        for n in 0..(CLIENTS_TRACKED_MAX as u32 + 50) {
            let ip = IpAddr::from(n.to_be_bytes());
            assert_eq!(limit.admit(ip, now), Ok(()));
        }
        assert!(limit.clients.lock().unwrap().len() <= CLIENTS_TRACKED_MAX);
    }
}
