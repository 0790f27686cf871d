//! `herald.v1.EventService` over [`App`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{convert, pump};
use crate::app::App;
use crate::auth::grpc::actor;
use crate::domain::{AppError, Channel};
use crate::proto::{self as pb, event_service_server::EventService};

pub struct Events(pub Arc<App>);

const MAX_CHANNELS: usize = 100;

/// Response header of a Subscribe without `after_seq`: the seq live delivery starts after.
const LIVE_FROM_HEADER: &str = "herald-live-from-seq";

#[tonic::async_trait]
impl EventService for Events {
    type SubscribeStream = tokio_stream::wrappers::ReceiverStream<Result<pb::Event, Status>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        if r.channels.is_empty() {
            return Err(AppError::invalid("name at least one channel").into());
        }
        if r.channels.len() > MAX_CHANNELS {
            return Err(AppError::invalid(format!("at most {MAX_CHANNELS} channels per stream")).into());
        }
        let mut channels = Vec::with_capacity(r.channels.len());
        for name in &r.channels {
            let ch = Channel::parse(name)?;
            self.0.check_channel(&actor, &ch).await?;
            if !channels.contains(&ch) {
                channels.push(ch);
            }
        }
        if let Some(after) = r.after_seq {
            self.0.check_cursor(after).await?;
        }
        let mut sub = self.0.subscription(&actor)?;
        // Live from here: a client that drops before its first event resumes with
        // this as after_seq and misses nothing (the WebSocket `subscribed.seq`).
        let live_from = match r.after_seq {
            None => Some(sub.add_live(channels).await?),
            Some(after) => {
                sub.add(channels, Some(after));
                None
            }
        };
        let mut resp = Response::new(pump(sub, crate::auth::expiry(&actor), Vec::new(), |d| {
            (convert::delivery(d), false)
        }));
        if let Some(seq) = live_from {
            resp.metadata_mut().insert(LIVE_FROM_HEADER, seq.into());
        }
        Ok(resp)
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let ch = Channel::parse(&r.channel)?;
        let events = self.0.events(&actor, &ch, r.after_seq, r.limit).await?;
        let name = ch.to_string();
        Ok(Response::new(pb::ListEventsResponse {
            events: events.iter().map(|e| convert::event(e, &name)).collect(),
        }))
    }
}
