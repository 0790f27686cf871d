//! One integration-test binary: every test spawns the real server on port 0
//! and talks to it over real sockets.

mod agents;
mod auth;
mod helpers;
mod resume;
mod tasks;
mod watch;
