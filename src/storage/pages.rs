//! Reading the event log by channel, a page at a time: the listings and the
//! replay of a resuming subscriber.
//!
//! A page is read in two steps, so that a replay can overlap them: the query
//! ([`Store::event_page`], which knows the page's first and last seq at once)
//! and the decoding of its events ([`EventPage::events`]). On SQLite the
//! query's answer is one row of text, decoded by the caller; PostgreSQL's rows
//! are decoded as they come.

use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, Statement, Value};
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

/// How often the writer brings the resource index up to date: when a batch's
/// seqs cross a multiple of this ([`index_resources`]). A resource page reads
/// at most this many events (and one batch) past the index by scanning the
/// log, about a millisecond. Measured under streamed ingest (BENCHMARKS.md,
/// "An index that trails the log"): 1,024 bought nothing measurable, 8,192
/// about a fifth more reports per second, 16,384 little more than 8,192 at a
/// longer pause of the writer while it brings the index up. The unit
/// tests take a small value, so that they read pages across the mark.
#[cfg(not(test))]
pub(super) const RESOURCE_INDEX_EVERY: u64 = 8192;
#[cfg(test)]
pub(super) const RESOURCE_INDEX_EVERY: u64 = 4;

/// The statement that brings `event_resources` up to `events`, when
/// `events` (a batch's, in seq order) cross a multiple of
/// [`RESOURCE_INDEX_EVERY`]. It runs in the batch's transaction, after its
/// events are written; the seq counter's row lock orders the batches, so
/// every event before them is stored.
///
/// Why the index trails the log: an index of the log by resource takes each
/// batch at one place per task, so a batch of reports from 64 tasks changed
/// 64 pages of it, and splits them; under streamed ingest that was two
/// fifths of SQLite's work (BENCHMARKS.md). Brought up to date every 8,192
/// events, a task's entries go in together, a few pages per task instead of
/// one page per task per batch.
pub(super) fn index_resources(events: &[crate::domain::Event]) -> Option<&'static str> {
    let (first, last) = (events.first()?.seq, events.last()?.seq);
    ((first - 1) / RESOURCE_INDEX_EVERY != last / RESOURCE_INDEX_EVERY).then_some(
        "INSERT INTO event_resources (seq, resource_key) SELECT seq, resource_key FROM events \
         WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM event_resources)",
    )
}

/// The events of any of `channels` in `tenant` after `after`, oldest first,
/// at most `limit`, selecting `columns`: the one channel query both backends
/// read pages with.
///
/// A topic is read through `events_by_topic`. A resource is read in two
/// parts: the events `event_resources` holds, through its index, and those
/// past its last seq (the index trails the log, see [`index_resources`]), by
/// scanning the log's newest events. Both compare the resource itself, so a
/// resource key two resources share mixes nothing. With several channels,
/// each part gives its first `limit` seqs, and the page is the first `limit`
/// of them all.
fn page_statement(
    backend: DbBackend,
    tenant: &str,
    channels: &[Channel],
    after: u64,
    limit: u64,
    columns: &str,
) -> Statement {
    let mut topics = Vec::new();
    let mut resources = Vec::new();
    for ch in channels {
        match ch.filter() {
            ChannelFilter::Topic(t) => topics.push(t),
            ChannelFilter::Resource(r) => resources.push(r),
        }
    }
    let (after, limit) = (Value::from(after as i64), Value::from(limit as i64));
    let marks = |n: usize| vec!["?"; n].join(", ");
    let mut values: Vec<Value> = Vec::new();
    let sql = if resources.is_empty() {
        values.push(tenant.into());
        values.extend(topics.iter().map(|&t| Value::from(t)));
        values.extend([after, limit]);
        format!(
            "SELECT {columns} FROM events WHERE tenant = ? AND topic IN ({}) AND seq > ? ORDER BY seq LIMIT ?",
            marks(topics.len())
        )
    } else {
        let mut parts = Vec::new();
        for t in &topics {
            parts.push(
                "SELECT seq FROM events WHERE tenant = ? AND topic = ? AND seq > ? ORDER BY seq LIMIT ?",
            );
            values.extend([tenant.into(), Value::from(*t), after.clone(), limit.clone()]);
        }
        for r in &resources {
            parts.push(
                // CROSS JOIN: SQLite reads the tables in the order written
                // (the index, then the log by seq), not the tenant's events.
                "SELECT r.seq FROM event_resources r CROSS JOIN events e \
                 WHERE r.resource_key = ? AND r.seq > ? AND e.seq = r.seq AND e.tenant = ? AND e.resource = ? \
                 ORDER BY r.seq LIMIT ?",
            );
            let key = convert::resource_key(tenant, r);
            values.extend([key.into(), after.clone(), tenant.into(), r.as_str().into(), limit.clone()]);
        }
        // The log's newest events, read by seq: on SQLite `+tenant` keeps
        // the planner from reading every event of the tenant through
        // `events_by_topic` instead.
        let (greatest, tenant_column) =
            if backend == DbBackend::Postgres { ("GREATEST", "tenant") } else { ("max", "+tenant") };
        let tail = format!(
            "SELECT seq FROM events WHERE seq > {greatest}(?, (SELECT COALESCE(MAX(seq), 0) FROM event_resources)) \
             AND {tenant_column} = ? AND resource IN ({}) ORDER BY seq LIMIT ?",
            marks(resources.len())
        );
        values.extend([after, tenant.into()]);
        values.extend(resources.iter().map(|r| Value::from(r.as_str())));
        values.push(limit.clone());
        let parts = parts
            .into_iter()
            .map(String::from)
            .chain([tail])
            .enumerate()
            .map(|(i, p)| format!("SELECT seq FROM ({p}) AS part{i}"))
            .collect::<Vec<_>>()
            .join(" UNION ");
        values.push(limit);
        format!("SELECT {columns} FROM events WHERE seq IN ({parts}) ORDER BY seq LIMIT ?")
    };
    Statement::from_sql_and_values(backend, super::runs::placeholders(backend, &sql), values)
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
        if channels.is_empty() {
            return Ok(EventPage { bounds: None, body: Body::Decoded(Vec::new()) });
        }
        let stmt = page_statement(self.backend(), tenant, channels, after, limit, "*");
        let rows =
            event::Entity::find().from_raw_sql(stmt).all(&self.db).await.map_err(db_err("read events"))?;
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
        let page = page_statement(
            DbBackend::Sqlite,
            tenant,
            channels,
            after,
            limit,
            "seq, actor, created_at, event_type, data",
        );
        let sql = format!(
            "SELECT min(seq) AS first, max(seq) AS last, '[' || group_concat(seq) || ']' AS seqs, \
             '[' || group_concat(json_quote(actor)) || ']' AS actors, \
             '[' || group_concat(created_at) || ']' AS times, group_concat(event_type) AS types, \
             '[' || group_concat(data) || ']' AS data FROM ({})",
            page.sql
        );
        let stmt = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            sql,
            page.values.map(|v| v.0).unwrap_or_default(),
        );
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
    use crate::app::test_support::{
        admin, create_task, pg_store, report_progress as progress, store, writer,
    };
    use crate::domain::{Actor, Channel, Event};
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
        // Each task's first events are in the resource index, its last one
        // past it (the tests index every `RESOURCE_INDEX_EVERY` = 4 events).
        for id in ["a", "b"] {
            writer.submit(&admin(), create_task(id)).await.unwrap();
            writer.submit(&admin(), progress(id, 10)).await.unwrap();
        }
        for id in ["a", "b"] {
            writer.submit(&admin(), progress(id, 20)).await.unwrap();
        }
        assert_eq!(indexed_upto(&store).await, 4);
        let key = crate::storage::convert::resource_key("", "task:a");
        for table in ["events", "event_resources"] {
            let collide = format!(
                "UPDATE {table} SET resource_key = {key} WHERE seq IN \
                 (SELECT seq FROM events WHERE resource = 'task:b')"
            );
            store.db.execute_unprepared(&collide).await.unwrap();
        }
        for limit in [1, 2, 10] {
            let read = read_all(&store, &[Channel::Task("a".into())], limit).await;
            assert_eq!(read.len(), 3, "limit {limit}: {read:?}");
            assert!(read.iter().all(|e| e.payload.resource() == Channel::Task("a".into())), "{read:?}");
        }
        let both = [Channel::Task("a".into()), Channel::TaskUpdates];
        assert_eq!(read_all(&store, &both, 2).await.len(), 6, "the topic still has both");
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

    /// SQLite reads a resource's page through `event_resources_by_key` and
    /// the log's newest events, never by scanning the whole log.
    #[tokio::test]
    async fn a_resource_page_is_read_through_its_key() {
        use sea_orm::{ConnectionTrait, Statement};
        let (store, _dir) = store().await;
        for channels in
            [vec![Channel::Task("a".into())], vec![Channel::Task("a".into()), Channel::TaskUpdates]]
        {
            let query = super::page_statement(store.backend(), "acme", &channels, 0, 10, "seq");
            let explain = Statement::from_sql_and_values(
                store.backend(),
                format!("EXPLAIN QUERY PLAN {}", query.sql),
                query.values.map(|v| v.0).unwrap_or_default(),
            );
            let plan = store.db.query_all_raw(explain).await.unwrap();
            let plan: Vec<String> =
                plan.iter().map(|row| row.try_get::<String>("", "detail").unwrap()).collect();
            let has = |step: &str| plan.iter().any(|d| d.ends_with(step));
            assert!(
                has("USING COVERING INDEX event_resources_by_key (resource_key=? AND seq>?)"),
                "{plan:?}"
            );
            assert!(has("SEARCH events USING INDEX sqlite_autoindex_events_1 (seq>?)"), "the tail: {plan:?}");
            let scans = |d: &&String| d.starts_with("SCAN ") && !d.starts_with("SCAN part");
            assert!(!plan.iter().any(|d| scans(&d) || d.ends_with("(tenant=?)")), "{plan:?}");
        }
    }

    /// Events of several tasks, interleaved, read by resource and by
    /// combinations of channels, a few at a time: each read is exactly the
    /// log's events of those channels, whether the index holds them or they
    /// are past its last seq.
    async fn pages_read_across_the_index_mark(store: Store) {
        let hub = Hub::new();
        let writer = writer(&store, &hub);
        let tasks = ["a", "b", "c"];
        for id in tasks {
            writer.submit(&admin(), create_task(id)).await.unwrap();
        }
        for round in 1..=5 {
            for id in tasks {
                writer.submit(&admin(), progress(id, round * 10)).await.unwrap();
            }
        }
        writer.submit(&Actor { tenant: "other".into(), ..admin() }, create_task("a")).await.unwrap();
        // 19 events: 16 indexed, 3 past the index.
        assert_eq!(indexed_upto(&store).await, 16);
        let log: Vec<Event> = store.events_between(0, i64::MAX as u64, 100).await.unwrap();
        assert_eq!(log.len(), 19);
        let task = |id: &str| Channel::Task(id.into());
        for channels in [
            vec![task("a")],
            vec![task("c")],
            vec![task("a"), task("b")],
            vec![task("b"), Channel::TaskUpdates],
            vec![Channel::TaskUpdates],
            vec![task("nope")],
        ] {
            let want: Vec<&Event> = log
                .iter()
                .filter(|e| e.tenant.is_empty())
                .filter(|e| channels.iter().any(|c| *c == e.payload.resource() || *c == Channel::TaskUpdates))
                .collect();
            for limit in [1, 2, 3, 100] {
                let read = read_all(&store, &channels, limit).await;
                assert_eq!(read.iter().collect::<Vec<_>>(), want, "{channels:?}, limit {limit}");
            }
        }
    }

    #[tokio::test]
    async fn sqlite_pages_read_across_the_index_mark() {
        let (store, _dir) = store().await;
        pages_read_across_the_index_mark(store).await;
    }

    #[tokio::test]
    async fn postgres_pages_read_across_the_index_mark() {
        let Some(store) = pg_store("postgres_pages_read_across_the_index_mark").await else { return };
        pages_read_across_the_index_mark(store).await;
    }

    /// The last seq the resource index holds.
    async fn indexed_upto(store: &Store) -> i64 {
        use sea_orm::{ConnectionTrait, Statement};
        let sql = "SELECT COALESCE(MAX(seq), 0) AS upto FROM event_resources";
        let row =
            store.db.query_one_raw(Statement::from_string(store.backend(), sql)).await.unwrap().unwrap();
        row.try_get("", "upto").unwrap()
    }

    /// Every event of `channels`, read `limit` at a time.
    async fn read_all(store: &Store, channels: &[Channel], limit: u64) -> Vec<Event> {
        let (mut read, mut after) = (Vec::new(), 0);
        loop {
            let page = store.events("", channels, after, limit).await.unwrap();
            let Some(last) = page.last() else { return read };
            assert!(page.len() as u64 <= limit);
            after = last.seq;
            read.extend(page);
        }
    }

    #[tokio::test]
    async fn an_empty_page_has_no_bounds() {
        let (store, _dir) = store().await;
        let page = store.event_page("", &[Channel::TaskUpdates], 0, 10).await.unwrap();
        assert_eq!(page.bounds, None);
        assert!(page.events().unwrap().is_empty());
    }
}
