//! Email out. With an SMTP URL (`--smtp-url`), messages go to that server through lettre
//! (`smtps://` for implicit TLS, `smtp://…?tls=required` for STARTTLS; plain `smtp://` only for a
//! relay on a trusted network). With none — the embedded default — each message is written as an
//! `.eml` file under `<data-dir>/outbox/` and its subject and recipient are logged, so sign-in
//! works offline. What to send, and when, is the outbox's business (`crate::flows::mail`).

use crate::crypto::SecretText;
use aggregates::ids::Email;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::path::PathBuf;
use std::time::Duration;

/// Longest one SMTP conversation may take before the attempt counts as failed.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(15);
/// The name of the folder under the data directory that holds `.eml` files without SMTP.
pub const OUTBOX_DIR_NAME: &str = "outbox";

/// How email leaves the service.
#[derive(Clone, Debug, Default)]
pub struct MailConfig {
    /// The SMTP server, `smtp[s]://[user:password@]host[:port][?tls=required]`; `None` writes
    /// `.eml` files instead.
    pub smtp_url: Option<SecretText>,
    /// The sender (`Name <address>` or an address); `None` is `Pulse Account <no-reply@localhost>`.
    pub from: Option<String>,
}

/// One email to send.
#[derive(Clone, Debug)]
pub struct OutgoingMail {
    /// The message id the outbox knows it by; the `Message-ID` header carries it, so a receiver
    /// can tell a resend after a crash from a new message.
    pub message_id: String,
    /// The recipient.
    pub to: Email,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
}

/// Why an email could not be sent (or the mailer not built).
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The configuration is unusable.
    #[error("mail is misconfigured: {0}")]
    Config(String),
    /// The message could not be built (an address the builder refuses).
    #[error("the message cannot be built: {0}")]
    Build(String),
    /// The server refused or could not be reached, or the file could not be written.
    #[error("sending failed: {0}")]
    Send(String),
}

/// Where email goes.
pub enum Mailer {
    /// An SMTP server.
    Smtp(Box<AsyncSmtpTransport<Tokio1Executor>>, Mailbox),
    /// `.eml` files in a folder (no SMTP configured).
    Files(PathBuf, Mailbox),
}

impl Mailer {
    /// A mailer for `config`; without an SMTP URL, one that writes to `<data_dir>/outbox/`.
    pub fn new(config: &MailConfig, data_dir: &std::path::Path) -> Result<Mailer, MailError> {
        let from: Mailbox = config
            .from
            .as_deref()
            .unwrap_or("Pulse Account <no-reply@localhost>")
            .parse()
            .map_err(|e| MailError::Config(format!("--mail-from: {e}")))?;
        match &config.smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|_| {
                        MailError::Config(String::from(
                            "--smtp-url must be smtp://… or smtps://… (host, optional port, user and password)",
                        ))
                    })?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                Ok(Mailer::Smtp(Box::new(transport), from))
            }
            None => Ok(Mailer::Files(data_dir.join(OUTBOX_DIR_NAME), from)),
        }
    }

    /// Whether messages are written to files rather than sent.
    pub fn writes_files(&self) -> bool {
        matches!(self, Mailer::Files(..))
    }

    /// Sends one message (or writes its file).
    pub async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        let (Mailer::Smtp(_, from) | Mailer::Files(_, from)) = self;
        let message = build(from, mail)?;
        match self {
            Mailer::Smtp(transport, _) => transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| MailError::Send(e.to_string())),
            Mailer::Files(folder, _) => {
                write_file(folder, &mail.message_id, &message.formatted())?;
                tracing::info!(
                    to = %mail.to,
                    subject = %mail.subject,
                    folder = %folder.display(),
                    "no SMTP server configured: the email was written to the outbox folder"
                );
                Ok(())
            }
        }
    }
}

fn build(from: &Mailbox, mail: &OutgoingMail) -> Result<Message, MailError> {
    let to: Mailbox = mail
        .to
        .as_str()
        .parse()
        .map_err(|e| MailError::Build(format!("recipient: {e}")))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .message_id(Some(format!("<{}@pulse-account>", mail.message_id)))
        .header(ContentType::TEXT_PLAIN)
        .body(mail.text.clone())
        .map_err(|e| MailError::Build(e.to_string()))
}

/// Writes `<folder>/<message id>.eml` whole or not at all (a temporary file, then a rename).
fn write_file(folder: &std::path::Path, message_id: &str, bytes: &[u8]) -> Result<(), MailError> {
    let failed = |e: std::io::Error| MailError::Send(format!("{}: {e}", folder.display()));
    std::fs::create_dir_all(folder).map_err(failed)?;
    let name: String = message_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let partial = folder.join(format!(".{name}.eml.partial"));
    std::fs::write(&partial, bytes).map_err(failed)?;
    std::fs::rename(&partial, folder.join(format!("{name}.eml"))).map_err(failed)
}
