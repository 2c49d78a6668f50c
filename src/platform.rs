//! Start-up and shutdown of the planes: opens the store, loads the server secret,
//! creates the bootstrap admin token, binds every listener before serving anything,
//! and wires the configuration bus between the admin API and the gateway.
//!
//! A gateway-only node (`turnpike gateway`) does not need its database to start: it
//! serves its last-known-good snapshot file, checks API keys against the
//! last-known-good credentials file beside it, and connects to the store in the
//! background, retrying until it can.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use turnpike_bus::credentials::InProcessCredentials;
use turnpike_bus::{BusError, ConfigBus, InProcessBus};
use turnpike_domain::secrets::{KeyHasher, generate_secret};
use turnpike_store::{Actor, Store, snapshots, tokens};

use crate::config::{Config, Plane, SecretSource, ServerKey};

/// File in the data directory holding the bootstrap admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// How often a gateway looks for a newer snapshot in the store.
const SNAPSHOT_POLL: Duration = Duration::from_secs(1);
/// Longest pause between two attempts of a gateway-only node to reach its database.
const STORE_RETRY_MAX: Duration = Duration::from_secs(30);

/// Connects to the configured database and applies pending migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let url = config.database_url();
    if !config.database.url.as_ref().is_some_and(|u| u.is_postgres()) {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    }
    let store = Store::connect(&url, config.database.max_connections).await.context("connecting to the database")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store.with_target_policy(config.upstreams.target_policy()))
}

/// Writes `contents` to a new file readable only by its owner.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// The keyed hasher for API keys and admin tokens, from the configured secret; the
/// default secret file is created with a random secret on first start.
pub fn load_secret(config: &Config) -> anyhow::Result<KeyHasher> {
    let key: ServerKey = match config.secret_source() {
        SecretSource::Inline(key) => key.clone(),
        SecretSource::File { path, is_default } => match std::fs::read_to_string(&path) {
            Ok(text) => text.parse().map_err(|e| anyhow::anyhow!("secret.key_file ({}): {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && is_default => {
                std::fs::create_dir_all(&config.data_dir)?;
                let hex = hex_encode(&generate_secret());
                write_private(&path, &format!("{hex}\n"))?;
                hex.parse().map_err(|e: String| anyhow::anyhow!(e))?
            }
            Err(e) => bail!("secret.key_file ({}): {e}", path.display()),
        },
    };
    KeyHasher::new(key.as_bytes()).map_err(|e| anyhow::anyhow!("secret: {e}"))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates the first admin token when none exists, prints it once and saves it
/// (mode 0600) in the data directory for scripts such as the quickstart.
async fn bootstrap_admin(config: &Config, store: &Store, hasher: &KeyHasher) -> anyhow::Result<()> {
    let change = store.change(&Actor("bootstrap".into())).await?;
    let created = tokens::bootstrap(&change, hasher).await?;
    change.commit().await?;
    if let Some(created) = created {
        std::fs::create_dir_all(&config.data_dir)?;
        let path = config.data_dir.join(ADMIN_TOKEN_FILE);
        write_private(&path, &format!("{}\n", created.token))?;
        println!("Bootstrap admin token (shown once; also saved to {}):\n  {}", path.display(), created.token);
    }
    Ok(())
}

/// Publishes the newest stored snapshot if it is newer than what the bus holds.
async fn publish_latest(store: &Store, bus: &InProcessBus) -> anyhow::Result<()> {
    let current = bus.latest().map_or(0, |current| current.version);
    if let Some(snapshot) = snapshots::newer_than(store.db(), current).await? {
        match bus.publish(Arc::new(snapshot)).await {
            // Another publisher (this process's admin API) got there first.
            Ok(()) | Err(BusError::Stale { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn bind(name: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("{name}: cannot listen on {addr}"))
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = ctrl_c => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

fn on_shutdown(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Fills `credentials` from the last-known-good file of a gateway-only node started
/// without its database; the store's credentials replace them once it answers.
fn load_last_known_credentials(file: &turnpike_gateway::LastKnownCredentials, credentials: &InProcessCredentials) {
    let path = file.path().display();
    match file.load_into(credentials) {
        Ok(count) => tracing::warn!(
            count,
            path = %path,
            "checking API keys against the last-known-good credentials until the database answers"
        ),
        Err(turnpike_gateway::LoadError::Missing) => {
            tracing::info!(path = %path, "no last-known-good credentials; keyed APIs refuse every key until the database answers")
        }
        Err(e) => tracing::warn!(path = %path, error = %e, "ignored the last-known-good credentials file"),
    }
}

/// Attempts of a gateway-only node to open its store, spaced out with a doubling
/// pause (up to [`STORE_RETRY_MAX`]) so an outage does not flood the log.
#[derive(Default)]
struct Reconnect {
    failures: u32,
    next: Option<tokio::time::Instant>,
}

impl Reconnect {
    /// Opens the store if it is time to try; `None` when it is not or it failed.
    async fn attempt(&mut self, config: &Config) -> Option<Store> {
        if self.next.is_some_and(|next| tokio::time::Instant::now() < next) {
            return None;
        }
        match open_store(config).await {
            Ok(store) => {
                if self.failures > 0 {
                    tracing::info!(attempts = self.failures + 1, "connected to the database");
                }
                Some(store)
            }
            Err(e) => {
                self.failures += 1;
                let pause = SNAPSHOT_POLL.saturating_mul(1 << self.failures.min(5)).min(STORE_RETRY_MAX);
                self.next = Some(tokio::time::Instant::now() + pause);
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in = ?pause,
                    "cannot reach the database; the gateway serves its current configuration meanwhile"
                );
                None
            }
        }
    }
}

/// Runs `planes` until SIGINT/SIGTERM, then shuts them down gracefully.
pub async fn serve(config: &Config, planes: &[Plane]) -> anyhow::Result<()> {
    let runs = |p: Plane| planes.contains(&p);
    // Bind everything first: a taken port stops start-up before anything serves.
    let mut listeners = Vec::new();
    for (name, addr) in config.listeners(planes) {
        listeners.push((name, bind(name, addr).await?));
    }
    let mut take = |wanted: &str| {
        let i = listeners.iter().position(|(n, _)| *n == wanted).expect("every plane's listener is bound above");
        listeners.remove(i).1
    };

    // The admin API and portal cannot work without the store; a gateway-only node
    // connects in the background (below) and meanwhile serves its last-known-good file.
    let gateway_only = planes == [Plane::Gateway];
    let store = if gateway_only { None } else { Some(Arc::new(open_store(config).await?)) };
    let hasher = load_secret(config)?;
    let bus = Arc::new(InProcessBus::new());
    let credentials = Arc::new(InProcessCredentials::new());
    if let Some(store) = &store {
        if runs(Plane::Admin) {
            bootstrap_admin(config, store, &hasher).await?;
            // Compile the first snapshot of a fresh store (or one changed by an older
            // version of Turnpike) so gateways can become ready.
            if let Some(s) = store.change(&Actor("system".into())).await?.commit().await? {
                tracing::info!(version = s.version, "compiled configuration snapshot");
            }
        }
        publish_latest(store, &bus).await?;
        credentials.replace_all(turnpike_store::credentials::load_all(store.db()).await?);
    }
    // The gateway keeps the credentials beside its last-known-good snapshot, so that a
    // node that starts without its database still knows the keys (hashed) it last had.
    let credentials_file = runs(Plane::Gateway).then(|| {
        turnpike_gateway::LastKnownCredentials::new(turnpike_gateway::LastKnownCredentials::beside(
            &config.gateway_snapshot_file(),
        ))
    });
    if let (None, Some(file)) = (&store, &credentials_file) {
        load_last_known_credentials(file, &credentials);
    }
    if let Some(file) = &credentials_file {
        // Saves the store's credentials now (the file may hold keys revoked since), then
        // every change, whether made by this process's admin API or read by the poll below.
        file.spawn_writer(&credentials);
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let mut urls = Vec::new();

    if runs(Plane::Gateway) {
        let gateway = turnpike_gateway::ConfigStore::with_consumers(turnpike_gateway::consumer::Consumers {
            credentials: credentials.clone(),
            hasher: Some(hasher.clone()),
            limiter: Arc::new(turnpike_gateway::ratelimit::LocalLimiter::default()),
        })
        .with_target_policy(config.upstreams.target_policy())
        // The portal's "try it" calls the gateway from the portal's pages.
        .with_docs_origins(config.docs_origins(runs(Plane::Portal)))
        // Before the bus delivers anything: a node whose control plane is down serves
        // the configuration it last had.
        .with_last_known_good(turnpike_gateway::LastKnownGood::new(config.gateway_snapshot_file()));
        // The follower ends when the bus is dropped, at shutdown.
        tokio::spawn(gateway.clone().follow(bus.subscribe()));
        {
            // Changes made by other processes (other admin nodes, `config import`)
            // arrive through the shared store; this process's own admin writes are
            // published at once and make the poll a no-op.
            let (bus, credentials, mut stop) = (bus.clone(), credentials.clone(), stop_rx.clone());
            let (mut store, config) = (store.clone(), config.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SNAPSHOT_POLL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut reconnect = Reconnect::default();
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    if store.is_none() {
                        store = reconnect.attempt(&config).await.map(Arc::new);
                    }
                    let Some(db) = store.clone() else { continue };
                    if let Err(e) = publish_latest(&db, &bus).await {
                        tracing::warn!(error = %e, "could not read the newest snapshot; keeping the current one");
                    }
                    // Whole-table reload: simple and bounded by the number of keys;
                    // the Redis credential store replaces it for clusters.
                    match turnpike_store::credentials::load_all(db.db()).await {
                        Ok(all) => credentials.replace_all(all),
                        Err(e) => tracing::warn!(error = %e, "could not reload credentials; keeping the current ones"),
                    }
                }
            });
        }
        let proxy = take("gateway.listen");
        let status = take("gateway.status_listen");
        urls.push(format!("gateway       http://{}", proxy.local_addr()?));
        urls.push(format!("status        http://{}/status", status.local_addr()?));
        let shutdown = on_shutdown(&stop_rx);
        let (gw, settings) = (gateway.clone(), config.gateway.proxy_settings());
        tasks.spawn(async move { Ok(turnpike_gateway::serve_proxy(proxy, gw, settings, shutdown).await?) });
        if config.gateway.tls_listen.is_some() {
            let tls = take("gateway.tls_listen");
            urls.push(format!("gateway TLS   https://{}", tls.local_addr()?));
            let shutdown = on_shutdown(&stop_rx);
            let (gw, settings) = (gateway.clone(), config.gateway.proxy_settings());
            tasks.spawn(async move { Ok(turnpike_gateway::serve_tls_proxy(tls, gw, settings, shutdown).await?) });
        }
        let shutdown = on_shutdown(&stop_rx);
        tasks.spawn(async move { Ok(turnpike_gateway::serve_status(status, gateway, shutdown).await?) });
    }
    if runs(Plane::Admin) {
        let listener = take("admin.listen");
        let addr = listener.local_addr()?;
        urls.push(format!("admin API     http://{addr}/admin/v1   (docs: http://{addr}/admin/docs)"));
        let store = store.clone().expect("the admin plane opens the store at start");
        let state = turnpike_admin_api::AdminState::new(store, bus.clone(), hasher.clone(), credentials.clone());
        let app = turnpike_admin_api::router(state, config.admin.max_body_bytes);
        let shutdown = on_shutdown(&stop_rx);
        tasks.spawn(async move { Ok(axum::serve(listener, app).with_graceful_shutdown(shutdown).await?) });
    }
    if runs(Plane::Portal) {
        let listener = take("portal.listen");
        urls.push(format!("portal        http://{}", listener.local_addr()?));
        let store = store.clone().expect("the portal opens the store at start");
        let publisher = turnpike_store::publish::Publisher::new(store.clone(), bus.clone(), credentials.clone());
        let portal = turnpike_portal::PortalState::new(store, hasher.clone(), config.portal_settings()?, publisher)?;
        let shutdown = on_shutdown(&stop_rx);
        tasks.spawn(async move { Ok(turnpike_portal::serve(listener, portal, shutdown).await?) });
    }
    println!("Turnpike is running:");
    for url in &urls {
        println!("  {url}");
    }

    // Run until a signal, or until a plane fails.
    let failure = tokio::select! {
        () = termination() => None,
        Some(res) = tasks.join_next() => Some(res),
    };
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let mut result = match failure {
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(e.into()),
        _ => Ok(()),
    };
    while let Some(res) = tasks.join_next().await {
        if let (Ok(()), Ok(Err(e))) = (&result, res) {
            result = Err(e);
        }
    }
    result
}
