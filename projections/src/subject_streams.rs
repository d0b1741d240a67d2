//! Which streams belong to a license or an account, for support replay: the subject's own stream,
//! and every stream one of whose events names it — its lookup indexes (activation key, installation
//! tokens, Stripe objects, lease refresh tokens), the purchase handoff that produced it, and a
//! license's self-refund (`self_refund/<license id>`). Keyed
//! `license/<id>` or `account/<id>`; each document lists stream names in the order they first
//! named the subject, at most [`SUBJECT_STREAMS_MAX`].

use crate::{DocumentProjection, FoldError};
use aggregates::log::RecordedEvent;
use serde::{Deserialize, Serialize};

/// Most streams listed per subject; beyond it the document says it was cut.
pub const SUBJECT_STREAMS_MAX: usize = 1_000;

/// The streams of one subject.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectStreamList {
    /// Stream names (`type/id`), in the order they first named the subject.
    pub streams: Vec<String>,
    /// True once more than [`SUBJECT_STREAMS_MAX`] streams named it.
    pub truncated: bool,
}

/// The subjects an event names: its own stream if it is a license or an account, and the
/// licenses and accounts its payload names (`license_id`, `account_id`, a Stripe link's `target`).
pub fn subjects(event: &RecordedEvent) -> Vec<String> {
    let mut subjects = Vec::new();
    match event.stream.stream_type() {
        "license" | "account" => subjects.push(event.stream.to_string()),
        "self_refund" => subjects.push(format!("license/{}", event.stream.stream_id())),
        _ => {}
    }
    let payload = &event.payload;
    let named = [
        ("license", payload["license_id"].as_str()),
        ("account", payload["account_id"].as_str()),
        (
            payload["target"]["kind"].as_str().unwrap_or_default(),
            payload["target"]["id"].as_str(),
        ),
    ];
    for (kind, id) in named {
        if let ("license" | "account", Some(id)) = (kind, id) {
            let subject = format!("{kind}/{id}");
            if !subjects.contains(&subject) {
                subjects.push(subject);
            }
        }
    }
    subjects
}

/// The subject-streams projection.
pub struct SubjectStreams;

impl DocumentProjection for SubjectStreams {
    const NAME: &'static str = "subject_streams";
    type Document = SubjectStreamList;

    fn document_keys(event: &RecordedEvent) -> Vec<String> {
        subjects(event)
    }

    fn apply(
        _key: &str,
        document: Option<SubjectStreamList>,
        event: &RecordedEvent,
    ) -> Result<Option<SubjectStreamList>, FoldError> {
        let mut list = document.unwrap_or_default();
        let stream = event.stream.to_string();
        if !list.streams.contains(&stream) {
            if list.streams.len() < SUBJECT_STREAMS_MAX {
                list.streams.push(stream);
            } else {
                list.truncated = true;
            }
        }
        Ok(Some(list))
    }
}
