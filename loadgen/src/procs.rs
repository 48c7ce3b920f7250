//! Child processes: the real `doorcode serve` and the floor server. Both are
//! started on an ephemeral loopback port, announce their URL on stdout, and
//! are killed and reaped when their guard drops, whatever happened.

use anyhow::{Context, Result, anyhow, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running child; killed on drop.
pub struct Proc {
    child: Child,
    pub url: String,
    /// The first start's dispatch token (only `doorcode serve` prints one).
    pub admin_token: Option<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawn `cmd` and wait until it prints `<ready_prefix><url>` on stdout.
fn spawn_announced(mut cmd: Command, name: &str, ready_prefix: &str, log: &Path) -> Result<Proc> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .with_context(|| format!("starting {name} ({cmd:?})"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("{name}: no stdout pipe"))?;
    let mut proc = Proc {
        child,
        url: String::new(),
        admin_token: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            if let Ok(Some(status)) = proc.child.try_wait() {
                bail!(
                    "{name} exited with {status} before listening; see {}",
                    log.display()
                );
            }
            bail!(
                "{name} did not announce its address within 60 s; see {}",
                log.display()
            );
        };
        if let Some(t) = line.strip_prefix("dispatch admin token (shown once, stored hashed): ") {
            proc.admin_token = Some(t.trim().to_string());
        }
        if let Some(u) = line.strip_prefix(ready_prefix) {
            proc.url = u.trim().to_string();
            return Ok(proc);
        }
    }
}

/// Where `doorcode serve` is: `--server-bin`, else `doorcode` next to this executable.
pub fn server_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let me = std::env::current_exe().context("locating this executable")?;
    let dir = me
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", me.display()))?;
    let bin = dir.join(format!("doorcode{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        bail!(
            "no server binary at {}; build it (cargo build --release -p doorcode-tools) or pass --server-bin",
            bin.display()
        );
    }
    Ok(bin)
}

/// How to start `doorcode serve` for a run: the same data dir and database
/// every time, so a restart keeps the day.
#[derive(Clone)]
pub struct ServerSpec {
    pub bin: PathBuf,
    pub data_dir: PathBuf,
    pub database: Option<String>,
    pub log_level: String,
}

impl ServerSpec {
    /// The first start, on a fresh data dir: it must print the admin token.
    pub fn start(&self, extra: &[String]) -> Result<Proc> {
        let proc = self.spawn(extra, "server.log")?;
        if proc.admin_token.is_none() {
            bail!("doorcode serve printed no admin token on a fresh data dir");
        }
        Ok(proc)
    }

    /// A later start on the same data dir (the admin token stays the first one);
    /// logs to `<data_dir>/<log>`.
    pub fn restart(&self, extra: &[String], log: &str) -> Result<Proc> {
        self.spawn(extra, log)
    }

    fn spawn(&self, extra: &[String], log: &str) -> Result<Proc> {
        start_server(
            &self.bin,
            &self.data_dir,
            self.database.as_deref(),
            &self.log_level,
            extra,
            log,
        )
    }
}

/// A real `doorcode serve`; stderr (its logs) goes to `<data_dir>/<log>`.
fn start_server(
    bin: &Path,
    data_dir: &Path,
    database: Option<&str>,
    log_level: &str,
    extra: &[String],
    log: &str,
) -> Result<Proc> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--working-days",
        "mon-sun",
    ])
    .arg("--data-dir")
    .arg(data_dir)
    .env("RUST_LOG", log_level);
    if let Some(db) = database {
        cmd.args(["--database", db]);
    }
    cmd.args(extra);
    spawn_announced(
        cmd,
        "doorcode serve",
        "doorcode listening on ",
        &data_dir.join(log),
    )
}

/// This executable's hidden `floor-server` subcommand in its own process.
pub fn start_floor(log: &Path, max_bytes: usize) -> Result<Proc> {
    let me = std::env::current_exe().context("locating this executable")?;
    let mut cmd = Command::new(me);
    cmd.args(["floor-server", "--max-bytes", &max_bytes.to_string()]);
    spawn_announced(cmd, "floor server", crate::floor::READY, log)
}
