//! Support replay in the service: gathers a license's or an account's events — its own stream,
//! read directly, and the streams that name it (`subject_streams` read model) — in global order,
//! and hands them to the pure engine of `projections::replay` for the timeline, the state as of a
//! moment, and why it is as it is. Used by the staff API and the `support` CLI command.

use crate::engine::store::{Store, StoreError, READ_PAGE_MAX};
use crate::flows::{stream, FlowError};
use aggregates::account::Account;
use aggregates::catalog::CatalogHistory;
use aggregates::decider::Decider;
use aggregates::error::DomainError;
use aggregates::ids::{AccountId, LicenseId};
use aggregates::license::License;
use aggregates::log::{RecordedEvent, StreamName, StreamVersion};
use projections::replay::{as_of, timeline, why, Cause, Cut, Step};
use projections::subject_streams::{SubjectStreamList, SubjectStreams};
use projections::DocumentProjection;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Most events one replay reads across all of a subject's streams.
pub const REPLAY_EVENTS_MAX: usize = 50_000;

/// What support replays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// A self-hosted license (`lic_…`).
    License,
    /// A hosted account (`a_…`).
    Account,
}

/// A subject's gathered history.
pub struct History {
    /// Which kind of subject.
    pub kind: SubjectKind,
    /// Its id.
    pub id: String,
    /// Its events, in global order.
    pub events: Vec<RecordedEvent>,
    /// True when the subject-streams read model cut its list of streams.
    pub streams_truncated: bool,
}

/// Gathers the history of a subject; 404 when its own stream is empty or the id is malformed.
#[tracing::instrument(skip(store), fields(kind = ?kind))]
pub async fn history(store: &dyn Store, kind: SubjectKind, id: &str) -> Result<History, FlowError> {
    let not_found = || {
        FlowError::from(DomainError::NotFound {
            entity: match kind {
                SubjectKind::License => "license",
                SubjectKind::Account => "account",
            },
        })
    };
    let own = match kind {
        SubjectKind::License => {
            LicenseId::parse(id).map_err(|_| not_found())?;
            stream(License::STREAM_TYPE, id)?
        }
        SubjectKind::Account => {
            AccountId::parse(id).map_err(|_| not_found())?;
            stream(Account::STREAM_TYPE, id)?
        }
    };
    let related: SubjectStreamList = match store
        .read_document(SubjectStreams::NAME, &own.to_string())
        .await?
    {
        Some(body) => serde_json::from_value(body).map_err(|e| {
            StoreError::Invariant(format!("unreadable subject_streams document: {e}"))
        })?,
        None => SubjectStreamList::default(),
    };
    let mut names = vec![own.clone()];
    for name in &related.streams {
        let parsed = name
            .split_once('/')
            .and_then(|(kind, id)| StreamName::parse(kind, id).ok())
            .ok_or_else(|| StoreError::Invariant(format!("bad stream name {name:?}")))?;
        if !names.contains(&parsed) {
            names.push(parsed);
        }
    }
    let mut events = Vec::new();
    for name in &names {
        read_whole_stream(store, name, &mut events).await?;
    }
    if !events.iter().any(|e| e.stream == own) {
        return Err(not_found());
    }
    events.sort_by_key(|e| e.global_position);
    Ok(History {
        kind,
        id: id.to_owned(),
        events,
        streams_truncated: related.truncated,
    })
}

async fn read_whole_stream(
    store: &dyn Store,
    name: &StreamName,
    into: &mut Vec<RecordedEvent>,
) -> Result<(), FlowError> {
    let mut from = StreamVersion(1);
    loop {
        let page = store.read_stream(name, from, READ_PAGE_MAX).await?;
        let full = page.len() == READ_PAGE_MAX;
        if let Some(last) = page.last() {
            from = last.stream_version.next();
        }
        into.extend(page);
        if into.len() > REPLAY_EVENTS_MAX {
            return Err(StoreError::InvalidRequest(format!(
                "this subject has more than {REPLAY_EVENTS_MAX} events; replay it with an export"
            ))
            .into());
        }
        if !full {
            return Ok(());
        }
    }
}

impl History {
    fn run<T>(
        &self,
        license: impl FnOnce(&[RecordedEvent]) -> Result<T, projections::FoldError>,
        account: impl FnOnce(&[RecordedEvent]) -> Result<T, projections::FoldError>,
    ) -> Result<T, FlowError> {
        let result = match self.kind {
            SubjectKind::License => license(&self.events),
            SubjectKind::Account => account(&self.events),
        };
        result.map_err(|e| StoreError::Invariant(format!("replaying {}: {e}", self.id)).into())
    }

    /// Every event with what it changed.
    pub fn timeline(&self, catalogs: &CatalogHistory) -> Result<Vec<Step>, FlowError> {
        self.run(
            |events| timeline::<License>(&self.id, events, catalogs),
            |events| timeline::<Account>(&self.id, events, catalogs),
        )
    }

    /// The subject's view as of a cut.
    pub fn as_of(&self, catalogs: &CatalogHistory, cut: Cut) -> Result<Value, FlowError> {
        self.run(
            |events| as_of::<License>(&self.id, events, catalogs, cut),
            |events| as_of::<Account>(&self.id, events, catalogs, cut),
        )
    }

    /// For each field of the view now, the event that made it so.
    pub fn why(&self, catalogs: &CatalogHistory) -> Result<BTreeMap<String, Cause>, FlowError> {
        Ok(why(&self.timeline(catalogs)?))
    }
}
