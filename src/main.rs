//! The `herald` command: `herald` (or `herald serve`) runs the server;
//! `herald token` prints a token signed with the configured secret; `herald
//! task|agent|events` are a small gRPC client.

use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use herald::auth::{Minter, hs256_secret};
use herald::cli;
use herald::config::Config;
use herald::domain::Role;
use herald::startup::Herald;

/// jemalloc instead of glibc's malloc: under ingest a report's buffers are
/// allocated on a runtime worker and freed on the writer's thread, glibc's
/// slowest case (libc, mostly malloc and free, was 28 % of the workers' time).
/// jemalloc costs less CPU without the memory per idle connection that
/// mimalloc added (BENCHMARKS.md, "jemalloc as the global allocator"). Only
/// the server binary: the library and its tests keep the system allocator.
/// In the server jemalloc also serves C's `malloc` (Cargo.toml's
/// `unprefixed_malloc_on_supported_platforms`), so SQLite's page and
/// statement allocations skip glibc too ("The writer one batch ahead").
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "herald", version, about = "Live state of AI-agent work over gRPC and WebSocket")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Client commands: print one JSON object per line (events exactly as
    /// the WebSocket bridge sends them) instead of readable lines.
    #[arg(long, global = true)]
    json: bool,
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
        /// The tenant (the default tenant when omitted).
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
    /// Copy the SQLite database (HERALD_DATABASE_URL) into a new file while
    /// Herald runs; restore by putting the copy in its place while Herald is stopped.
    Backup {
        /// The new file to write.
        file: std::path::PathBuf,
    },
    /// Start, list, read and cancel executions over gRPC.
    #[command(subcommand)]
    Execution(cli::ExecutionCmd),
    /// List, read and decide approvals over gRPC (an approver's or admin's token).
    #[command(subcommand)]
    Approval(cli::ApprovalCmd),
    /// Stream events of channels (task_updates, agent_status, approvals, task:{id}, agent:{id}, execution:{id}).
    Events {
        #[arg(required = true)]
        channels: Vec<String>,
        /// Resume after this seq (0: from the start).
        #[arg(long)]
        after: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Every HERALD_* variable is an option of `herald` and `herald serve` too,
    // so `--help` lists them with their defaults (and `--addr` beats HERALD_ADDR).
    let command = Cli::command().args(server_args()).mut_subcommand("serve", |c| c.args(server_args()));
    let matches = command.get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let settings = match matches.subcommand() {
        Some(("serve", m)) => m,
        _ => &matches,
    };
    let var = |name: &str| {
        let given = settings.try_get_one::<String>(name).ok().flatten().cloned();
        given.or_else(|| std::env::var(name).ok()).filter(|v| !v.trim().is_empty())
    };
    init_logging(var("HERALD_LOG"), var("HERALD_LOG_FORMAT"))?;
    let out = cli::Output { json: cli.json };
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::Task(cmd) => cli::task(cmd, out).await,
        Cmd::Agent(cmd) => cli::agent(cmd, out).await,
        Cmd::Execution(cmd) => cli::execution(cmd, out).await,
        Cmd::Approval(cmd) => cli::approval(cmd, out).await,
        Cmd::Events { channels, after } => cli::events(channels, after, out).await,
        Cmd::Serve => serve(Config::from_lookup(&var)?).await,
        Cmd::Backup { file } => {
            let size = herald::backup(&Config::from_lookup(&var)?.database_url, &file).await?;
            println!("backup {} ({size} bytes)", file.display());
            Ok(())
        }
        Cmd::Token { sub, roles, tenant, ttl } => {
            let roles = roles
                .iter()
                .map(|r| {
                    Role::parse(r).ok_or_else(|| {
                        anyhow::anyhow!("unknown role '{r}': use viewer, agent, approver or admin")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let config = Config::from_lookup(&var)?;
            let dev_secret = dev_secret_in_use(&config);
            let minter = Minter::hs256(&hs256_secret(&config)?);
            println!("{}", minter.mint(&sub, &roles, tenant.as_deref(), Duration::from(ttl))?);
            if let Some((path, created)) = dev_secret {
                warn_dev_secret(&path, created);
            }
            Ok(())
        }
    }
}

/// `--addr`, `--database-url`, … for every `HERALD_*` variable; values of
/// secrets and URLs are not shown in `--help`.
fn server_args() -> Vec<clap::Arg> {
    herald::config::VARIABLES
        .iter()
        .map(|(name, default, help)| {
            // Built once per run: leaking the few names is simpler than clap's `string` feature.
            let long: &'static str = Box::leak(
                name.trim_start_matches("HERALD_").to_lowercase().replace('_', "-").into_boxed_str(),
            );
            let arg = clap::Arg::new(*name).long(long).env(*name).hide_env_values(true).help(*help);
            match default {
                Some(d) => arg.default_value(*d),
                None => arg,
            }
        })
        .collect()
}

/// Text logs (colours only on a terminal) or, with `HERALD_LOG_FORMAT=json`,
/// one JSON object per line, on stderr.
fn init_logging(filter: Option<String>, format: Option<String>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter.as_deref().unwrap_or("info"))
        .map_err(|e| anyhow::anyhow!("HERALD_LOG is not a valid filter: {e}"))?;
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format.as_deref().unwrap_or("text") {
        "text" => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        "json" => logs.json().with_current_span(false).init(),
        other => anyhow::bail!("HERALD_LOG_FORMAT={other:?}: use text or json"),
    }
    Ok(())
}

/// The development secret `herald token` signs with (its path, and whether
/// it is about to be created), or `None` when a secret or key is configured.
fn dev_secret_in_use(config: &Config) -> Option<(std::path::PathBuf, bool)> {
    if config.auth.secret.is_some() || config.auth.public_key_file.is_some() {
        return None;
    }
    let path = herald::auth::dev_secret_path(config);
    let path = std::path::absolute(&path).unwrap_or(path);
    let created = !path.exists();
    Some((path, created))
}

/// Says loudly on stderr which secret signed the token: one minted with a
/// development secret Herald does not use is refused ("signature does not match").
fn warn_dev_secret(path: &std::path::Path, created: bool) {
    if created {
        eprintln!(
            "WARNING: no development secret at {p}: created a NEW one and signed with it.\n\
             A Herald started from another directory uses its own secret and will refuse this token\n\
             (\"the token's signature does not match\"). Run `herald token` where Herald runs,\n\
             or give both the same HERALD_DATA_DIR or HERALD_JWT_SECRET.",
            p = path.display()
        );
    } else {
        eprintln!("herald token: signed with the development secret {}", path.display());
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
