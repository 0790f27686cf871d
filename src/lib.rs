//! Herald carries the live state of AI-agent work between the programs that do
//! it and the people who watch it.
//!
//! The crate, from the inside out:
//! - [`domain`]: the task and agent state machines, events, channels, callers
//!   and the one error type. No transport or storage code.
//! - [`storage`]: sea-orm over SQLite or PostgreSQL; the event log and the
//!   unit of work the writer commits.
//! - [`cluster`]: several nodes over PostgreSQL and Redis: cross-node events
//!   put back in `seq` order, gaps filled from the log.
//! - [`encode`]: the event's one JSON form, for every surface and the log.
//! - [`hub`]: in-process fan-out of stored events to subscribers, with the
//!   slow-consumer policy.
//! - [`app`]: the use-cases every transport calls, the group-commit writer and
//!   subscriptions (replay from a cursor, then live).
//! - [`auth`]: JWT verification and minting.
//! - [`grpc`], [`http`], [`ws`]: transport adapters over [`app`]; `ws` is the
//!   JSON WebSocket bridge.
//! - [`startup`], [`config`]: building and serving it all on one port.
//! - [`telemetry`]: Prometheus metrics and the per-request tracing span.
//! - [`cli`]: the command-line gRPC client behind `herald task …`.

pub(crate) mod agui;
pub(crate) mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub(crate) mod conn;
pub mod domain;
pub(crate) mod encode;
pub(crate) mod grpc;
pub(crate) mod http;
pub(crate) mod hub;
pub mod proto;
pub(crate) mod sse;
pub mod startup;
pub(crate) mod storage;
pub(crate) mod telemetry;
pub(crate) mod ws;

// What `herald backup` (src/main.rs) needs of the store.
pub use storage::backup;
