//! Several Herald nodes as one server, over existing engines: PostgreSQL holds
//! the state and the event log, Redis pub/sub carries events between nodes.
//!
//! Every node delivers every event to its local hub in `seq` order with no gap
//! and no duplicate. Its own events come straight from its writer; the others'
//! arrive over Redis. Because `seq` is global and gap-free, the [`Sequencer`]
//! knows exactly what it is missing: it holds back events after a gap, and if
//! Redis has not filled the gap within `gap_fill_after` (Redis may drop
//! messages on reconnects or slow subscribers) it reads the missing events
//! from the database. A periodic catch-up read also covers a Redis outage with
//! no later event to reveal the gap.

mod redis_link;
mod sequencer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::{AppError, Event};
use crate::hub::Hub;
use crate::storage::Store;

pub use sequencer::Sequencer;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `HERALD_REDIS_URL`.
    pub redis_url: String,
    /// `HERALD_REDIS_CHANNEL` (herald:events): the pub/sub channel of this cluster.
    pub channel: String,
    /// `HERALD_GAP_FILL_AFTER` (50ms): how long to wait for Redis before reading a gap from the log.
    pub gap_fill_after: Duration,
    /// `HERALD_CATCH_UP_INTERVAL` (1s): how often to compare with the log's last seq.
    pub catch_up_interval: Duration,
}

/// This node's link to the others.
#[derive(Clone)]
pub struct Cluster {
    local: mpsc::UnboundedSender<Arc<Event>>,
    outbound: mpsc::UnboundedSender<Arc<Event>>,
    redis: redis::Client,
}

impl Cluster {
    /// Connects to Redis and starts the sequencer, the publisher and the
    /// subscriber. They stop when `stop` is cancelled.
    pub async fn start(
        config: ClusterConfig,
        store: Store,
        hub: Arc<Hub>,
        stop: CancellationToken,
    ) -> anyhow::Result<(Self, Vec<JoinHandle<()>>)> {
        let redis = redis::Client::open(config.redis_url.as_str())?;
        // Fail fast on a wrong URL; later outages are survived.
        redis.get_multiplexed_async_connection().await?;
        let (local, local_rx) = mpsc::unbounded_channel();
        let (remote, remote_rx) = mpsc::unbounded_channel();
        let (outbound, outbound_rx) = mpsc::unbounded_channel();
        let next = store.last_seq().await? + 1;
        let sequencer = Sequencer::new(next, store, hub, config.gap_fill_after, config.catch_up_interval);
        let tasks = vec![
            tokio::spawn(sequencer.run(local_rx, remote_rx, stop.clone())),
            tokio::spawn(redis_link::publish(
                redis.clone(),
                config.channel.clone(),
                outbound_rx,
                stop.clone(),
            )),
            tokio::spawn(redis_link::subscribe(redis.clone(), config.channel, remote, stop)),
        ];
        Ok((Self { local, outbound, redis }, tasks))
    }

    /// Hands this node's stored events to its hub (in order) and to the others.
    pub fn publish(&self, event: Arc<Event>) {
        let _ = self.outbound.send(event.clone());
        let _ = self.local.send(event);
    }

    pub async fn ping(&self) -> Result<(), AppError> {
        let mut conn = self.redis.get_multiplexed_async_connection().await.map_err(AppError::internal)?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(AppError::internal)?;
        Ok(())
    }
}
