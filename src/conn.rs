//! Admission of TCP connections, before any byte is parsed: a per-IP limit
//! on open connections and on new connections per second, and a deadline for
//! a connection's first request headers (a shorter one for a WebSocket
//! upgrade), so slowloris and silent connections cannot use up the node's
//! descriptors. Then [`serve`]: hyper-util's connection builder with a timer,
//! so an HTTP/1 connection idle between requests is closed and an HTTP/2 peer
//! that stops answering pings (a frozen executor, a partition) is dropped,
//! ending its streams. Written by hand because axum's `serve` exposes no hyper
//! timer or settings, and no maintained crate does admission per IP for it.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::auth::audit::Remote;
use crate::config::NetConfig;

#[derive(Default)]
struct PerIp {
    open: usize,
    window: Option<Instant>,
    opened_in_window: u32,
}

/// Open connections and recent arrivals per remote IP.
struct Admission {
    config: NetConfig,
    per_ip: Mutex<HashMap<IpAddr, PerIp>>,
}

impl Admission {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, &'static str> {
        let mut map = self.per_ip.lock();
        let entry = map.entry(ip).or_default();
        let now = Instant::now();
        if entry.window.is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1)) {
            entry.window = Some(now);
            entry.opened_in_window = 0;
        }
        if entry.open >= self.config.max_connections_per_ip {
            return Err("too many open connections from this address");
        }
        if entry.opened_in_window >= self.config.connection_rate_per_ip {
            return Err("too many new connections per second from this address");
        }
        entry.open += 1;
        entry.opened_in_window += 1;
        Ok(Admitted { admission: self.clone(), ip })
    }
}

/// Holds an admitted connection's place until it closes.
struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut map = self.admission.per_ip.lock();
        if let Some(e) = map.get_mut(&self.ip) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 && e.window.is_none_or(|w| w.elapsed() >= Duration::from_secs(1)) {
                map.remove(&self.ip);
            }
        }
    }
}

/// The node's listener with admission control; refused connections are
/// closed at once, without a byte.
pub struct Admitting {
    listener: TcpListener,
    admission: Arc<Admission>,
}

impl Admitting {
    pub fn new(listener: TcpListener, config: NetConfig) -> Self {
        Self { listener, admission: Arc::new(Admission { config, per_ip: Mutex::default() }) }
    }
}

impl Listener for Admitting {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            let (tcp, remote) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or a transient error: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admitted = match self.admission.admit(remote.ip()) {
                Ok(a) => a,
                Err(why) => {
                    tracing::debug!(%remote, why, "connection refused");
                    continue;
                }
            };
            // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs add
            // ~40 ms to small request/response exchanges.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
            let accepted = Instant::now();
            let deadline =
                Box::pin(tokio::time::sleep_until(accepted + self.admission.config.header_read_timeout));
            let conn = Connection {
                tcp,
                _admitted: admitted,
                headers_due: Some(deadline),
                upgrade_due: Some(accepted + self.admission.config.ws_handshake_timeout),
                head: Vec::new(),
            };
            return (conn, remote);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Connected<IncomingStream<'_, Admitting>> for Remote {
    fn connect_info(stream: IncomingStream<'_, Admitting>) -> Self {
        Remote(*stream.remote_addr())
    }
}

impl Connected<SocketAddr> for Remote {
    fn connect_info(remote: SocketAddr) -> Self {
        Remote(remote)
    }
}

/// Serves `router` on `listener` until `signal` completes, then lets every
/// connection finish gracefully (requests in flight complete; HTTP/2 gets
/// GOAWAY). Upgraded WebSockets are not waited for, as with `axum::serve`.
pub async fn serve(mut listener: Admitting, router: axum::Router, signal: impl Future<Output = ()>) {
    let config = listener.admission.config.clone();
    let mut builder = Builder::new(TokioExecutor::new());
    // With a timer, hyper's header-read timeout runs whenever an HTTP/1
    // connection waits for a request head: that is the idle timeout of a
    // kept-alive connection (and a bound on later heads). The first head has
    // the shorter deadline of `Connection`.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(config.idle_timeout);
    builder
        .http2()
        // HTTP/2 WebSockets (extended CONNECT), as axum::serve enables.
        .enable_connect_protocol()
        .timer(TokioTimer::new())
        .keep_alive_interval(config.http2_keepalive)
        .keep_alive_timeout(config.http2_keepalive_timeout);
    let mut make_service = router.into_make_service_with_connect_info::<Remote>();
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        let (io, remote) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        let service = match make_service.call(remote).await {
            Ok(s) => s,
            Err(never) => match never {},
        };
        let conn =
            builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The longest first request head searched for a WebSocket upgrade; hyper
/// refuses longer heads anyway.
const MAX_HEAD_SCAN: usize = 16 * 1024;

/// An admitted TCP connection. Until the end of its first header block
/// (`\r\n\r\n`; HTTP/2's preface holds one) has arrived, reads fail once
/// the header-read deadline passes, and hyper drops the connection; a head
/// asking for an upgrade (a WebSocket handshake) must be complete by the
/// earlier WebSocket handshake deadline.
pub struct Connection {
    tcp: TcpStream,
    _admitted: Admitted,
    headers_due: Option<Pin<Box<Sleep>>>,
    /// When an upgrade request must be complete; None once looked for.
    upgrade_due: Option<Instant>,
    /// The first request's head so far (at most `MAX_HEAD_SCAN` bytes, then
    /// only its last 3), to find its end across reads and an `Upgrade` header.
    head: Vec<u8>,
}

impl Connection {
    fn saw(&mut self, bytes: &[u8]) {
        let from = self.head.len().saturating_sub(3);
        self.head.extend_from_slice(bytes);
        if self.head[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            self.headers_due = None;
            self.head = Vec::new();
            return;
        }
        if let Some(due) = self.upgrade_due
            && self.head.to_ascii_lowercase().windows(9).any(|w| w == b"\nupgrade:")
        {
            self.upgrade_due = None;
            if let Some(sleep) = self.headers_due.as_mut()
                && due < sleep.deadline()
            {
                sleep.as_mut().reset(due);
            }
        }
        if self.head.len() > MAX_HEAD_SCAN {
            self.upgrade_due = None;
            self.head = self.head.split_off(self.head.len() - 3);
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(due) = this.headers_due.as_mut()
            && due.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request headers took too long",
            )));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if this.headers_due.is_some() && matches!(res, Poll::Ready(Ok(()))) {
            let fresh = buf.filled()[before..].to_vec();
            this.saw(&fresh);
        }
        res
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Raises the soft limit on open files to the hard limit: every connection
/// is a descriptor, and the usual soft default (1024) is far below what a
/// node serves.
pub fn raise_open_files_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit read and write a valid rlimit struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            tracing::info!(from = lim.rlim_cur, to = lim.rlim_max, "raised the open files limit");
        } else {
            tracing::warn!(soft = lim.rlim_cur, "could not raise the open files limit");
        }
    }
}
