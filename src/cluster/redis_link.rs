//! The Redis side: publish this node's events, subscribe to everyone's. Both
//! reconnect by themselves with a capped backoff and log what happened; what
//! a subscriber missed meanwhile is filled from the log by the sequencer.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::Event;
use crate::storage::{millis, time};

/// An event on the wire between nodes.
#[derive(Serialize, Deserialize)]
struct Wire {
    seq: u64,
    tenant: String,
    ts: i64,
    actor: String,
    #[serde(rename = "type")]
    event_type: String,
    data: serde_json::Value,
}

fn encode(e: &Event) -> String {
    let wire = Wire {
        seq: e.seq,
        tenant: e.tenant.clone(),
        ts: millis(e.timestamp),
        actor: e.actor.clone(),
        event_type: e.payload.type_name().to_string(),
        data: crate::encode::data(&e.payload),
    };
    serde_json::to_string(&wire).expect("wire events serialize")
}

fn decode(payload: &[u8]) -> Option<Event> {
    let w: Wire = serde_json::from_slice(payload).ok()?;
    let payload = crate::encode::payload(&w.event_type, w.data).ok()?;
    Some(Event { seq: w.seq, tenant: w.tenant, timestamp: time(w.ts).ok()?, actor: w.actor, payload })
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn backoff(attempt: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(6))).min(MAX_BACKOFF)
}

pub async fn publish(
    client: redis::Client,
    channel: String,
    mut events: mpsc::UnboundedReceiver<Arc<Event>>,
    stop: CancellationToken,
) {
    let mut conn = None;
    let mut attempt = 0;
    while let Some(event) = tokio::select! { _ = stop.cancelled() => None, e = events.recv() => e } {
        let payload = encode(&event);
        loop {
            if conn.is_none() {
                match client.get_multiplexed_async_connection().await {
                    Ok(c) => {
                        if attempt > 0 {
                            tracing::info!(attempts = attempt, "redis publisher reconnected");
                            metrics::counter!("herald_redis_reconnects_total", "link" => "publish")
                                .increment(1);
                        }
                        attempt = 0;
                        conn = Some(c);
                    }
                    Err(e) => {
                        attempt += 1;
                        // Other nodes read what is not published from the log,
                        // so nothing queues up while Redis is away.
                        let mut dropped = 1;
                        while events.try_recv().is_ok() {
                            dropped += 1;
                        }
                        tracing::warn!(error = %e, attempt, dropped, "redis publisher cannot connect");
                        tokio::time::sleep(backoff(attempt)).await;
                        break;
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            match redis::cmd("PUBLISH").arg(&channel).arg(&payload).query_async::<i64>(c).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, seq = event.seq, "redis publish failed; reconnecting");
                    conn = None;
                }
            }
        }
    }
}

pub async fn subscribe(
    client: redis::Client,
    channel: String,
    events: mpsc::UnboundedSender<Arc<Event>>,
    stop: CancellationToken,
) {
    let mut attempt = 0;
    loop {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            if attempt > 0 {
                tracing::info!(
                    attempts = attempt,
                    "redis subscription restored; gaps are filled from the log"
                );
                metrics::counter!("herald_redis_reconnects_total", "link" => "subscribe").increment(1);
            }
            attempt = 0;
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                match decode(msg.get_payload_bytes()) {
                    Some(e) => {
                        let _ = events.send(Arc::new(e));
                    }
                    None => tracing::warn!(channel = %channel, "ignored a malformed cluster message"),
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = session => r,
        };
        attempt += 1;
        match result {
            Ok(()) => tracing::warn!(attempt, "redis subscription ended; reconnecting"),
            Err(e) => tracing::warn!(error = %e, attempt, "redis subscription failed; reconnecting"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff(attempt)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_the_wire() {
        let e = Event {
            seq: 7,
            tenant: "t".into(),
            timestamp: time(1_700_000_000_123).unwrap(),
            actor: "a".into(),
            payload: crate::encode::payload(
                "task_created",
                serde_json::json!({"task_id":"x","title":"T","description":"","agent_id":null,"status":"pending"}),
            )
            .unwrap(),
        };
        assert_eq!(decode(encode(&e).as_bytes()), Some(e));
    }
}
