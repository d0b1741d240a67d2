//! The command line: `serve`, `migrate`, `projections`, `export`, `verify`, `audit`, `staff` and
//! `support`. Raw arguments are parsed and checked here (clap), turned into validated settings, and
//! handed to the library. This is CLI glue, so it reports failures with `anyhow` context chains.

use crate::crypto::{KeyConfig, KeyMaterial, SecretText};
use crate::engine::audit;
use crate::engine::personal_data::PersonalDataStore;
use crate::engine::projection::runner::{Runner, RunnerConfig};
use crate::engine::projection::{active_checkpoint, registry};
use crate::flows::staff;
use crate::flows::support::SubjectKind;
use crate::gateways::mail::MailConfig;
use crate::gateways::stripe::StripeConfig;
use crate::http::server::ServerLimits;
use crate::metrics::Metrics;
use crate::startup::{open_store, Application, Settings};
use crate::telemetry::LogFormat;
use aggregates::catalog::Catalog;
use aggregates::ids::{Email, StaffTokenId};
use aggregates::log::{EventMetadata, Position};
use aggregates::staff::StaffRole;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use projections::replay::Cut;
use projections::subject_streams::SubjectStreams;
use projections::DocumentProjection;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The SQLite file name inside the data directory.
const SQLITE_FILE_NAME: &str = "pulse-account.db";
/// How often a long CLI job prints its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Pulse Account: the commercial ledger and customer account backend of Pulse.
#[derive(Debug, Parser)]
#[command(name = "pulse-account", version, about)]
pub struct Cli {
    /// How log lines are written.
    #[arg(long, global = true, env = "PULSE_ACCOUNT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service and the projection runners (applies migrations first).
    Serve(Box<ServeArgs>),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Inspect or rebuild projections.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Export the log for auditors: chained JSONL ending with a signed manifest.
    Export(ExportArgs),
    /// Verify an export offline with the signer's public key; names the line that broke.
    Verify(VerifyArgs),
    /// Seal the committed log, or check it against every seal.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Issue or revoke staff and service API tokens.
    #[command(subcommand)]
    Staff(StaffCommand),
    /// Replay a license's or an account's history (JSON on stdout).
    #[command(subcommand)]
    Support(SupportCommand),
    /// Erase a person's personal data: destroys their data keys (the log is not rewritten),
    /// records the erasure, and rebuilds the read models.
    Erase(EraseArgs),
}

/// `erase` options.
#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The person's email.
    #[arg(long, value_parser = parse_email)]
    email: Email,
    /// Why (a ticket reference); recorded.
    #[arg(long)]
    reason: String,
    /// Where the data lives, and the keys.
    #[command(flatten)]
    keyed: KeyedDatabaseArgs,
}

fn parse_email(raw: &str) -> Result<Email, String> {
    Email::parse(raw).map_err(|e| e.to_string())
}

/// What support replays.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SubjectArg {
    /// A self-hosted license (`lic_…`).
    License,
    /// A hosted account (`a_…`).
    Account,
}

/// Which subject.
#[derive(Debug, Args)]
pub struct SubjectArgs {
    /// `license` or `account`.
    #[arg(value_enum)]
    kind: SubjectArg,
    /// Its id.
    id: String,
    /// Where the data lives, and the keys that open personal data.
    #[command(flatten)]
    keyed: KeyedDatabaseArgs,
}

/// `support` subcommands.
#[derive(Debug, Subcommand)]
pub enum SupportCommand {
    /// Every event of the subject's streams, with what it changed.
    Timeline(SubjectArgs),
    /// The billing state and entitlements as of a position, a recorded time or an effective time.
    AsOf {
        /// Which subject.
        #[command(flatten)]
        subject: SubjectArgs,
        /// Up to this global position.
        #[arg(long, conflicts_with_all = ["recorded_at", "effective_at"], required_unless_present_any = ["recorded_at", "effective_at"])]
        position: Option<i64>,
        /// What the ledger had recorded by then (RFC 3339).
        #[arg(long, conflicts_with = "effective_at")]
        recorded_at: Option<chrono::DateTime<chrono::Utc>>,
        /// What had taken effect by then (RFC 3339).
        #[arg(long)]
        effective_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// For every field now, the event that made it so.
    Why(SubjectArgs),
}

/// `staff` subcommands.
#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Issue a token; it is printed once and never stored.
    Issue {
        /// `support`, `auditor` or `provisioner`.
        #[arg(long, value_parser = parse_staff_role)]
        role: StaffRole,
        /// Who or what holds it (recorded).
        #[arg(long)]
        name: String,
        /// Where the data lives, and the keys.
        #[command(flatten)]
        keyed: KeyedDatabaseArgs,
    },
    /// Revoke a token for good.
    Revoke {
        /// The token's id (`stf_…`).
        #[arg(value_parser = parse_staff_token_id)]
        token_id: StaffTokenId,
        /// Where the data lives, and the keys.
        #[command(flatten)]
        keyed: KeyedDatabaseArgs,
    },
}

fn parse_staff_role(raw: &str) -> Result<StaffRole, String> {
    StaffRole::parse(raw).map_err(|e| e.to_string())
}

fn parse_staff_token_id(raw: &str) -> Result<StaffTokenId, String> {
    StaffTokenId::parse(raw).map_err(|e| e.to_string())
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Seal the log committed since the newest seal (signed with the signing key).
    Seal(KeyedDatabaseArgs),
    /// Recompute the chain over the stored log and compare it with every seal.
    Check(KeyedDatabaseArgs),
}

/// Where the data lives, and the signing key.
#[derive(Debug, Args)]
pub struct KeyedDatabaseArgs {
    /// Where the data lives.
    #[command(flatten)]
    database: DatabaseArgs,
    /// The Ed25519 signing key, `kid:base64url(32-byte seed)`; without it, the development key.
    #[arg(long, env = "PULSE_ACCOUNT_SIGNING_KEY", hide_env_values = true)]
    signing_key: Option<SecretText>,
    /// The 32-byte HMAC key (base64url) for bearer-secret hashes; without it, the development key.
    #[arg(long, env = "PULSE_ACCOUNT_SECRET_HASH_KEY", hide_env_values = true)]
    secret_hash_key: Option<SecretText>,
    /// The 32-byte AES-256 master key (base64url) of personal data; without it, the development key.
    #[arg(long, env = "PULSE_ACCOUNT_MASTER_KEY", hide_env_values = true)]
    master_key: Option<SecretText>,
}

/// `export` options.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where the data lives.
    #[command(flatten)]
    database: DatabaseArgs,
    /// Export the positions after this one.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    after: i64,
    /// Export up to this position (default: the head).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    to: Option<i64>,
    /// The file to write; it must not exist yet.
    #[arg(long)]
    output: PathBuf,
    /// `jsonl` or `csv`.
    #[arg(long, value_enum, default_value_t = audit::ExportFormat::Jsonl)]
    format: audit::ExportFormat,
    /// The Ed25519 signing key, `kid:base64url(32-byte seed)`; without it, the development key.
    #[arg(long, env = "PULSE_ACCOUNT_SIGNING_KEY", hide_env_values = true)]
    signing_key: Option<SecretText>,
}

/// `verify` options.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The export file.
    file: PathBuf,
    /// The signer's Ed25519 public key (base64url, the JWKS `x`).
    #[arg(long)]
    public_key: String,
}

/// Where the data lives.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (`postgres://…`) or SQLite URL (`sqlite://…`). Without it, a SQLite file in
    /// the data directory.
    #[arg(long, env = "PULSE_ACCOUNT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretText>,
    /// The local data directory (SQLite file, development keys).
    #[arg(long, env = "PULSE_ACCOUNT_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// The address to listen on.
    #[arg(long, env = "PULSE_ACCOUNT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Most positions a projection may lag behind the log while `/readyz` reports ready.
    #[arg(long, env = "PULSE_ACCOUNT_READINESS_LAG_MAX", default_value_t = 10_000,
          value_parser = clap::value_parser!(i64).range(0..))]
    readiness_lag_max: i64,
    /// The Ed25519 signing key, `kid:base64url(32-byte seed)`. Without it, a development key is
    /// generated into the data directory.
    #[arg(long, env = "PULSE_ACCOUNT_SIGNING_KEY", hide_env_values = true)]
    signing_key: Option<SecretText>,
    /// The 32-byte HMAC key (base64url) for bearer-secret hashes. Without it, a development key is
    /// generated into the data directory.
    #[arg(long, env = "PULSE_ACCOUNT_SECRET_HASH_KEY", hide_env_values = true)]
    secret_hash_key: Option<SecretText>,
    /// The 32-byte AES-256 master key (base64url) that wraps the per-person keys of personal data.
    /// Without it, a development key is generated into the data directory.
    #[arg(long, env = "PULSE_ACCOUNT_MASTER_KEY", hide_env_values = true)]
    master_key: Option<SecretText>,
    /// Stripe's secret API key; without it checkout is unavailable.
    #[arg(long, env = "PULSE_ACCOUNT_STRIPE_SECRET_KEY", hide_env_values = true)]
    stripe_secret_key: Option<SecretText>,
    /// Stripe's webhook signing secret; without it webhooks are refused.
    #[arg(
        long,
        env = "PULSE_ACCOUNT_STRIPE_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    stripe_webhook_secret: Option<SecretText>,
    /// Stripe's API base URL.
    #[arg(long, env = "PULSE_ACCOUNT_STRIPE_API_BASE")]
    stripe_api_base: Option<String>,
    /// The public base URL of this service, used in links it hands out.
    #[arg(
        long,
        env = "PULSE_ACCOUNT_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    public_url: String,
    /// The v5 Ed25519 public key (base64url) that verifies legacy license tokens; without it,
    /// legacy exchange answers 503.
    #[arg(long, env = "PULSE_ACCOUNT_LEGACY_PUBLIC_KEY")]
    legacy_public_key: Option<String>,
    /// Seconds between seals of the committed log (0: never).
    #[arg(long, env = "PULSE_ACCOUNT_SEAL_INTERVAL_SECS", default_value_t = 300)]
    seal_interval_secs: u64,
    /// Seconds between sweeps of the timed rules: end of grace, scheduled changes, stuck
    /// provisioning (0: never).
    #[arg(
        long,
        env = "PULSE_ACCOUNT_LIFECYCLE_INTERVAL_SECS",
        default_value_t = 60
    )]
    lifecycle_interval_secs: u64,
    /// Seconds a client has to send a request's head; an idle keep-alive connection is closed
    /// after as long.
    #[arg(long, env = "PULSE_ACCOUNT_HEADER_READ_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout_secs: u64,
    /// Seconds a client has to send a request's body (408 after).
    #[arg(long, env = "PULSE_ACCOUNT_BODY_READ_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_read_timeout_secs: u64,
    /// The SMTP server email goes through: `smtps://user:password@host[:port]` (implicit TLS),
    /// `smtp://…?tls=required` (STARTTLS), or plain `smtp://host:port` for a trusted relay.
    /// Without it, each email is written as an `.eml` file under `<data-dir>/outbox/`.
    #[arg(long, env = "PULSE_ACCOUNT_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<SecretText>,
    /// The sender of the email this service sends (`Name <address>`).
    #[arg(
        long,
        env = "PULSE_ACCOUNT_MAIL_FROM",
        default_value = "Pulse Account <no-reply@localhost>"
    )]
    mail_from: String,
    /// Where the portal sends customers who need a person (`support_email`).
    #[arg(
        long,
        env = "PULSE_ACCOUNT_SUPPORT_EMAIL",
        default_value = "support@pulse.invalid"
    )]
    support_email: String,
    /// Days after a self-hosted license's first payment in which its owner may refund it
    /// (`POST /v1/self-refund`); 0 turns self-refund off.
    #[arg(long, env = "PULSE_ACCOUNT_SELF_REFUND_DAYS", default_value_t = aggregates::self_refund::SELF_REFUND_WINDOW_DAYS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(0..=365))]
    self_refund_days: u32,
    /// Most HTTP connections open at once; more wait in the listen backlog.
    #[arg(long, env = "PULSE_ACCOUNT_CONNECTIONS_MAX", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    connections_max: u64,
}

/// `projections` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Show each projection's generations, checkpoints and lag.
    Status(DatabaseArgs),
    /// Rebuild a projection from position 0 into a fresh generation, then switch readers to it.
    Rebuild {
        /// The projection's name (see `projections status`).
        name: String,
        /// Where the data lives, and the keys that open personal data.
        #[command(flatten)]
        keyed: KeyedDatabaseArgs,
    },
}

impl DatabaseArgs {
    /// The database URL: the one given (checked), or the data directory's SQLite file (created).
    pub fn resolve(&self) -> anyhow::Result<SecretText> {
        if let Some(url) = &self.database_url {
            let known = ["postgres://", "postgresql://", "sqlite:"];
            if !known.iter().any(|scheme| url.expose().starts_with(scheme)) {
                bail!("--database-url must start with postgres://, postgresql:// or sqlite:");
            }
            return Ok(url.clone());
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating the data directory {}", self.data_dir.display()))?;
        let path = self.data_dir.join(SQLITE_FILE_NAME);
        let path = path
            .to_str()
            .context("the data directory path is not valid UTF-8")?;
        Ok(SecretText::from(format!("sqlite://{path}")))
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(database) => {
            open_store(database.resolve()?.expose())
                .await
                .context("migrating the database")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Projections(ProjectionsCommand::Status(database)) => {
            projections_status(&database).await
        }
        Command::Export(args) => export(args).await,
        Command::Verify(args) => verify(&args),
        Command::Audit(AuditCommand::Seal(args)) => audit_seal(args).await,
        Command::Audit(AuditCommand::Check(args)) => audit_check(args).await,
        Command::Projections(ProjectionsCommand::Rebuild { name, keyed }) => {
            rebuild(&name, &keyed).await
        }
        Command::Erase(args) => erase(args).await,
        Command::Support(command) => support(command).await,
        Command::Staff(StaffCommand::Issue { role, name, keyed }) => {
            let (store, keys) = keyed_store(&keyed).await?;
            let (token_id, token) = staff::issue(
                store.as_ref(),
                &keys,
                &Catalog::v1(),
                &name,
                role,
                cli_metadata(),
            )
            .await
            .context("issuing the token")?;
            println!("issued {} token {token_id} for {name:?}", role.as_str());
            println!("token (shown once, store it now): {}", token.expose());
            Ok(())
        }
        Command::Staff(StaffCommand::Revoke { token_id, keyed }) => {
            let (store, _) = keyed_store(&keyed).await?;
            staff::revoke(store.as_ref(), &Catalog::v1(), &token_id, cli_metadata())
                .await
                .context("revoking the token")?;
            println!("revoked {token_id}");
            Ok(())
        }
    }
}

async fn support(command: SupportCommand) -> anyhow::Result<()> {
    enum Question {
        Timeline,
        Why,
        AsOf(Cut),
    }
    let (subject, question) = match command {
        SupportCommand::Timeline(subject) => (subject, Question::Timeline),
        SupportCommand::Why(subject) => (subject, Question::Why),
        SupportCommand::AsOf {
            subject,
            position,
            recorded_at,
            effective_at,
        } => {
            let cut = match (position, recorded_at, effective_at) {
                (Some(position), _, _) => Cut::Position(position),
                (_, Some(at), _) => Cut::RecordedAt(at),
                (_, _, Some(at)) => Cut::EffectiveAt(at),
                _ => bail!("give one of --position, --recorded-at, --effective-at"),
            };
            (subject, Question::AsOf(cut))
        }
    };
    let (store, _) = keyed_store(&subject.keyed).await?;
    let store: Arc<dyn crate::engine::store::Store> = store;
    let head = store.head_position().await?;
    let indexed = active_checkpoint(store.as_ref(), SubjectStreams::NAME).await?;
    if indexed < head {
        eprintln!(
            "note: the subject_streams read model is at position {indexed} of {head}; streams that named the subject since then are missing until `serve` catches it up"
        );
    }
    let kind = match subject.kind {
        SubjectArg::License => SubjectKind::License,
        SubjectArg::Account => SubjectKind::Account,
    };
    let history = crate::flows::support::history(store.as_ref(), kind, &subject.id)
        .await
        .with_context(|| format!("reading the history of {}", subject.id))?;
    let catalog = crate::flows::catalog::history(store.as_ref())
        .await
        .context("reading the catalog versions in force")?;
    let answer = match question {
        Question::Timeline => serde_json::to_value(history.timeline(&catalog)?)?,
        Question::Why => serde_json::to_value(history.why(&catalog)?)?,
        Question::AsOf(cut) => history.as_of(&catalog, cut)?,
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// Metadata of an event an operator causes from the command line.
fn cli_metadata() -> EventMetadata {
    EventMetadata {
        actor: String::from("operator:cli"),
        causation_id: None,
        correlation_id: None,
        request_id: None,
        effective_at: chrono::Utc::now(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let database_url = args.database.resolve()?;
    let settings = Settings {
        database_url,
        listen: args.listen,
        readiness_lag_max: args.readiness_lag_max,
        runner: RunnerConfig::default(),
        data_dir: args.database.data_dir.clone(),
        keys: KeyConfig {
            signing_key: args.signing_key,
            secret_hash_key: args.secret_hash_key,
            master_key: args.master_key,
        },
        stripe: StripeConfig {
            secret_key: args.stripe_secret_key,
            webhook_secret: args.stripe_webhook_secret,
            api_base: args.stripe_api_base,
        },
        public_url: args.public_url,
        legacy_public_key: args.legacy_public_key,
        mail: MailConfig {
            smtp_url: args.smtp_url,
            from: Some(args.mail_from),
        },
        support_email: args.support_email,
        self_refund_window_days: args.self_refund_days,
        seal_interval: (args.seal_interval_secs > 0)
            .then(|| Duration::from_secs(args.seal_interval_secs)),
        lifecycle_interval: (args.lifecycle_interval_secs > 0)
            .then(|| Duration::from_secs(args.lifecycle_interval_secs)),
        server: ServerLimits {
            header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
            body_read_timeout: Duration::from_secs(args.body_read_timeout_secs),
            connections_max: usize::try_from(args.connections_max).unwrap_or(usize::MAX),
        },
    };
    let application = Application::build(settings)
        .await
        .context("starting the service")?;
    // The signal handlers are installed before the service says it serves: a SIGTERM sent the
    // moment it does is a graceful shutdown, never the default kill.
    let shutdown = shutdown_signal().context("listening for shutdown signals")?;
    tracing::info!(
        address = %application.local_addr(),
        store = application.state().store.backend(),
        "pulse-account is serving"
    );
    application
        .run_until_stopped(shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("pulse-account stopped");
    Ok(())
}

/// Installs the Ctrl-C (SIGINT) and SIGTERM handlers now; the future completes on either.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down: finishing in-flight requests and projection batches");
    })
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing in-flight requests and projection batches");
    })
}

async fn projections_status(database: &DatabaseArgs) -> anyhow::Result<()> {
    let store = open_store(database.resolve()?.expose())
        .await
        .context("opening the database")?;
    let head = store.head_position().await?;
    println!("log head position: {head}");
    println!(
        "{:<24} {:>10} {:<9} {:>12} {:>12}",
        "projection", "generation", "status", "checkpoint", "lag"
    );
    for fold in registry() {
        let generations = store.projection_generations(fold.name()).await?;
        if generations.is_empty() {
            println!(
                "{:<24} {:>10} {:<9} {:>12} {:>12}",
                fold.name(),
                "-",
                "not run",
                0,
                head.0
            );
        }
        for generation in generations {
            let status = serde_json::to_value(generation.status)?;
            println!(
                "{:<24} {:>10} {:<9} {:>12} {:>12}",
                fold.name(),
                generation.generation,
                status.as_str().unwrap_or("?"),
                generation.checkpoint.0,
                (head.0 - generation.checkpoint.0).max(0)
            );
        }
    }
    Ok(())
}

async fn rebuild(name: &str, keyed: &KeyedDatabaseArgs) -> anyhow::Result<()> {
    let folds = registry();
    let Some(fold) = folds.iter().find(|fold| fold.name() == name) else {
        let names: Vec<_> = folds.iter().map(|fold| fold.name()).collect();
        bail!(
            "unknown projection {name:?}; known projections: {}",
            names.join(", ")
        );
    };
    let (store, _) = keyed_store(keyed).await?;
    let store: Arc<dyn crate::engine::store::Store> = store;
    let runner = Runner::new(
        Arc::clone(&store),
        Arc::clone(fold),
        RunnerConfig::rebuild(),
        Arc::new(Metrics::default()),
    )?;
    let started = Instant::now();
    let mut last_print = Instant::now();
    let mut progress = |checkpoint: aggregates::log::Position, head: aggregates::log::Position| {
        if last_print.elapsed() >= PROGRESS_INTERVAL {
            let percent = if head.0 > 0 {
                (checkpoint.0.min(head.0) * 100) / head.0
            } else {
                100
            };
            eprintln!("rebuilding {name}: position {checkpoint} of {head} ({percent}%)");
            last_print = Instant::now();
        }
    };
    let report = runner
        .rebuild(&mut progress)
        .await
        .with_context(|| format!("rebuilding {name}"))?;
    let checkpoint = active_checkpoint(store.as_ref(), name).await?;
    println!(
        "rebuilt {name}: generation {} active, {} events folded up to position {} in {:.1?} (checkpoint now {checkpoint})",
        report.generation,
        report.events,
        report.checkpoint,
        started.elapsed()
    );
    Ok(())
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let store = open_store(args.database.resolve()?.expose())
        .await
        .context("opening the database")?;
    let keys = KeyMaterial::load(
        &KeyConfig {
            signing_key: args.signing_key,
            secret_hash_key: None,
            master_key: None,
        },
        &args.database.data_dir,
    )?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&args.output)
        .with_context(|| format!("creating {} (it must not exist yet)", args.output.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let head = store.head_position().await?;
    let mut last_print = Instant::now();
    let end = args.to.map_or(head.0, |to| to.min(head.0));
    let mut progress = |reached: Position| {
        if last_print.elapsed() >= PROGRESS_INTERVAL || reached.0 >= end {
            eprint!(
                "\r{}",
                progress_bar(reached.0 - args.after, end - args.after)
            );
            last_print = Instant::now();
        }
    };
    let to = args.to.map(Position);
    let manifest = audit::export(
        store.as_ref(),
        &keys.signer,
        Position(args.after),
        to,
        args.format,
        &mut out,
        &mut progress,
    )
    .await
    .context("exporting the log")?;
    eprintln!();
    let public_key = keys.signer.jwks()["keys"][0]["x"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    println!(
        "exported {} records (positions after {} up to {}) to {}; final hash {}",
        manifest.count,
        manifest.after_position,
        manifest.to_position,
        args.output.display(),
        manifest.final_hash
    );
    println!("public key: {public_key}");
    println!(
        "verify with: pulse-account verify {} --public-key={public_key}",
        args.output.display()
    );
    Ok(())
}

/// A one-line progress bar: `[#######-------------]  35% 3500/10000`.
fn progress_bar(done: i64, total: i64) -> String {
    const WIDTH: i64 = 30;
    let total = total.max(1);
    let done = done.clamp(0, total);
    let filled = (done * WIDTH / total) as usize;
    format!(
        "[{}{}] {:>3}% {done}/{total}",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        done * 100 / total
    )
}

fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    match audit::verify(std::io::BufReader::new(file), &args.public_key) {
        Ok(manifest) => {
            println!(
                "export verifies: {} records, positions after {} up to {}, final hash {}, signed by {}",
                manifest.count, manifest.after_position, manifest.to_position, manifest.final_hash, manifest.key_id
            );
            Ok(())
        }
        Err(error) => bail!(
            "export does NOT verify at line {}: {}",
            error.line,
            error.reason
        ),
    }
}

/// The store, opening personal data with the configured keys, and the keys.
async fn keyed_store(
    args: &KeyedDatabaseArgs,
) -> anyhow::Result<(Arc<PersonalDataStore>, Arc<KeyMaterial>)> {
    let store = open_store(args.database.resolve()?.expose())
        .await
        .context("opening the database")?;
    let keys = Arc::new(KeyMaterial::load(
        &KeyConfig {
            signing_key: args.signing_key.clone(),
            secret_hash_key: args.secret_hash_key.clone(),
            master_key: args.master_key.clone(),
        },
        &args.database.data_dir,
    )?);
    Ok((
        Arc::new(PersonalDataStore::new(store, Arc::clone(&keys))),
        keys,
    ))
}

async fn erase(args: EraseArgs) -> anyhow::Result<()> {
    let (store, _) = keyed_store(&args.keyed).await?;
    let mut last_print = Instant::now();
    let mut progress = |name: &'static str, reached: Position, head: Position| {
        if last_print.elapsed() >= PROGRESS_INTERVAL || reached >= head {
            eprint!(
                "\rrebuilding {name:<24} {}",
                progress_bar(reached.0, head.0)
            );
            last_print = Instant::now();
        }
    };
    let report = crate::flows::erasure::erase(
        store,
        &registry(),
        Arc::new(Metrics::default()),
        &args.email,
        &args.reason,
        cli_metadata(),
        &mut progress,
    )
    .await
    .context("erasing (run the same command again to finish)")?;
    let files = crate::gateways::mail::forget_files(&args.keyed.database.data_dir, &args.email);
    eprintln!();
    println!(
        "erased person {}: recorded at position {}, {} key(s) destroyed, {} snapshot(s) deleted, {} read model(s) rebuilt, {} outbox file(s) deleted",
        report.person_id,
        report.position,
        report.keys_destroyed.len(),
        report.snapshots_deleted,
        report.rebuilt.len(),
        files
    );
    Ok(())
}

async fn audit_seal(args: KeyedDatabaseArgs) -> anyhow::Result<()> {
    let (store, keys) = keyed_store(&args).await?;
    match audit::seal(store.as_ref(), &keys.signer, chrono::Utc::now())
        .await
        .context("sealing the log")?
    {
        Some(seal) => println!(
            "sealed {} events up to position {}: chain {}",
            seal.count, seal.position, seal.chain_hash
        ),
        None => println!("nothing committed since the newest seal"),
    }
    Ok(())
}

async fn audit_check(args: KeyedDatabaseArgs) -> anyhow::Result<()> {
    let (store, keys) = keyed_store(&args).await?;
    let public_key = keys.signer.jwks()["keys"][0]["x"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match audit::check(store.as_ref(), &public_key)
        .await
        .context("checking the log")?
    {
        Ok(checked) => {
            println!("the log matches all {checked} seals");
            Ok(())
        }
        Err(mismatch) => bail!("{mismatch}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{progress_bar, Cli};
    use clap::Parser;

    #[test]
    fn parsed_secrets_and_database_urls_never_print() {
        let cli = Cli::try_parse_from([
            "pulse-account",
            "serve",
            "--database-url",
            "postgres://ledger:db-password@db.internal/ledger",
            "--signing-key",
            "k1:signing-seed-text",
            "--secret-hash-key",
            "hash-key-text",
            "--master-key",
            "master-key-text",
            "--stripe-secret-key",
            "sk_live_stripe-text",
            "--stripe-webhook-secret",
            "whsec_webhook-text",
        ])
        .expect("the command line parses");
        let printed = format!("{cli:?}");
        for secret in [
            "db-password",
            "signing-seed-text",
            "hash-key-text",
            "master-key-text",
            "stripe-text",
            "webhook-text",
        ] {
            assert!(!printed.contains(secret), "{secret} printed in {printed}");
        }
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn the_progress_bar_fills_in_proportion_and_never_overflows() {
        assert_eq!(
            progress_bar(35, 100),
            format!("[{}{}]  35% 35/100", "#".repeat(10), "-".repeat(20))
        );
        assert_eq!(progress_bar(0, 0), format!("[{}]   0% 0/1", "-".repeat(30)));
        assert_eq!(
            progress_bar(150, 100),
            format!("[{}] 100% 100/100", "#".repeat(30))
        );
    }
}
