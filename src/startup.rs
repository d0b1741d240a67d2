//! Building and running the service: open the store, migrate, bind, serve, run the projection
//! runners, and shut all of it down gracefully. `main` and the tests boot through the same
//! [`Application::build`], the tests on port 0.

use crate::crypto::{KeyConfig, KeyError, KeyMaterial, SecretText};
use crate::engine::personal_data::PersonalDataStore;
use crate::engine::projection::runner::{Runner, RunnerConfig};
use crate::engine::projection::{registry, ProjectionFold};
use crate::engine::store::upcast::Upcasters;
use crate::engine::store::{self, Store, StoreError};
use crate::flows::exchange::LegacyVerifier;
use crate::flows::license_cache::LicenseCache;
use crate::flows::mail::Outbox;
use crate::flows::queue::OffPathRequests;
use crate::flows::recovery::Recovery;
use crate::flows::sign_in::SignInQueue;
use crate::gateways::mail::{MailConfig, MailError, Mailer};
use crate::gateways::stripe::{StripeConfig, StripeGateway, StripeGatewayError};
use crate::http::client_limit::ClientLimit;
use crate::http::server::{serve, ServerLimits};
use crate::http::sign_in::SIGN_IN_REQUESTS_PER_MINUTE_MAX;
use crate::http::{router, AppState, SharedState};
use crate::metrics::Metrics;
use aggregates::email_code::RecoveryJob;
use aggregates::ids::Email;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long shutdown waits for projection runners to finish their current batch.
const RUNNER_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// What the service needs to start, already validated by the CLI.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `postgres://…` or `sqlite://…` (it may hold a password: it never prints).
    pub database_url: SecretText,
    /// The address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Most positions a projection may lag while the service reports ready.
    pub readiness_lag_max: i64,
    /// How projection runners pace themselves.
    pub runner: RunnerConfig,
    /// The local data directory (development keys).
    pub data_dir: std::path::PathBuf,
    /// Configured keys; missing ones come from the data directory's development file.
    pub keys: KeyConfig,
    /// Stripe.
    pub stripe: StripeConfig,
    /// The public base URL of this service.
    pub public_url: String,
    /// The v5 Ed25519 public key (base64url) that verifies legacy license tokens.
    pub legacy_public_key: Option<String>,
    /// How often the committed log is sealed; `None` never (the `audit seal` command still can).
    pub seal_interval: Option<Duration>,
    /// How often the timed rules (end of grace, scheduled changes, stuck provisioning) are swept;
    /// `None` never.
    pub lifecycle_interval: Option<Duration>,
    /// How the HTTP server bounds its clients.
    pub server: ServerLimits,
    /// How email leaves the service.
    pub mail: MailConfig,
    /// Where the portal sends customers who need a person.
    pub support_email: String,
    /// Days after a license's first payment in which its owner may refund it.
    pub self_refund_window_days: u32,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stripe is misconfigured.
    #[error(transparent)]
    Stripe(#[from] StripeGatewayError),
    /// Keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Email is misconfigured.
    #[error(transparent)]
    Mail(#[from] MailError),
    /// The catalog could not be published or read back.
    #[error("the plan catalog could not be published or read")]
    Catalog(#[from] crate::flows::FlowError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A built service, bound and migrated, not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    mailer: Arc<Mailer>,
    sign_in_requests: OffPathRequests<Email>,
    recovery_requests: OffPathRequests<(RecoveryJob, Email)>,
    runner_config: RunnerConfig,
    seal_interval: Option<Duration>,
    lifecycle_interval: Option<Duration>,
    server: ServerLimits,
}

/// Opens the store a URL names and applies migrations.
pub async fn open_store(database_url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let store = store::open(database_url, Arc::new(Upcasters::domain())).await?;
    store.migrate().await?;
    Ok(store)
}

impl Application {
    /// Opens and migrates the store and binds the listener.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let keys = KeyMaterial::load(&settings.keys, &settings.data_dir)?;
        if let Some(file) = &keys.dev_keys_file {
            tracing::warn!(
                file = %file.display(),
                key_id = keys.signer.key_id(),
                "DEVELOPMENT KEYS in use: grants are signed with a key from the data directory; configure --signing-key, --secret-hash-key and --master-key in production"
            );
        }
        let stripe = stripe(&settings, &keys)?;
        let mailer = mailer(&settings)?;
        let legacy = settings
            .legacy_public_key
            .as_deref()
            .map(legacy_verifier)
            .transpose()?;
        let keys = Arc::new(keys);
        let personal = Arc::new(PersonalDataStore::new(
            open_store(settings.database_url.expose()).await?,
            Arc::clone(&keys),
        ));
        let store: Arc<dyn Store> = Arc::clone(&personal) as Arc<dyn Store>;
        crate::flows::catalog::publish_shipped(store.as_ref(), system_metadata()).await?;
        let catalogs = crate::flows::catalog::history(store.as_ref()).await?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    address: settings.listen,
                    source,
                })?;
        let projections: Arc<[Arc<dyn ProjectionFold>]> = registry().into();
        let license_cache = Arc::new(LicenseCache::new(
            store.as_ref(),
            store.head_position().await?,
        ));
        let (sign_in_queue, sign_in_requests) = SignInQueue::new();
        let (recovery, recovery_requests) = Recovery::new(
            personal,
            settings.data_dir.clone(),
            settings.self_refund_window_days,
        );
        let state = AppState::new(SharedState {
            store,
            projections,
            metrics: Arc::new(Metrics::default()),
            readiness_lag_max: settings.readiness_lag_max,
            keys,
            catalog: catalogs.current(),
            catalogs: Arc::new(catalogs),
            stripe: Arc::new(stripe),
            public_url: settings.public_url.into(),
            legacy,
            token_bindings: Arc::default(),
            license_cache,
            body_read_timeout: settings.server.body_read_timeout,
            sign_in_queue: Arc::new(sign_in_queue),
            sign_in_limit: Arc::new(ClientLimit::new(
                SIGN_IN_REQUESTS_PER_MINUTE_MAX,
                Duration::from_secs(60),
            )),
            support_email: settings.support_email.into(),
            recovery: Arc::new(recovery),
        });
        Ok(Application {
            listener,
            state,
            mailer,
            sign_in_requests,
            recovery_requests,
            runner_config: settings.runner,
            seal_interval: settings.seal_interval,
            lifecycle_interval: settings.lifecycle_interval,
            server: settings.server,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// The shared state, for in-process tests.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish, and
    /// stops the projection runners after their current batch.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_runners, stopped) = watch::channel(false);
        let mut runners = Vec::new();
        for fold in self.state.projections.iter() {
            let runner = Runner::new(
                Arc::clone(&self.state.store),
                Arc::clone(fold),
                self.runner_config.clone(),
                Arc::clone(&self.state.metrics),
            )
            .map_err(std::io::Error::other)?;
            runners.push(tokio::spawn(runner.run(stopped.clone())));
        }
        if let Some(interval) = self.seal_interval {
            let state = self.state.clone();
            runners.push(tokio::spawn(seal_periodically(
                state,
                interval,
                stopped.clone(),
            )));
        }
        if let Some(interval) = self.lifecycle_interval {
            runners.push(tokio::spawn(crate::flows::lifecycle::sweep_periodically(
                Arc::clone(&self.state.store),
                Arc::clone(&self.state.catalog),
                interval,
                stopped.clone(),
            )));
        }
        runners.push(tokio::spawn(crate::flows::sign_in::decide_requests(
            self.sign_in_requests,
            Arc::clone(&self.state.store),
            Arc::clone(&self.state.keys),
            Arc::clone(&self.state.catalog),
            stopped.clone(),
        )));
        runners.push(tokio::spawn(
            Arc::clone(&self.state.license_cache)
                .follow(Arc::clone(&self.state.store), stopped.clone()),
        ));
        runners.push(tokio::spawn(crate::flows::recovery::decide_requests(
            self.recovery_requests,
            Arc::clone(&self.state.store),
            Arc::clone(&self.state.keys),
            Arc::clone(&self.state.catalog),
            stopped.clone(),
        )));
        let outbox = Outbox {
            store: Arc::clone(&self.state.store),
            keys: Arc::clone(&self.state.keys),
            mailer: self.mailer,
            catalog: Arc::clone(&self.state.catalog),
            public_url: self.state.public_url.to_string(),
            metrics: Arc::clone(&self.state.metrics),
        };
        runners.push(tokio::spawn(outbox.run(stopped.clone())));
        let app = router(self.state);
        let served = serve(self.listener, app, &self.server, shutdown).await;
        let _ = stop_runners.send(true);
        for runner in runners {
            if tokio::time::timeout(RUNNER_SHUTDOWN_WAIT, runner)
                .await
                .is_err()
            {
                tracing::warn!(
                    "a projection runner did not stop in time; its open batch rolls back"
                );
            }
        }
        served
    }
}

/// Stripe, or local checkout mode (said loudly) when no secret key is configured.
fn stripe(settings: &Settings, keys: &KeyMaterial) -> Result<StripeGateway, StripeGatewayError> {
    let local_webhook_secret = keys
        .hasher
        .derive("whsec_local_", "local checkout webhooks");
    let stripe = StripeGateway::new(
        &settings.stripe,
        &settings.public_url,
        local_webhook_secret.expose(),
    )?;
    if stripe.local_mode() {
        tracing::warn!(
            "LOCAL CHECKOUT MODE: no Stripe secret key is configured; checkout completes on a page of this service and takes no money"
        );
    }
    Ok(stripe)
}

/// The verifier of v5 license tokens under the configured public key.
fn legacy_verifier(key: &str) -> Result<Arc<LegacyVerifier>, KeyError> {
    LegacyVerifier::new(key)
        .map(Arc::new)
        .map_err(|reason| KeyError::Invalid {
            what: "legacy public key",
            reason,
        })
}

/// Where email goes; without SMTP, says loudly that it is written to files.
fn mailer(settings: &Settings) -> Result<Arc<Mailer>, MailError> {
    let mailer = Mailer::new(&settings.mail, &settings.data_dir)?;
    if mailer.writes_files() {
        tracing::warn!(
            folder = %settings.data_dir.join(crate::gateways::mail::OUTBOX_DIR_NAME).display(),
            "NO SMTP SERVER: email is written as .eml files to the outbox folder; configure --smtp-url to send it"
        );
    }
    Ok(Arc::new(mailer))
}

/// Metadata of what the service does on its own at start.
fn system_metadata() -> aggregates::log::EventMetadata {
    aggregates::log::EventMetadata {
        actor: String::from("system:startup"),
        causation_id: None,
        correlation_id: None,
        request_id: None,
        effective_at: chrono::Utc::now(),
    }
}

/// Seals the committed log every `interval` until `stopped` turns true. A failed seal is logged
/// and retried at the next tick: seals are evidence, never on the request path.
async fn seal_periodically(
    state: AppState,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    while !*stopped.borrow() {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.changed() => continue,
        }
        match crate::engine::audit::seal(
            state.store.as_ref(),
            &state.keys.signer,
            chrono::Utc::now(),
        )
        .await
        {
            Ok(Some(seal)) => {
                tracing::info!(position = %seal.position, count = seal.count, "sealed the log")
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, "sealing the log failed; retrying at the next interval")
            }
        }
    }
}
