//! doorcode-server: the depot's server. Issues delivery codes (derived, never
//! stored), sends notices through an outbox, builds signed manifests for
//! handsets and ingests their signed confirmations.
//!
//! Start it in-process with [`start`]; `doorcode serve` (in `doorcode-tools`)
//! does the same. This library only serves: the demo, the desktop handset and
//! the import are clients, in `tools/`.

pub mod api;
pub mod app;
pub mod client_addr;
pub mod config;
pub mod data_dir;
pub mod domain;
pub mod error;
pub mod fleet;
pub mod keys;
pub mod limit;
pub mod metrics;
pub mod notices;
pub mod retention;
pub mod serve;
pub mod storage;
pub mod validate;
pub mod web;

pub use app::App;
pub use config::Config;

use std::net::SocketAddr;
use std::sync::Arc;
use storage::Storage;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    Fleet(#[from] fleet::FleetError),
    #[error("database: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {err}")]
    Bind {
        addr: SocketAddr,
        err: std::io::Error,
    },
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("data directory: {0}")]
    Modes(#[from] data_dir::ModeError),
}

/// A running server. Drop or call [`ServerHandle::shutdown`] to stop it.
pub struct ServerHandle {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// Where `--metrics-listen` bound, if given.
    pub metrics_addr: Option<SocketAddr>,
    /// The dispatch token, only on the first start of a data dir (it is stored
    /// hashed and cannot be shown again).
    pub admin_token: Option<String>,
    pub app: App,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    sender: JoinHandle<()>,
}

impl ServerHandle {
    /// `http://addr`, the base URL for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop: in-flight requests finish; the notice sender is stopped even
    /// mid-send, like a crash would (a claimed notice comes back after its
    /// lease and is sent again, so none is lost).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        self.sender.abort();
        let _ = self.sender.await;
    }

    /// Wait until the server stops by itself (it normally never does).
    pub async fn wait(&mut self) {
        let _ = (&mut self.server).await;
    }
}

/// The SQLite file `--database` names, None for PostgreSQL.
fn sqlite_path(cfg: &Config) -> Result<Option<std::path::PathBuf>, StartError> {
    match cfg.database.as_deref() {
        None | Some("sqlite:") | Some("") => Ok(Some(cfg.data_dir.join("doorcode.db"))),
        Some(s) if s.starts_with("sqlite:") => {
            Ok(Some(std::path::PathBuf::from(&s["sqlite:".len()..])))
        }
        Some(s) if s.starts_with("postgres://") || s.starts_with("postgresql://") => Ok(None),
        Some(_) => Err(StartError::Config(
            "--database must be sqlite:PATH or postgres://…".into(),
        )),
    }
}

/// Open the storage named by `--database`: SQLite (a file, created 0600 with
/// its `-wal` and `-shm`) or PostgreSQL (`postgres://…`, see
/// `storage::postgres` for the URL parameters).
pub async fn open_storage(cfg: &Config) -> Result<Arc<dyn Storage>, StartError> {
    let Some(path) = sqlite_path(cfg)? else {
        let url = cfg.database.as_deref().unwrap_or_default();
        return Ok(Arc::new(
            storage::postgres::PostgresStorage::connect(url).await?,
        ));
    };
    // Created private before SQLite sees it: SQLite gives -wal and -shm the
    // database file's mode.
    data_dir::create_private_file(&path)?;
    let storage = storage::sqlite::SqliteStorage::open(&path)?;
    data_dir::secure_sqlite(&path)?;
    Ok(Arc::new(storage))
}

async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|err| StartError::Bind { addr, err })?;
    let bound = listener
        .local_addr()
        .map_err(|err| StartError::Bind { addr, err })?;
    Ok((listener, bound))
}

/// Load keys, open storage, bind, and serve in the background.
pub async fn start(cfg: Config) -> Result<ServerHandle, StartError> {
    let dir = &cfg.data_dir;
    // Personal data and secrets live here: owner only, whatever the umask
    // and whoever made the directory.
    data_dir::secure(dir)?;
    // The database first: it says which secrets exist already, so a node
    // with an empty data dir refuses instead of making keys of its own.
    let storage = open_storage(&cfg).await?;
    let fleet::Secrets {
        code_key,
        track_key,
        admin_hash,
        admin_token,
        signer,
    } = fleet::load_secrets(dir, storage.as_ref(), cfg.now()).await?;
    fleet::convert_clear_track_tokens(storage.as_ref(), &track_key).await?;
    data_dir::secure(dir)?;
    let channels = notices::Channel::from_config(&cfg).map_err(StartError::Config)?;
    // reqwest is built without a bundled crypto provider; use ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Webhooks follow no redirect: a 307 would re-post the notice (code
    // included) to wherever the gateway points, a 302 would turn it into a
    // body-less GET. A 3xx is a failed send.
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| StartError::Config(format!("HTTP client: {e}")))?;
    let (listener, addr) = bind(cfg.listen).await?;
    let metrics_listener = match cfg.metrics_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|(_, a)| *a);
    let public_url = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    if let Some(c) = cfg.trusted_proxies.iter().find(|c| c.is_everything()) {
        tracing::warn!(network = ?c, "--trusted-proxies covers every address: any client can choose the address its rate limits count under");
    }
    let limits = cfg.conn_limits();
    let metrics = Arc::new(metrics::Metrics::default());
    let cfg = Arc::new(cfg);
    let code_key = Arc::new(code_key);
    let track_key = Arc::new(track_key);
    let notifier = notices::Notifier::new(
        channels,
        http,
        public_url,
        code_key.clone(),
        track_key.clone(),
        cfg.clone(),
        metrics.clone(),
    );
    let app = App {
        cfg,
        storage,
        code_key,
        track_key,
        signer: Arc::new(signer),
        metrics: metrics.clone(),
        notice_wake: Arc::new(Notify::new()),
        notifier,
        admin_hash: Arc::new(admin_hash),
        envelopes: Arc::new(app::envelopes::Envelopes::new(
            app::envelopes::DEFAULT_BUDGET,
        )),
    };
    let (tx, rx) = watch::channel(false);
    let web = Arc::new(web::WebState::new(
        app.storage.clone(),
        metrics,
        &app.code_key,
    ));
    let router = api::router(app.clone(), web);
    let public = serve::serve(listener, router, limits, rx.clone());
    let scrape = metrics_listener.map(|(l, _)| {
        // The scraper needs few connections; the same timers apply.
        let limits = serve::ConnLimits {
            max_connections: 64,
            ..limits
        };
        serve::serve(l, api::metrics_router(app.clone()), limits, rx.clone())
    });
    let server = tokio::spawn(async move {
        match scrape {
            Some(scrape) => {
                tokio::join!(public, scrape);
            }
            None => public.await,
        }
    });
    let (job, job_rx) = (app.clone(), rx.clone());
    let send = notices::run_sender(
        app.notifier.clone(),
        app.storage.clone(),
        app.notice_wake.clone(),
        rx,
    );
    let sender = tokio::spawn(async move {
        tokio::join!(send, retention::run_job(job, job_rx));
    });
    let channels: Vec<String> = app
        .notifier
        .channels()
        .iter()
        .map(|c| c.display())
        .collect();
    tracing::info!(%addr, channels = %channels.join(" "), "doorcode server listening");
    Ok(ServerHandle {
        addr,
        metrics_addr,
        admin_token,
        app,
        shutdown: tx,
        server,
        sender,
    })
}

/// Install the global tracing subscriber (plain or JSON lines on stderr).
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}
