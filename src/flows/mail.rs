//! The outbox's deliverer: sends every email the log asks for, once, and records what became of
//! each in its `mail/<message id>` stream.
//!
//! The log is the queue. An event that asks for a message (`magic_link_issued`, `member_invited`,
//! `email_code_issued`) puts it in the `mail_outbox` read model; the deliverer pages through it,
//! reads the asking event for the recipient and the content, sends, and records the delivery or the failure (which makes
//! the message due again later, see `aggregates::mail`). A message survives a restart because it
//! stays in the read model until its delivery is recorded. Before sending, the deliverer checks the
//! message's own stream, so a message recorded as delivered is never sent again; a crash between
//! the server's acceptance and the record sends it once more (with the same `Message-ID`, which
//! receivers use to drop duplicates). One process delivers at a time (the `mail_delivery` lock).
//!
//! A sign-in link or recovery code that was superseded, used or expired before its turn is
//! abandoned, not sent; so is a message whose recipient was erased (an erased email reads as an
//! `…@erased.invalid` address).

use crate::crypto::personal::reads_as_erased;
use crate::crypto::KeyMaterial;
use crate::engine::command::{handle, load, Command};
use crate::engine::store::{Store, StoreError};
use crate::flows::recovery::recovery_code;
use crate::flows::sign_in::{link_code, link_token};
use crate::flows::{stream, FlowError};
use crate::gateways::mail::{Mailer, OutgoingMail};
use crate::metrics::{MailOutcome, Metrics};
use aggregates::account::{Account, AccountEvent};
use aggregates::catalog::Catalog;
use aggregates::decider::{decode, Context, Decider};
use aggregates::email_code::{EmailCode, EmailCodeEvent, RecoveryJob, EMAIL_CODE_TTL_MINUTES};
use aggregates::log::{EventMetadata, Position, RecordedEvent};
use aggregates::magic_link::{MagicLink, MagicLinkEvent, MAGIC_LINK_TTL_MINUTES};
use aggregates::mail::{Mail, MailCommand};
use chrono::{DateTime, Utc};
use projections::mail_outbox::{MailOutbox, MessageKind, PendingMessage};
use projections::DocumentProjection;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Outbox documents read per page.
const OUTBOX_PAGE_MAX: usize = 100;
/// Messages one round sends at most, so a round ends and the lock is checked again.
const DELIVERIES_PER_ROUND_MAX: usize = 500;
/// Outbox pages one round reads at most: a backlog of messages not yet due is not read whole
/// every tick.
const OUTBOX_PAGES_PER_ROUND_MAX: usize = 20;
/// How often the deliverer looks for due messages.
pub const DELIVERY_POLL: Duration = Duration::from_millis(200);
/// The lock that makes one process the deliverer.
const DELIVERY_LOCK: &str = "mail_delivery";

/// What the deliverer needs.
pub struct Outbox {
    /// The store (sealing, so recipients read in the clear).
    pub store: Arc<dyn Store>,
    /// The server secret (tokens and codes are derived under it).
    pub keys: Arc<KeyMaterial>,
    /// Where email goes.
    pub mailer: Arc<Mailer>,
    /// The catalog in force (for decisions).
    pub catalog: Arc<Catalog>,
    /// The service's public base URL (links in messages).
    pub public_url: String,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// What to do with one due message.
enum Plan {
    Send(OutgoingMail),
    Abandon(&'static str),
}

impl Outbox {
    /// Delivers until `stopped` turns true: one round every [`DELIVERY_POLL`] while this process
    /// holds the delivery lock. A failed round is logged and retried at the next tick.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut leadership = None;
        while !*stopped.borrow() {
            if leadership.is_none() {
                leadership = match self.store.try_lead(DELIVERY_LOCK, 0).await {
                    Ok(lead) => lead,
                    Err(error) => {
                        tracing::warn!(%error, "the mail delivery lock could not be tried");
                        None
                    }
                };
            }
            if let Some(lead) = leadership.as_mut() {
                if !lead.still_leading().await {
                    leadership = None;
                    continue;
                }
                if let Err(error) = self.deliver_due(Utc::now()).await {
                    tracing::warn!(%error, "a mail delivery round failed; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(DELIVERY_POLL) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// Sends every message due at `now` (at most [`DELIVERIES_PER_ROUND_MAX`]); answers how many
    /// were handled.
    pub async fn deliver_due(&self, now: DateTime<Utc>) -> Result<usize, FlowError> {
        let mut after: Option<String> = None;
        let mut handled = 0;
        for _ in 0..OUTBOX_PAGES_PER_ROUND_MAX {
            if handled >= DELIVERIES_PER_ROUND_MAX {
                break;
            }
            let page = self
                .store
                .list_documents(MailOutbox::NAME, after.as_deref(), OUTBOX_PAGE_MAX)
                .await?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            let full = page.len() == OUTBOX_PAGE_MAX;
            for (_, body) in page {
                let pending: PendingMessage = serde_json::from_value(body).map_err(|e| {
                    StoreError::Invariant(format!("an outbox document does not decode: {e}"))
                })?;
                if pending.due_at > now {
                    continue;
                }
                // One message that cannot be handled (a record it cannot read) must not hold up
                // the others: it is logged and tried again next round.
                match self.deliver(&pending, now).await {
                    Ok(true) => handled += 1,
                    Ok(false) => {}
                    Err(error) if error.is_unavailable() => return Err(error),
                    Err(error) => tracing::error!(
                        %error, message_id = %pending.message_id,
                        "an email could not be handled; it is tried again next round"
                    ),
                }
            }
            if !full {
                break;
            }
        }
        Ok(handled)
    }

    /// Delivers one message unless its stream says it is done; answers whether it acted.
    #[tracing::instrument(skip_all, fields(message_id = %pending.message_id))]
    async fn deliver(
        &self,
        pending: &PendingMessage,
        now: DateTime<Utc>,
    ) -> Result<bool, FlowError> {
        let mail_stream = stream(Mail::STREAM_TYPE, &pending.message_id)?;
        if load::<Mail>(self.store.as_ref(), &mail_stream)
            .await?
            .0
            .done
        {
            return Ok(false);
        }
        let source = self.source_event(pending.source_position).await?;
        let (command, outcome) = match self.plan(pending.kind, &source, now).await? {
            Plan::Abandon(reason) => {
                tracing::info!(reason, "an email is abandoned, not sent");
                (
                    MailCommand::Abandon {
                        reason: reason.to_owned(),
                    },
                    MailOutcome::Abandoned,
                )
            }
            Plan::Send(mail) => match self.mailer.send(&mail).await {
                Ok(()) => (MailCommand::RecordDelivery, MailOutcome::Delivered),
                Err(error) => {
                    tracing::warn!(%error, failures = pending.failures, "sending an email failed; it will be retried");
                    (
                        MailCommand::RecordFailure {
                            reason: error.to_string(),
                        },
                        MailOutcome::Failed,
                    )
                }
            },
        };
        self.metrics.record_mail(outcome);
        let record = Command::<Mail> {
            stream_id: &pending.message_id,
            command: &command,
            context: Context::new(now, &self.catalog),
            metadata: EventMetadata {
                actor: String::from("system:mail"),
                causation_id: Some(source.event_id.clone()),
                correlation_id: source.metadata.correlation_id.clone(),
                request_id: None,
                effective_at: now,
            },
            idempotency: None,
        };
        handle::<Mail>(self.store.as_ref(), record).await?;
        Ok(true)
    }

    /// The event at `position` (read through the sealing store, so in the clear).
    async fn source_event(&self, position: i64) -> Result<RecordedEvent, FlowError> {
        let events = self.store.read_all(Position(position - 1), 1).await?;
        events
            .into_iter()
            .next()
            .filter(|event| event.global_position.0 == position)
            .ok_or(FlowError::Broken(
                "an outbox message names an event the log does not show",
            ))
    }

    async fn plan(
        &self,
        kind: MessageKind,
        source: &RecordedEvent,
        now: DateTime<Utc>,
    ) -> Result<Plan, FlowError> {
        match kind {
            MessageKind::SignInLink => self.sign_in_link(source, now).await,
            MessageKind::Invitation => self.invitation(source).await,
            MessageKind::RecoveryCode => self.recovery_code(source, now).await,
        }
    }

    async fn sign_in_link(
        &self,
        source: &RecordedEvent,
        now: DateTime<Utc>,
    ) -> Result<Plan, FlowError> {
        let MagicLinkEvent::MagicLinkIssued { link_id, email, .. } =
            decode(&source.event_type, &source.payload)?
        else {
            return Err(FlowError::Broken("a sign-in message from another event"));
        };
        let (links, _) = load::<MagicLink>(self.store.as_ref(), &source.stream).await?;
        let Some(link) = links.link.filter(|link| link.link_id == link_id) else {
            return Ok(Plan::Abandon("a newer sign-in link superseded it"));
        };
        if !link.usable(now) {
            return Ok(Plan::Abandon(
                "the sign-in link was used or expired before it was sent",
            ));
        }
        if reads_as_erased(email.as_str()) {
            return Ok(Plan::Abandon("the recipient was erased"));
        }
        let keys = &self.keys.hasher;
        let url = format!(
            "{}/auth/magic-link/verify?token={}",
            self.base(),
            link_token(keys, &link_id).expose()
        );
        let code = link_code(keys, &link_id);
        Ok(Plan::Send(OutgoingMail {
            message_id: link_id,
            to: email,
            subject: String::from("Your Pulse Account sign-in link"),
            text: format!(
                "Sign in to Pulse Account by opening this link:\n\n{url}\n\nOr type this code on the sign-in page: {code}\n\nThe link and the code work once, for {MAGIC_LINK_TTL_MINUTES} minutes. If you did not ask to sign in, ignore this email.\n"
            ),
        }))
    }

    async fn invitation(&self, source: &RecordedEvent) -> Result<Plan, FlowError> {
        let AccountEvent::MemberInvited {
            invitation_id,
            email,
            role,
            ..
        } = decode(&source.event_type, &source.payload)?
        else {
            return Err(FlowError::Broken(
                "an invitation message from another event",
            ));
        };
        if reads_as_erased(email.as_str()) {
            return Ok(Plan::Abandon("the recipient was erased"));
        }
        let (account, _) = load::<Account>(self.store.as_ref(), &source.stream).await?;
        let Some(account) = account
            .account
            .filter(|a| a.invitations.contains_key(&invitation_id))
        else {
            return Ok(Plan::Abandon(
                "the invitation was answered or withdrawn before it was sent",
            ));
        };
        Ok(Plan::Send(OutgoingMail {
            message_id: invitation_id.to_string(),
            to: email,
            subject: format!("You are invited to {} on Pulse Account", account.display_name),
            text: format!(
                "You have been invited to the Pulse account {} as {}.\n\nSign in with this email address to accept: {}/portal\n",
                account.display_name,
                role.display(),
                self.base()
            ),
        }))
    }

    async fn recovery_code(
        &self,
        source: &RecordedEvent,
        now: DateTime<Utc>,
    ) -> Result<Plan, FlowError> {
        let EmailCodeEvent::EmailCodeIssued {
            code_id,
            job,
            email,
            ..
        } = decode(&source.event_type, &source.payload)?
        else {
            return Err(FlowError::Broken(
                "a recovery-code message from another event",
            ));
        };
        let (codes, _) = load::<EmailCode>(self.store.as_ref(), &source.stream).await?;
        let Some(code) = codes.codes.get(&job).filter(|code| code.code_id == code_id) else {
            return Ok(Plan::Abandon("a newer code for the same job superseded it"));
        };
        if !code.usable(now) {
            return Ok(Plan::Abandon(
                "the code was used, exhausted or expired before it was sent",
            ));
        }
        if reads_as_erased(email.as_str()) {
            return Ok(Plan::Abandon("the recipient was erased"));
        }
        let digits = recovery_code(&self.keys.hasher, &code_id);
        let (subject, what) = match job {
            RecoveryJob::Manage => (
                "manage your Pulse billing",
                "open the billing portal of your licenses",
            ),
            RecoveryJob::Retrieve => (
                "retrieve your Pulse license",
                "show your licenses and their activation keys",
            ),
            RecoveryJob::Export => (
                "export your Pulse data",
                "export everything Pulse Account holds on this email",
            ),
            RecoveryJob::Delete => (
                "delete your Pulse data",
                "REVOKE your licenses and delete your personal data",
            ),
        };
        Ok(Plan::Send(OutgoingMail {
            message_id: code_id,
            to: email,
            subject: format!("Your code to {subject}"),
            text: format!(
                "Someone (we hope you) asked to {what}.\n\nYour code: {digits}\n\nIt works once, for {EMAIL_CODE_TTL_MINUTES} minutes, and only for this request. If you did not ask, ignore this email: nothing happens without the code.\n"
            ),
        }))
    }

    fn base(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }
}
