//! doorcode-server: the depot's server. Issues delivery codes (derived, never
//! stored), sends notices through an outbox, builds signed manifests for
//! handsets and ingests their signed confirmations.
//!
//! Start it in-process with [`start`]; `doorcode serve` does the same.

pub mod api;
pub mod app;
pub mod config;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod netsim;
pub mod notices;
pub mod storage;
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
}

/// A running server. Drop or call [`ServerHandle::shutdown`] to stop it.
pub struct ServerHandle {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
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

/// Open the storage named by `--database`: SQLite (a file) or PostgreSQL
/// (`postgres://…`, see `storage::postgres` for the URL parameters).
pub async fn open_storage(cfg: &Config) -> Result<Arc<dyn Storage>, StartError> {
    let default = cfg.data_dir.join("doorcode.db");
    let path = match cfg.database.as_deref() {
        None | Some("sqlite:") | Some("") => default,
        Some(s) if s.starts_with("sqlite:") => std::path::PathBuf::from(&s["sqlite:".len()..]),
        Some(s) if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
            return Ok(Arc::new(
                storage::postgres::PostgresStorage::connect(s).await?,
            ));
        }
        Some(_) => {
            return Err(StartError::Config(
                "--database must be sqlite:PATH or postgres://…".into(),
            ));
        }
    };
    Ok(Arc::new(storage::sqlite::SqliteStorage::open(&path)?))
}

/// Load keys, open storage, bind, and serve in the background.
pub async fn start(cfg: Config) -> Result<ServerHandle, StartError> {
    let dir = &cfg.data_dir;
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| StartError::DataDir(dir.display().to_string(), e))?;
        // Personal data and secrets live here: owner only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| StartError::DataDir(dir.display().to_string(), e))?;
        }
    }
    let code_key = keys::load_or_create_code_key(dir)?;
    let (admin_hash, admin_token) = keys::load_or_create_admin(dir)?;
    let signer = keys::load_signer(dir)?;
    let storage = open_storage(&cfg).await?;
    let channel = match cfg.notify.as_deref() {
        Some(s) => notices::Channel::parse(s).map_err(StartError::Config)?,
        None => notices::Channel::File(dir.join("notices")),
    };
    // reqwest is built without a bundled crypto provider; use ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .map_err(|e| StartError::Config(format!("HTTP client: {e}")))?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|err| StartError::Bind {
            addr: cfg.listen,
            err,
        })?;
    let addr = listener.local_addr().map_err(|err| StartError::Bind {
        addr: cfg.listen,
        err,
    })?;
    let public_url = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let app = App {
        cfg: Arc::new(cfg),
        storage,
        code_key: Arc::new(code_key),
        signer: Arc::new(signer),
        metrics: Arc::new(metrics::Metrics::default()),
        notice_wake: Arc::new(Notify::new()),
        channel: Arc::new(channel),
        http,
        admin_hash: Arc::new(admin_hash),
        public_url: Arc::new(public_url),
    };
    let (tx, rx) = watch::channel(false);
    let web = Arc::new(web::WebState::new()?);
    let router = api::router(app.clone(), web);
    let mut srv_rx = rx.clone();
    let server = tokio::spawn(async move {
        let r = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = srv_rx.wait_for(|v| *v).await;
        })
        .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "server stopped");
        }
    });
    let sender = tokio::spawn(notices::run_sender(app.clone(), rx));
    tracing::info!(%addr, channel = app.channel.name(), "doorcode server listening");
    Ok(ServerHandle {
        addr,
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
