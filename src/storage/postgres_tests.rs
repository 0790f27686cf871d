//! The store's PostgreSQL connections: over TCP with Nagle's algorithm off,
//! and over the server's Unix socket.

use std::os::fd::RawFd;
use std::str::FromStr;

use sea_orm::{ConnectionTrait, Statement};

use super::Store;
use crate::app::test_support::{pg_database, service_env};

/// The peer port of `fd` if it is a TCP socket, else `None`.
fn tcp_peer_port(fd: RawFd) -> Option<u16> {
    // SAFETY: getpeername writes at most `len` bytes into the zeroed storage.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    if unsafe { libc::getpeername(fd, (&raw mut addr).cast(), &mut len) } != 0 {
        return None;
    }
    // SAFETY: the family says which sockaddr the storage holds.
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            Some(u16::from_be(unsafe { (*(&raw const addr).cast::<libc::sockaddr_in>()).sin_port }))
        }
        libc::AF_INET6 => {
            Some(u16::from_be(unsafe { (*(&raw const addr).cast::<libc::sockaddr_in6>()).sin6_port }))
        }
        _ => None,
    }
}

fn nodelay(fd: RawFd) -> Option<bool> {
    let mut on: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one c_int.
    let rc =
        unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&raw mut on).cast(), &mut len) };
    (rc == 0).then_some(on != 0)
}

/// Nagle's algorithm held each small write of the writer's transactions back
/// until the server's delayed ACK (sqlx-core 0.9.0 set no `TCP_NODELAY`):
/// S4 over TCP ran at a third of the Unix socket's speed (BENCHMARKS.md).
#[tokio::test]
async fn postgres_tcp_connections_set_nodelay() {
    let Some(url) = pg_database("postgres_tcp_connections_set_nodelay", "").await else { return };
    let port = sea_orm::sqlx::postgres::PgConnectOptions::from_str(&url).expect("postgres url").get_port();
    let store = Store::connect(&url, 2).await.expect("store");
    store.last_seq().await.expect("a query");
    // Every TCP socket of this process to the database's port (other tests'
    // pools too: they connect the same way).
    let mut checked = 0;
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Some(fd) = entry.ok().and_then(|e| e.file_name().to_str()?.parse::<RawFd>().ok()) else {
            continue;
        };
        if tcp_peer_port(fd) != Some(port) {
            continue;
        }
        // A socket closed (by another test) since the port was read has no
        // options left to read.
        if let Some(on) = nodelay(fd) {
            assert!(on, "fd {fd}: a connection to PostgreSQL (port {port}) without TCP_NODELAY");
            checked += 1;
        }
    }
    assert!(checked > 0, "found no TCP connection to PostgreSQL's port {port}");
}

/// `?host=<dir>` reaches PostgreSQL over its Unix socket, which
/// `HERALD_TEST_POSTGRES_SOCKET` names (`.ci/run`: `/var/run/postgresql`).
#[tokio::test]
async fn postgres_over_its_unix_socket() {
    let test = "postgres_over_its_unix_socket";
    let Some(dir) = service_env(test, "HERALD_TEST_POSTGRES_SOCKET", "PostgreSQL's Unix socket directory")
    else {
        return;
    };
    let Some(url) = pg_database(test, &format!("?host={dir}")).await else { return };
    let store = Store::connect(&url, 2).await.expect("store over the Unix socket");
    assert_eq!(store.last_seq().await.expect("a query"), 0);
    // The server sees no client address on a Unix-socket connection.
    let stmt = Statement::from_string(store.backend(), "SELECT inet_client_addr()::text AS addr");
    let row = store.connection().query_one_raw(stmt).await.expect("query").expect("a row");
    let addr: Option<String> = row.try_get("", "addr").expect("addr");
    assert_eq!(addr, None, "connected over TCP, not the Unix socket");
}
