//! A loopback TCP proxy that plays the network between handsets and the
//! server: it can pass traffic, refuse it (no signal), or misbehave (drops,
//! delays, resets after the server answered, truncated answers, 503s). The
//! demo uses it to cut handsets off; the end-to-end tests use its faults.
//! Loopback only: it forwards to one upstream address given by the caller.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Per-connection fault probabilities, in percent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Close the connection before anything is forwarded.
    pub drop_pct: u8,
    /// Answer 503 without asking the server.
    pub unavailable_pct: u8,
    /// Forward the request, then reset the connection before the answer:
    /// the server did the work, the handset never hears of it.
    pub reset_after_request_pct: u8,
    /// Forward only a prefix of the answer, then close.
    pub truncate_pct: u8,
    /// Extra latency before forwarding, up to this many milliseconds.
    pub max_delay_ms: u64,
}

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Pass,
    /// No signal: every connection is closed at once.
    Offline,
    Faulty(Faults),
}

#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub dropped: AtomicU64,
    pub unavailable: AtomicU64,
    pub resets: AtomicU64,
    pub truncated: AtomicU64,
    pub delayed: AtomicU64,
}

impl Stats {
    /// `(connections, dropped, 503s, resets, truncated, delayed)`.
    pub fn snapshot(&self) -> [u64; 6] {
        [
            self.connections.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.unavailable.load(Ordering::Relaxed),
            self.resets.load(Ordering::Relaxed),
            self.truncated.load(Ordering::Relaxed),
            self.delayed.load(Ordering::Relaxed),
        ]
    }
}

struct Shared {
    /// Watched by every open connection, so going offline cuts live
    /// keep-alive connections too, not only new ones.
    mode: tokio::sync::watch::Sender<Mode>,
    upstream: Mutex<SocketAddr>,
    stats: Stats,
    rng: Mutex<u64>,
}

impl Shared {
    fn roll(&self) -> u64 {
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        // xorshift64*: reproducible from the seed, good enough for fault dice.
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pct(&self, p: u8) -> bool {
        p > 0 && self.roll() % 100 < u64::from(p)
    }
}

/// A running proxy. Dropping it stops accepting.
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr, seed: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: tokio::sync::watch::Sender::new(Mode::Pass),
            upstream: Mutex::new(upstream),
            stats: Stats::default(),
            rng: Mutex::new(seed | 1),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = handle(s, client).await;
                });
            }
        });
        Ok(Self { addr, shared, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    /// Points the proxy at a restarted server.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = upstream;
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }
}

async fn handle(s: Arc<Shared>, mut client: TcpStream) -> std::io::Result<()> {
    s.stats.connections.fetch_add(1, Ordering::Relaxed);
    let mut mode_rx = s.mode.subscribe();
    let mode = *mode_rx.borrow_and_update();
    let faults = match mode {
        Mode::Offline => {
            s.stats.dropped.fetch_add(1, Ordering::Relaxed);
            reset(&client);
            return Ok(());
        }
        Mode::Pass => Faults::default(),
        Mode::Faulty(f) => f,
    };
    if s.pct(faults.drop_pct) {
        s.stats.dropped.fetch_add(1, Ordering::Relaxed);
        reset(&client);
        return Ok(());
    }
    if faults.max_delay_ms > 0 {
        s.stats.delayed.fetch_add(1, Ordering::Relaxed);
        let ms = s.roll() % (faults.max_delay_ms + 1);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if s.pct(faults.unavailable_pct) {
        s.stats.unavailable.fetch_add(1, Ordering::Relaxed);
        // Read (some of) the request so the client is not reset mid-send.
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
        client
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy")
            .await?;
        return client.shutdown().await;
    }
    let reset_after = s.pct(faults.reset_after_request_pct);
    // Cut inside the status line or headers most of the time, sometimes in the body.
    let truncate_at = if !reset_after && s.pct(faults.truncate_pct) {
        Some(1 + s.roll() % 300)
    } else {
        None
    };
    let upstream = *s.upstream.lock().unwrap_or_else(|p| p.into_inner());
    let server = match TcpStream::connect(upstream).await {
        Ok(c) => c,
        Err(_) => {
            // Server down: the handset sees what it would see on a dead link.
            reset(&client);
            return Ok(());
        }
    };
    let mut server = server;
    let mut client = client;
    let mut forwarded = 0u64;
    let mut cut = false;
    {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let upload = async {
            let _ = tokio::io::copy(&mut cr, &mut sw).await;
            let _ = sw.shutdown().await;
            std::future::pending::<()>().await;
        };
        let download = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match sr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if reset_after {
                    // The server answered; the handset never gets it.
                    s.stats.resets.fetch_add(1, Ordering::Relaxed);
                    cut = true;
                    break;
                }
                if let Some(limit) = truncate_at {
                    let room = usize::try_from(limit.saturating_sub(forwarded)).unwrap_or(0);
                    if room < n {
                        let _ = cw.write_all(&buf[..room]).await;
                        s.stats.truncated.fetch_add(1, Ordering::Relaxed);
                        cut = true;
                        break;
                    }
                }
                if cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                forwarded += n as u64;
            }
        };
        let went_offline = async {
            while mode_rx.changed().await.is_ok() {
                if matches!(*mode_rx.borrow_and_update(), Mode::Offline) {
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = download => {}
            () = upload => {}
            () = went_offline => cut = true,
        }
    }
    if cut {
        // A reset, not a clean close: what a dropped mobile link looks like.
        reset(&client);
    }
    Ok(())
}

/// Closes with RST rather than FIN, as a dropped mobile link does. A zero
/// linger never blocks on drop (the deprecation is about non-zero values).
#[allow(deprecated)]
fn reset(s: &TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
}
