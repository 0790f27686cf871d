//! One integration-test binary: every test spawns the real server on port 0
//! and talks to it over real sockets.

mod agents;
mod agui;
mod auth;
mod backup;
mod bench;
mod bridge;
mod browser;
mod cli;
mod cluster;
mod compat;
mod cors;
mod helpers;
mod hitl;
mod http;
mod idempotency;
mod ingest;
mod manners;
mod monitoring;
mod openapi;
mod protocol;
mod recipe;
mod reliability;
mod resume;
mod retention;
mod security;
mod sse;
mod startup;
mod tasks;
mod tooling;
mod watch;
