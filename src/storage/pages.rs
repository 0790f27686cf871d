//! Reading the event log by channel, a page at a time: the listings and the
//! replay of a resuming subscriber.
//!
//! A page is read in two steps, so that a replay can overlap them: the query
//! ([`Store::event_page`], which knows the page's first and last seq at once)
//! and the decoding of its events ([`EventPage::events`]). On SQLite the
//! query's answer is one row of text, decoded by the caller; PostgreSQL's rows
//! are decoded as they come.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};
use serde_json::value::RawValue;

use super::entities::event;
use super::{Store, convert, db_err};
use crate::domain::channel::ChannelFilter;
use crate::domain::{AppError, AppResult, Channel, Event};

/// An event read back from the log with its `data` column as stored: the
/// text [`crate::encode::data`] wrote, which a replay frames as it is
/// ([`crate::encode::event_json_stored`]).
#[derive(Debug)]
pub struct StoredEvent {
    pub event: Event,
    pub data: String,
}

/// One page of a channel query: its seq bounds, known before its events are
/// decoded.
#[derive(Debug)]
pub struct EventPage {
    /// The seqs of the page's first and last event; `None` for an empty page.
    pub bounds: Option<(u64, u64)>,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Decoded(Vec<StoredEvent>),
    /// SQLite's answer: the page's columns, each one JSON array (`types` is
    /// the event type names, joined by commas; they are snake_case words).
    Sqlite {
        tenant: String,
        seqs: String,
        actors: String,
        times: String,
        types: String,
        data: String,
    },
}

impl EventPage {
    /// The page's events, oldest first.
    pub fn events(self) -> AppResult<Vec<StoredEvent>> {
        let (tenant, seqs, actors, times, types, data) = match self.body {
            Body::Decoded(events) => return Ok(events),
            Body::Sqlite { tenant, seqs, actors, times, types, data } => {
                (tenant, seqs, actors, times, types, data)
            }
        };
        let bad = |e: serde_json::Error| {
            AppError::internal(anyhow::anyhow!("read events: a page does not decode: {e}"))
        };
        let seqs: Vec<i64> = serde_json::from_str(&seqs).map_err(bad)?;
        let actors: Vec<String> = serde_json::from_str(&actors).map_err(bad)?;
        let times: Vec<i64> = serde_json::from_str(&times).map_err(bad)?;
        let data: Vec<&RawValue> = serde_json::from_str(&data).map_err(bad)?;
        let types: Vec<&str> = types.split(',').collect();
        let n = seqs.len();
        if [actors.len(), times.len(), types.len(), data.len()] != [n; 4] {
            return Err(AppError::internal(anyhow::anyhow!(
                "read events: a page's columns differ in length"
            )));
        }
        let mut events = seqs
            .into_iter()
            .zip(actors)
            .zip(times)
            .zip(types)
            .zip(data)
            .map(|((((seq, actor), time), event_type), data)| {
                let event = convert::event_from_parts(seq, &tenant, actor, time, event_type, data.get())?;
                Ok(StoredEvent { event, data: data.get().to_owned() })
            })
            .collect::<AppResult<Vec<StoredEvent>>>()?;
        // The aggregates take the rows in the subquery's order, which SQLite
        // does not promise to keep; the page is almost always sorted already.
        events.sort_unstable_by_key(|e| e.event.seq);
        Ok(events)
    }
}

/// The events of any of `channels` in `tenant` after `after`, oldest first,
/// at most `limit`: the one channel filter both backends read pages with.
fn page_query(tenant: &str, channels: &[Channel], after: u64, limit: u64) -> sea_orm::Select<event::Entity> {
    let mut any = sea_orm::Condition::any();
    for ch in channels {
        any = match ch.filter() {
            ChannelFilter::Topic(t) => any.add(event::Column::Topic.eq(t)),
            // The key finds the rows in its index; the name rules out
            // another channel with the same key.
            ChannelFilter::Resource(r) => any.add(
                sea_orm::Condition::all()
                    .add(event::Column::ResourceKey.eq(convert::resource_key(tenant, &r)))
                    .add(event::Column::Resource.eq(r)),
            ),
        };
    }
    event::Entity::find()
        .filter(event::Column::Tenant.eq(tenant))
        .filter(event::Column::Seq.gt(after as i64))
        .filter(any)
        .order_by_asc(event::Column::Seq)
        .limit(limit)
}

impl Store {
    /// Stored events of any of `channels` in `tenant` with seq > `after`, oldest
    /// first, at most `limit`.
    pub async fn events(
        &self,
        tenant: &str,
        channels: &[Channel],
        after: u64,
        limit: u64,
    ) -> AppResult<Vec<Event>> {
        let page = self.event_page(tenant, channels, after, limit).await?.events()?;
        Ok(page.into_iter().map(|s| s.event).collect())
    }

    /// The page [`Store::events`] reads, its events not yet decoded on SQLite.
    pub async fn event_page(
        &self,
        tenant: &str,
        channels: &[Channel],
        after: u64,
        limit: u64,
    ) -> AppResult<EventPage> {
        if self.backend() == DbBackend::Sqlite {
            return self.event_page_sqlite(tenant, channels, after, limit).await;
        }
        let rows =
            page_query(tenant, channels, after, limit).all(&self.db).await.map_err(db_err("read events"))?;
        let events = rows.into_iter().map(convert::stored_event_from_row).collect::<AppResult<Vec<_>>>()?;
        let bounds = events.first().zip(events.last()).map(|(a, b)| (a.event.seq, b.event.seq));
        Ok(EventPage { bounds, body: Body::Decoded(events) })
    }

    /// [`Store::event_page`] on SQLite: the page comes back as one row, each
    /// column aggregated into one text, instead of a row per event.
    /// sqlx-sqlite hands every row from its worker thread to the runtime over
    /// a channel, and that handoff (a wake-up, often a context switch, per
    /// row) was most of the cost of catching a subscriber up (S7 in
    /// BENCHMARKS.md). `data` is the JSON text the log stored, so it goes in
    /// unparsed; a column per aggregate is cheaper for SQLite than one text
    /// built per row.
    async fn event_page_sqlite(
        &self,
        tenant: &str,
        channels: &[Channel],
        after: u64,
        limit: u64,
    ) -> AppResult<EventPage> {
        let empty = || EventPage { bounds: None, body: Body::Decoded(Vec::new()) };
        if channels.is_empty() {
            return Ok(empty());
        }
        use sea_orm::QueryTrait;
        // The page query, selecting what the aggregates read, as a subquery.
        let page = page_query(tenant, channels, after, limit)
            .select_only()
            .columns([
                event::Column::Seq,
                event::Column::Actor,
                event::Column::CreatedAt,
                event::Column::EventType,
                event::Column::Data,
            ])
            .build(DbBackend::Sqlite);
        let sql = format!(
            "SELECT min(seq) AS first, max(seq) AS last, '[' || group_concat(seq) || ']' AS seqs, \
             '[' || group_concat(json_quote(actor)) || ']' AS actors, \
             '[' || group_concat(created_at) || ']' AS times, group_concat(event_type) AS types, \
             '[' || group_concat(data) || ']' AS data FROM ({})",
            page.sql
        );
        let values = page.values.map(|v| v.0).unwrap_or_default();
        let stmt = Statement::from_sql_and_values(DbBackend::Sqlite, sql, values);
        let what = "read events";
        let Some(row) = self.db.query_one_raw(stmt).await.map_err(db_err(what))? else {
            return Ok(empty());
        };
        let bounds: (Option<i64>, Option<i64>) =
            (row.try_get("", "first").map_err(db_err(what))?, row.try_get("", "last").map_err(db_err(what))?);
        let (Some(first), Some(last)) = bounds else {
            return Ok(empty());
        };
        let text = |col: &str| row.try_get::<String>("", col).map_err(db_err(what));
        Ok(EventPage {
            bounds: Some((first as u64, last as u64)),
            body: Body::Sqlite {
                tenant: tenant.to_string(),
                seqs: text("seqs")?,
                actors: text("actors")?,
                times: text("times")?,
                types: text("types")?,
                data: text("data")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::app::test_support::{admin, create_task, pg_store, store, writer};
    use crate::domain::{Actor, Channel};
    use crate::hub::Hub;
    use crate::storage::Store;

    /// Pages of `task_updates`, `limit` at a time, against the same events
    /// read row by row through the ORM (`events_between`): equal, with
    /// bounds that are the first and last seq of each page.
    async fn pages_match_rows(store: Store) {
        let hub = Hub::new();
        let writer = writer(&store, &hub);
        let mut actor = admin();
        for (i, subject) in
            ["plain", "quote \" comma , back \\ slash", "crème ☃ \u{1}\n", "[1,2]"].iter().enumerate()
        {
            actor.subject = subject.to_string();
            let mut task = create_task(&format!("t{i}"));
            task.new.title = format!("title \"{i}\", {{ }} ] ☃");
            writer.submit(&actor, task).await.unwrap();
        }
        let mut other = Actor { tenant: "other".into(), ..admin() };
        other.subject = "elsewhere".into();
        writer.submit(&other, create_task("x")).await.unwrap();
        let rows = store.events_between(0, i64::MAX as u64, 100).await.unwrap();
        let rows: Vec<_> = rows.into_iter().filter(|e| e.tenant.is_empty()).collect();
        assert_eq!(rows.len(), 4);
        let (mut read, mut after) = (Vec::new(), 0);
        loop {
            let page = store.event_page("", &[Channel::TaskUpdates], after, 3).await.unwrap();
            let bounds = page.bounds;
            let events = page.events().unwrap();
            assert_eq!(bounds, events.first().zip(events.last()).map(|(a, b)| (a.event.seq, b.event.seq)));
            let Some((_, last)) = bounds else { break };
            after = last;
            for stored in events {
                assert_eq!(
                    stored.data,
                    serde_json::to_string(&crate::encode::data(&stored.event.payload)).unwrap()
                );
                read.push(stored.event);
            }
        }
        assert_eq!(read, rows);
        assert_eq!(read[1].actor, "quote \" comma , back \\ slash");
    }

    #[tokio::test]
    async fn sqlite_pages_are_the_rows() {
        let (store, _dir) = store().await;
        pages_match_rows(store).await;
    }

    #[tokio::test]
    async fn postgres_pages_are_the_rows() {
        let Some(store) = pg_store("postgres_pages_are_the_rows").await else { return };
        pages_match_rows(store).await;
    }

    /// Two tasks whose events share a resource key (made so by hand, as a
    /// hash collision would): each task's readers still see only its events,
    /// because the page also compares the resource itself.
    async fn a_shared_resource_key_does_not_mix_tasks(store: Store) {
        use sea_orm::ConnectionTrait;
        let hub = Hub::new();
        let writer = writer(&store, &hub);
        for id in ["a", "b"] {
            writer.submit(&admin(), create_task(id)).await.unwrap();
        }
        let key = crate::storage::convert::resource_key("", "task:a");
        let collide = format!("UPDATE events SET resource_key = {key} WHERE resource = 'task:b'");
        store.db.execute_unprepared(&collide).await.unwrap();
        let read = store.events("", &[Channel::Task("a".into())], 0, 10).await.unwrap();
        assert_eq!(read.len(), 1, "{read:?}");
        assert_eq!(read[0].payload.resource(), Channel::Task("a".into()));
        let both = [Channel::Task("a".into()), Channel::TaskUpdates];
        assert_eq!(store.events("", &both, 0, 10).await.unwrap().len(), 2, "the topic still has both");
    }

    #[tokio::test]
    async fn sqlite_keeps_tasks_with_one_resource_key_apart() {
        let (store, _dir) = store().await;
        a_shared_resource_key_does_not_mix_tasks(store).await;
    }

    #[tokio::test]
    async fn postgres_keeps_tasks_with_one_resource_key_apart() {
        let Some(store) = pg_store("postgres_keeps_tasks_with_one_resource_key_apart").await else { return };
        a_shared_resource_key_does_not_mix_tasks(store).await;
    }

    /// SQLite reads a resource's page through `events_by_resource_key`,
    /// not by scanning the log.
    #[tokio::test]
    async fn a_resource_page_is_read_through_its_key() {
        use sea_orm::{ConnectionTrait, QueryTrait, Statement};
        let (store, _dir) = store().await;
        let query = super::page_query("acme", &[Channel::Task("a".into())], 0, 10).build(store.backend());
        let explain = Statement::from_sql_and_values(
            store.backend(),
            format!("EXPLAIN QUERY PLAN {}", query.sql),
            query.values.map(|v| v.0).unwrap_or_default(),
        );
        let plan = store.db.query_all_raw(explain).await.unwrap();
        let plan: Vec<String> = plan.iter().map(|row| row.try_get::<String>("", "detail").unwrap()).collect();
        assert!(plan.iter().any(|d| d.contains("events_by_resource_key")), "{plan:?}");
    }

    #[tokio::test]
    async fn an_empty_page_has_no_bounds() {
        let (store, _dir) = store().await;
        let page = store.event_page("", &[Channel::TaskUpdates], 0, 10).await.unwrap();
        assert_eq!(page.bounds, None);
        assert!(page.events().unwrap().is_empty());
    }
}
