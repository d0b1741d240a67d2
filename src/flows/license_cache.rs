//! Licenses in memory, for the reads an installation makes all day (`GET /v1/entitlements`,
//! `POST /v1/grants/status`): each process keeps the licenses it was asked about, folded with the
//! license decider's own `evolve`, and follows the log to keep them current.
//!
//! How current an answer is: the cache answers only when it has applied every event up to the
//! newest position this process knows of — its own appends, and (PostgreSQL) every other
//! process's, heard through the store's notifications — and, when the client sent
//! `x-min-log-position`, up to that position too; else the read goes to the database as before.
//! So an answer is never behind a write of this process or a position the client names; it can be
//! behind another process's write only by the time the notification takes to arrive (SQLite, which
//! has no notifications: by the follower's poll, [`FOLLOW_POLL`]).
//!
//! A license enters on its first read: loaded from the store with its stream version, then the
//! stream is read past that version once more, so an event the follower passed while the license
//! was loading is not missed; the follower applies each later event whose stream version is the
//! next one (and drops a license whose next event it cannot place). An erasure (a
//! `personal_data_erased` event) empties the cache, and again once every process has forgotten
//! the erased keys, so no erased email is answered from memory.

use crate::engine::command::load;
use crate::engine::personal_data::ERASURE_CHECK_INTERVAL;
use crate::engine::store::{Store, StoreError, READ_PAGE_MAX};
use crate::flows::{stream, FlowError};
use aggregates::decider::{decode, Decider};
use aggregates::ids::LicenseId;
use aggregates::license::{IssuedLicense, License, LicenseEvent, LicenseState};
use aggregates::log::{Position, RecordedEvent, StreamVersion};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// Licenses held at most; past it the cache starts over (each is refolded on its next read).
pub const LICENSE_CACHE_MAX: usize = 100_000;
/// How often the follower reads the log when no notification woke it.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

struct Cached {
    state: LicenseState,
    version: StreamVersion,
    /// The issued license of `state`, shared with the reads (copied once per event, not per read).
    issued: Option<Arc<IssuedLicense>>,
}

impl Cached {
    fn new(state: LicenseState, version: StreamVersion) -> Cached {
        let issued = state.issued.clone().map(Arc::new);
        Cached {
            state,
            version,
            issued,
        }
    }
}

/// The licenses this process holds in memory, and how far into the log they are current.
pub struct LicenseCache {
    licenses: Mutex<HashMap<LicenseId, Cached>>,
    /// Every event up to this position is applied.
    applied: AtomicI64,
    /// The newest position this process knows of.
    known: watch::Receiver<Position>,
}

impl LicenseCache {
    /// An empty cache current as of `head`, learning of new positions from `store`.
    pub fn new(store: &dyn Store, head: Position) -> LicenseCache {
        LicenseCache {
            licenses: Mutex::new(HashMap::new()),
            applied: AtomicI64::new(head.0),
            known: store.subscribe_appends(),
        }
    }

    /// Every event up to this position is applied.
    pub fn applied(&self) -> Position {
        Position(self.applied.load(Ordering::Acquire))
    }

    /// Whether an answer from memory would hold every event this process knows of, and every
    /// event up to `at_least` (a client's own write).
    pub fn current(&self, at_least: Option<Position>) -> bool {
        let known = *self.known.borrow();
        let needed = at_least.map_or(known, |client| client.max(known));
        self.applied() >= needed
    }

    /// The license, when the cache holds it and is [`LicenseCache::current`].
    pub fn get(
        &self,
        license_id: &LicenseId,
        at_least: Option<Position>,
    ) -> Option<Arc<IssuedLicense>> {
        if !self.current(at_least) {
            return None;
        }
        self.lock()
            .get(license_id)
            .and_then(|cached| cached.issued.clone())
    }

    /// Loads `license_id` into the cache (see the module documentation); answers it as loaded.
    pub async fn load(
        &self,
        store: &dyn Store,
        license_id: &LicenseId,
    ) -> Result<LicenseState, FlowError> {
        let license_stream = stream(License::STREAM_TYPE, license_id.as_str())?;
        let (state, version) = load::<License>(store, &license_stream).await?;
        {
            let mut licenses = self.lock();
            if licenses.len() >= LICENSE_CACHE_MAX {
                licenses.clear();
            }
            let newer = licenses
                .get(license_id)
                .is_some_and(|cached| cached.version >= version);
            if !newer {
                licenses.insert(license_id.clone(), Cached::new(state.clone(), version));
            }
        }
        let passed = store
            .read_stream(&license_stream, StreamVersion(version.0 + 1), READ_PAGE_MAX)
            .await?;
        self.apply(&passed);
        Ok(state)
    }

    /// Applies recorded events in log order: each license event the cache can place, and an
    /// erasure's emptying.
    fn apply(&self, events: &[RecordedEvent]) {
        let mut licenses = self.lock();
        for event in events {
            if event.event_type == "personal_data_erased" {
                licenses.clear();
                continue;
            }
            if event.stream.stream_type() != License::STREAM_TYPE {
                continue;
            }
            let Ok(license_id) = LicenseId::parse(event.stream.stream_id()) else {
                continue;
            };
            let Some(cached) = licenses.get_mut(&license_id) else {
                continue;
            };
            if event.stream_version.0 <= cached.version.0 {
                continue;
            }
            let decoded = decode::<LicenseEvent>(&event.event_type, &event.payload);
            match decoded {
                Ok(decoded) if event.stream_version.0 == cached.version.0 + 1 => {
                    let state = License::evolve(std::mem::take(&mut cached.state), &decoded);
                    *cached = Cached::new(state, event.stream_version);
                }
                _ => {
                    // An event it cannot place: the license is refolded on its next read.
                    licenses.remove(&license_id);
                }
            }
        }
    }

    fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<LicenseId, Cached>> {
        self.licenses.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows the log until `stopped` turns true: reads every event after the applied position
    /// (woken by the store's notifications, else every [`FOLLOW_POLL`]) and applies it. A failed
    /// read is logged and retried; meanwhile the cache is not current and reads go to the store.
    pub async fn follow(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut appends = store.subscribe_appends();
        let mut erased_until: Option<tokio::time::Instant> = None;
        while !*stopped.borrow() {
            match self.follow_once(store.as_ref()).await {
                Ok((read, erased)) => {
                    if erased {
                        erased_until =
                            Some(tokio::time::Instant::now() + 2 * ERASURE_CHECK_INTERVAL);
                    }
                    if read == READ_PAGE_MAX {
                        continue;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "the license cache could not read the log; reads go to the store")
                }
            }
            if erased_until.is_some_and(|until| tokio::time::Instant::now() >= until) {
                // Every process has forgotten the erased keys by now: what was loaded since the
                // erasure's record may still hold them in the clear.
                self.clear();
                erased_until = None;
            }
            tokio::select! {
                _ = appends.changed() => {}
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// One read of the log after the applied position; answers how many events it read and
    /// whether one was an erasure.
    async fn follow_once(&self, store: &dyn Store) -> Result<(usize, bool), StoreError> {
        let after = self.applied();
        let events = store.read_all(after, READ_PAGE_MAX).await?;
        let erased = events
            .iter()
            .any(|e| e.event_type == "personal_data_erased");
        self.apply(&events);
        if let Some(last) = events.last() {
            self.applied
                .store(last.global_position.0, Ordering::Release);
        }
        Ok((events.len(), erased))
    }
}
