//! Admission of TCP connections, before any byte is parsed: a per-IP limit
//! on open connections and on new connections per second, and a deadline for
//! a connection's first request headers (which covers WebSocket handshakes),
//! so slowloris and silent connections cannot use up the node's descriptors.
//! Written by hand because axum's `serve` takes any [`Listener`] but exposes
//! no hyper timer, and no maintained crate does admission per IP for it.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

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
        let mut map = self.per_ip.lock().expect("admission lock");
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
        let mut map = self.admission.per_ip.lock().expect("admission lock");
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
            let deadline = Box::pin(tokio::time::sleep(self.admission.config.header_read_timeout));
            let conn = Connection { tcp, _admitted: admitted, headers_due: Some(deadline), tail: Vec::new() };
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

/// An admitted TCP connection. Until the end of its first header block
/// (`\r\n\r\n`; HTTP/2's preface holds one) has arrived, reads fail once
/// the header-read deadline passes, and hyper drops the connection.
pub struct Connection {
    tcp: TcpStream,
    _admitted: Admitted,
    headers_due: Option<Pin<Box<Sleep>>>,
    /// The last bytes read, to find `\r\n\r\n` across reads.
    tail: Vec<u8>,
}

impl Connection {
    fn saw(&mut self, bytes: &[u8]) {
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(bytes);
        if window.windows(4).any(|w| w == b"\r\n\r\n") {
            self.headers_due = None;
            return;
        }
        let keep = window.len().saturating_sub(3);
        self.tail = window.split_off(keep);
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
