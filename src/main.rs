//! The `herald` command: `herald` (or `herald serve`) runs the server;
//! `herald token` prints a token signed with the configured secret; `herald
//! task|agent|events` are a small gRPC client.

use std::time::Duration;

use clap::{Parser, Subcommand};
use herald::auth::{Minter, hs256_secret};
use herald::cli;
use herald::config::Config;
use herald::domain::Role;
use herald::startup::Herald;

#[derive(Parser)]
#[command(name = "herald", version, about = "Live state of AI-agent work over gRPC and WebSocket")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (the default). Configured with HERALD_* variables.
    Serve,
    /// Print a JWT signed with HERALD_JWT_SECRET (or the development secret).
    Token {
        /// The token's subject: who the caller is.
        #[arg(long)]
        sub: String,
        /// viewer, agent, approver or admin; repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// How long the token is valid, like 30m, 1h or 7d.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
    },
    /// Drive tasks over gRPC (HERALD_URL, HERALD_TOKEN).
    #[command(subcommand)]
    Task(cli::TaskCmd),
    /// Register agents and send heartbeats over gRPC.
    #[command(subcommand)]
    Agent(cli::AgentCmd),
    /// Stream events of channels (task_updates, agent_status, task:{id}, agent:{id}).
    Events {
        #[arg(required = true)]
        channels: Vec<String>,
        /// Resume after this seq.
        #[arg(long)]
        after: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = Cli::parse().command.unwrap_or(Cmd::Serve);
    match command {
        Cmd::Task(cmd) => cli::task(cmd).await,
        Cmd::Agent(cmd) => cli::agent(cmd).await,
        Cmd::Events { channels, after } => cli::events(channels, after).await,
        Cmd::Serve => serve(Config::from_env()?).await,
        Cmd::Token { sub, roles, tenant, ttl } => {
            let roles = roles
                .iter()
                .map(|r| {
                    Role::parse(r).ok_or_else(|| {
                        anyhow::anyhow!("unknown role '{r}': use viewer, agent, approver or admin")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let minter = Minter::hs256(&hs256_secret(&Config::from_env()?)?);
            println!("{}", minter.mint(&sub, &roles, tenant.as_deref(), Duration::from(ttl))?);
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let dev_token = dev_token(&config)?;
    let herald = Herald::build(config).await?;
    let url = format!("http://{}/", herald.local_addr());
    match dev_token {
        Some(token) => {
            println!("Herald is running: open {url} and paste this development token (admin, 12 h):\n{token}")
        }
        None => println!("Herald is running: open {url}"),
    }
    let shutdown = herald.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        shutdown.cancel();
    });
    herald.run().await
}

/// With no secret configured (loopback only), a token for the dashboard so a
/// newcomer can start at once.
fn dev_token(config: &Config) -> anyhow::Result<Option<String>> {
    if config.auth.secret.is_some() || config.auth.public_key_file.is_some() {
        return Ok(None);
    }
    let minter = Minter::hs256(&hs256_secret(config)?);
    Ok(Some(minter.mint("developer", &[Role::Admin], None, Duration::from_secs(12 * 3600))?))
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
