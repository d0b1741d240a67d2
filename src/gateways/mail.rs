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
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest one SMTP conversation may take before the attempt counts as failed.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(15);
/// The name of the folder under the data directory that holds `.eml` files without SMTP.
pub const OUTBOX_DIR_NAME: &str = "outbox";
/// How long an `.eml` file is kept: a sign-in link in it is dead after 15 minutes, an invitation
/// is answered at sign-in; older files are deleted whenever a new one is written.
pub const OUTBOX_FILE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Files looked at per cleanup or erasure pass of the outbox folder.
const OUTBOX_FILES_SCANNED_MAX: usize = 100_000;

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
    pub fn new(config: &MailConfig, data_dir: &Path) -> Result<Mailer, MailError> {
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
                .map_err(|e| MailError::Send(smtp_failure(&e))),
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

/// What an SMTP failure was, without the server's words: a reply often repeats the recipient's
/// address, and this text is recorded in the log, where personal data only goes sealed.
fn smtp_failure(error: &lettre::transport::smtp::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_transient() {
        "refused for now"
    } else if error.is_permanent() {
        "refused for good"
    } else if error.is_tls() {
        "TLS failed"
    } else {
        "connection failed"
    };
    match error.status() {
        Some(code) => format!("SMTP {kind} (reply {code})"),
        None => format!("SMTP {kind}"),
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

/// Writes `<folder>/<message id>.eml` whole or not at all (a temporary file, then a rename),
/// readable by this user only; files past [`OUTBOX_FILE_RETENTION`] go first.
fn write_file(folder: &Path, message_id: &str, bytes: &[u8]) -> Result<(), MailError> {
    let failed =
        |e: std::io::Error| MailError::Send(format!("writing the outbox file: {}", e.kind()));
    std::fs::create_dir_all(folder).map_err(failed)?;
    delete_files(folder, |path| {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > OUTBOX_FILE_RETENTION))
    });
    let name: String = message_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let partial = folder.join(format!(".{name}.eml.partial"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&partial).map_err(failed)?;
    std::io::Write::write_all(&mut file, bytes).map_err(failed)?;
    std::fs::rename(&partial, folder.join(format!("{name}.eml"))).map_err(failed)
}

/// Deletes the `.eml` files of `folder` that `doomed` picks; answers how many went.
fn delete_files(folder: &Path, doomed: impl Fn(&Path) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .take(OUTBOX_FILES_SCANNED_MAX)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "eml") && doomed(path))
        .filter(|path| std::fs::remove_file(path).is_ok())
        .count()
}

/// Deletes every `.eml` file of the outbox folder addressed to `email` (the erasure of a person
/// reaches the copies of their mail kept without SMTP); answers how many went.
pub fn forget_files(data_dir: &Path, email: &Email) -> usize {
    let header = format!("to: {}", email.as_str());
    delete_files(&data_dir.join(OUTBOX_DIR_NAME), |path| {
        std::fs::read_to_string(path).is_ok_and(|text| {
            text.lines()
                .take_while(|line| !line.is_empty())
                .any(|line| line.trim().to_ascii_lowercase() == header)
        })
    })
}
