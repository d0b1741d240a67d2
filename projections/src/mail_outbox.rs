//! The outbox: every email the ledger still has to send, one document per message keyed by its
//! message id (the id of the event that asked for it: a magic link's, an invitation's, a
//! recovery code's).
//!
//! A message enters when the event that asks for it is recorded (`magic_link_issued`,
//! `member_invited`, `email_code_issued`), is due again after each recorded failure, and leaves
//! when its delivery or abandonment is recorded in its `mail/<message id>` stream. The document holds no personal
//! data: the deliverer reads the asking event (by its position) to learn the recipient, so an
//! erased person's message cannot be sent.

use crate::{DocumentProjection, FoldError};
use aggregates::decider::{decode, Decider};
use aggregates::log::RecordedEvent;
use aggregates::mail::{Mail, MailEvent};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A sign-in link and its code.
    SignInLink,
    /// An invitation to join an account.
    Invitation,
    /// A code that confirms a self-hosted recovery job.
    RecoveryCode,
}

/// A message waiting to be sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMessage {
    /// Its id (also its `mail/<id>` stream).
    pub message_id: String,
    /// What it is.
    pub kind: MessageKind,
    /// The position of the event that asked for it.
    pub source_position: i64,
    /// Failed attempts so far.
    pub failures: u32,
    /// When it may be tried (again).
    pub due_at: DateTime<Utc>,
}

/// The message an event asks for: its kind and id.
fn asked_for(event: &RecordedEvent) -> Option<(MessageKind, String)> {
    let (kind, id_field) = match (event.stream.stream_type(), event.event_type.as_str()) {
        ("magic_link", "magic_link_issued") => (MessageKind::SignInLink, "link_id"),
        ("account", "member_invited") => (MessageKind::Invitation, "invitation_id"),
        ("email_code", "email_code_issued") => (MessageKind::RecoveryCode, "code_id"),
        _ => return None,
    };
    Some((kind, event.payload[id_field].as_str()?.to_owned()))
}

/// The outbox projection.
pub struct MailOutbox;

impl DocumentProjection for MailOutbox {
    const NAME: &'static str = "mail_outbox";
    type Document = PendingMessage;

    fn document_keys(event: &RecordedEvent) -> Vec<String> {
        if event.stream.stream_type() == Mail::STREAM_TYPE {
            return vec![event.stream.stream_id().to_owned()];
        }
        asked_for(event).map(|(_, id)| id).into_iter().collect()
    }

    fn apply(
        key: &str,
        document: Option<PendingMessage>,
        event: &RecordedEvent,
    ) -> Result<Option<PendingMessage>, FoldError> {
        if event.stream.stream_type() != Mail::STREAM_TYPE {
            let (kind, _) = asked_for(event)
                .ok_or_else(|| FoldError::new("an event that asks for no message"))?;
            return Ok(Some(PendingMessage {
                message_id: key.to_owned(),
                kind,
                source_position: event.global_position.0,
                failures: 0,
                due_at: event.recorded_at,
            }));
        }
        let mail: MailEvent =
            decode(&event.event_type, &event.payload).map_err(|e| FoldError::new(e.to_string()))?;
        Ok(match mail {
            MailEvent::MailDelivered { .. } | MailEvent::MailAbandoned { .. } => None,
            MailEvent::MailDeliveryFailed {
                attempt, retry_at, ..
            } => document.map(|pending| PendingMessage {
                failures: attempt,
                due_at: retry_at,
                ..pending
            }),
        })
    }
}
