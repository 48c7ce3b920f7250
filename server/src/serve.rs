//! The accept loop and HTTP/1.1 connections, with the limits `axum::serve`
//! does not have (DESIGN "The edges of the server"):
//!
//! - a request's headers must arrive within `header_timeout` (10 s) of its
//!   first byte, and a new connection's first request within 10 s of connecting;
//! - a keep-alive connection idle for `idle_timeout` (60 s) is closed;
//! - a response the client stops reading for `write_timeout` (30 s) is dropped;
//! - at most `max_connections` (10,000) are open; further clients wait in the
//!   listen backlog until one closes.
//!
//! Half-sent headers used to hold a connection for 120 s and an idle
//! keep-alive for more than 90 s. hyper's own header timer also runs while a
//! keep-alive connection is idle, so it would close those after 10 s; the
//! phases here keep the two limits apart.
//!
//! Only HTTP/1.1 is served (the reverse proxy in front speaks it; h2c had its
//! own timers and no client used it). Shutdown is graceful: the listener
//! closes, idle connections close, in-flight requests finish.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

/// The connection limits; [`crate::Config`] holds the values in force.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
}

/// Where a connection is, which decides how long it may stay silent.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Accepted, nothing read yet: the first request's headers are due.
    Fresh(Instant),
    /// Some bytes of a request head arrived at this instant.
    Head(Instant),
    /// A handler is running (the request timeout bounds it).
    Busy,
    /// The response is being written; last progress at this instant.
    Writing(Instant),
    /// Between requests since this instant.
    Idle(Instant),
}

/// One connection's phase, shared by its socket wrapper, its service and its
/// watchdog.
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Fresh(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn update(&self, f: impl FnOnce(Phase) -> Option<Phase>) {
        let mut p = match self.phase.lock() {
            Ok(p) => p,
            Err(e) => e.into_inner(),
        };
        if let Some(next) = f(*p) {
            *p = next;
            drop(p);
            self.changed.notify_one();
        }
    }

    fn deadline(&self, l: &ConnLimits) -> Option<Instant> {
        let p = match self.phase.lock() {
            Ok(p) => *p,
            Err(e) => *e.into_inner(),
        };
        match p {
            Phase::Fresh(t) | Phase::Head(t) => Some(t + l.header_timeout),
            Phase::Busy => None,
            Phase::Writing(t) => Some(t + l.write_timeout),
            Phase::Idle(t) => Some(t + l.idle_timeout),
        }
    }

    /// Resolves when the connection has been silent past its phase's limit.
    async fn expired(&self, l: ConnLimits) {
        loop {
            // Register for changes before reading the deadline, so none is missed.
            let changed = self.changed.notified();
            match self.deadline(&l) {
                Some(d) if d <= Instant::now() => return,
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(d) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// The socket, reporting reads and writes to the connection's [`Activity`].
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            // The first byte of a new request starts its header clock. Bytes
            // read while a request is in flight (its body) change nothing.
            self.activity.update(|p| match p {
                Phase::Fresh(_) | Phase::Idle(_) => Some(Phase::Head(Instant::now())),
                _ => None,
            });
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            if let Ok(mut p) = self.activity.phase.lock() {
                if let Phase::Writing(_) = *p {
                    *p = Phase::Writing(Instant::now());
                }
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body that marks the connection idle once hyper is done with it.
struct Tracked {
    body: axum::body::Body,
    activity: Arc<Activity>,
}

impl HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.activity.update(|_| Some(Phase::Idle(Instant::now())));
    }
}

/// Accepts connections until `shutdown` turns true, then waits for the open
/// ones to finish (idle ones close at once, requests in flight complete).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Every connection holds a receiver: `closed()` resolves when all are gone.
    let (done_tx, done_rx) = watch::channel(());
    // Dropping the sender tells every connection to shut down gracefully.
    let (stop_tx, stop_rx) = watch::channel(());
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                if !is_connection_error(&e) {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                continue;
            }
        };
        let router = router.clone();
        let stop_rx = stop_rx.clone();
        let done_rx = done_rx.clone();
        tokio::spawn(async move {
            connection(stream, peer, router, limits, stop_rx).await;
            drop(permit);
            drop(done_rx);
        });
    }
    drop(listener);
    drop(done_rx);
    drop(stop_tx);
    done_tx.closed().await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        io: stream,
        activity: activity.clone(),
    });
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        act.update(|_| Some(Phase::Busy));
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        let act = act.clone();
        async move {
            let resp = match router.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            act.update(|_| Some(Phase::Writing(Instant::now())));
            Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked {
                body,
                activity: act,
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // No hyper header timer: it also runs while a keep-alive connection is
    // idle. The watchdog below keeps both limits.
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = activity.expired(limits) => {
                tracing::debug!(%peer, "connection closed: silent past its limit");
                return;
            }
        }
    }
}
