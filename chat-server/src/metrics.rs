//! `/metrics`: the node's live state in the Prometheus text format, read at each scrape from
//! the counters the server keeps anyway (no second copy to keep in step). Names follow
//! Prometheus conventions: `chat_` prefix, base units, `_total` on counters (the encoder adds
//! it); no user or room names as labels.

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::server::Ctx;

/// Counters of events nothing else counts, incremented where they happen. Cheap to clone (each
/// is an atomic behind an Arc) and shared by every connection.
#[derive(Debug, Clone)]
pub struct Counters {
    /// By `code`: the close code the server sent, or `client` when the client ended it.
    pub disconnects: Family<Vec<(String, String)>, Counter>,
    /// Messages committed (duplicates of a resend not counted).
    pub messages_stored: Counter,
    /// Bytes of frames handed to client sockets.
    pub sent_bytes: Counter,
    /// Text frames read from clients, by `type` (`invalid`: not decodable as a client frame).
    pub frames_received: FrameCounters,
    /// Frames handed to client sockets, by `type`: counted per recipient, where `sent_bytes` is.
    pub frames_sent: FrameCounters,
    /// The cluster broker's figures (zero with the in-process broker).
    pub broker: BrokerCounters,
}

/// What the Redis broker counts: written by `cluster`, read by `/metrics`.
#[derive(Debug, Clone)]
pub struct BrokerCounters {
    /// Seconds from handing an event to the broker to Redis accepting its PUBLISH.
    pub publish_seconds: Histogram,
    /// Seconds from a publish on another node to its delivery here (wall clocks; skewed
    /// clocks skew it).
    pub receive_seconds: Histogram,
    /// Runs of messages read from the database because they had not arrived through Redis in
    /// time (or at all: a reconnect).
    pub gap_fills: Counter,
    /// Messages those fills delivered.
    pub gap_filled_messages: Counter,
    /// Connections to Redis re-established after a failure.
    pub reconnects: Counter,
    /// Events not published because the publish queue was at its bound (messages among them
    /// are recovered by the other nodes' gap fills).
    pub dropped: Counter,
    /// Presence entries this node owns in Redis (one per user per room).
    pub presence_entries: Gauge,
    /// 1 while the subscription to Redis is up.
    pub connected: Gauge,
}

/// Frames counted by their `type` tag. The label values are a fixed list (a protocol's frame
/// types) plus one fallback, each given its counter up front: the hot path finds its counter by
/// a short scan of that list, never by hashing a label set under the family's lock.
#[derive(Debug, Clone)]
pub struct FrameCounters {
    family: Family<[(&'static str, &'static str); 1], Counter>,
    types: &'static [&'static str],
    /// `types[i]`'s counter at `i`; each shares its atomic with the family's entry.
    by_type: Arc<[Counter]>,
    /// For a frame whose type is not in `types`.
    fallback: Counter,
}

impl FrameCounters {
    fn new(types: &'static [&'static str], fallback: &'static str) -> Self {
        let family: Family<_, Counter> = Family::default();
        let by_type = types
            .iter()
            .map(|t| family.get_or_create(&[("type", *t)]).clone())
            .collect();
        let fallback = family.get_or_create(&[("type", fallback)]).clone();
        Self {
            family,
            types,
            by_type,
            fallback,
        }
    }

    fn counter(&self, kind: Option<&str>) -> &Counter {
        kind.and_then(|k| self.types.iter().position(|t| *t == k))
            .map_or(&self.fallback, |i| &self.by_type[i])
    }

    /// Counts one frame of type `kind` (`None`, or a type not in the list: the fallback).
    pub fn count(&self, kind: Option<&str>) {
        self.counter(kind).inc();
    }

    /// Counts encoded frames a batch at a time: one atomic add per run of frames of one type.
    pub fn tally(&self) -> Tally<'_> {
        Tally {
            of: self,
            run: None,
        }
    }
}

/// Encoded frames being counted by type (see [`FrameCounters::tally`]); what is pending is
/// added when the tally is dropped.
pub struct Tally<'a> {
    of: &'a FrameCounters,
    /// The current run: its type's counter and its length. A run of messages, the bulk of what
    /// a busy room sends, costs one add.
    run: Option<(&'a Counter, u64)>,
}

impl Tally<'_> {
    /// Counts one frame that `chat_proto::encode` wrote, by the type at its front.
    pub fn add(&mut self, frame: &str) {
        let counter = self.of.counter(chat_proto::encoded_type(frame));
        match &mut self.run {
            Some((c, n)) if std::ptr::eq(*c, counter) => *n += 1,
            _ => {
                self.flush();
                self.run = Some((counter, 1));
            }
        }
    }

    fn flush(&mut self) {
        if let Some((c, n)) = self.run.take() {
            c.inc_by(n);
        }
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// What a store's group-commit writer records: written by the store, read by `/metrics`.
/// Cheap to clone (each histogram is behind an Arc).
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Seconds per batch, from its start to the end of its COMMIT (with PostgreSQL, retries
    /// included); a batch that failed counts too, so a stalled database shows in the top buckets.
    pub commit_seconds: Histogram,
    /// Writes per batch (SQLite: every write, appends and the rest; PostgreSQL: appends).
    pub batch_size: Histogram,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            // 100 us to about 13 s: a local fsync takes milliseconds, PostgreSQL's batch
            // deadline is 15 s.
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            // 1 to 4096, the batch bound of both stores.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
        }
    }
}

impl StoreMetrics {
    /// One batch of `writes` that took `took`.
    pub fn batch(&self, writes: usize, took: std::time::Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.batch_size.observe(writes as f64);
    }
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 100 us to about 1.6 s: loopback publishes are well under a millisecond, a stalled Redis
    // shows up in the top buckets.
    exponential_buckets(0.0001, 2.0, 15)
}

impl Default for BrokerCounters {
    fn default() -> Self {
        Self {
            publish_seconds: Histogram::new(latency_buckets()),
            receive_seconds: Histogram::new(latency_buckets()),
            gap_fills: Counter::default(),
            gap_filled_messages: Counter::default(),
            reconnects: Counter::default(),
            dropped: Counter::default(),
            presence_entries: Gauge::default(),
            connected: Gauge::default(),
        }
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            disconnects: Family::default(),
            messages_stored: Counter::default(),
            sent_bytes: Counter::default(),
            frames_received: FrameCounters::new(chat_proto::CLIENT_FRAME_TYPES, "invalid"),
            frames_sent: FrameCounters::new(chat_proto::SERVER_FRAME_TYPES, "other"),
            broker: BrokerCounters::default(),
        }
    }
}

impl Counters {
    /// A connection ended: `code` is the close code the server sent, `None` if the client
    /// closed or vanished first.
    pub fn disconnected(&self, code: Option<u16>) {
        let code = code.map_or_else(|| "client".to_owned(), |c| c.to_string());
        self.disconnects
            .get_or_create(&vec![("code".to_owned(), code)])
            .inc();
    }
}

/// Reads the server's state at scrape time. Holds the context weakly: the admin endpoint must
/// not keep a stopped server alive.
struct Live(Weak<Ctx>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for Live {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(ctx) = self.0.upgrade() else {
            return Ok(());
        };
        let (all, unauthenticated) = ctx.admission.counts();
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            &mut e,
            "chat_connections",
            "Open connections on this node",
            n(all),
        )?;
        gauge(
            &mut e,
            "chat_connections_unauthenticated",
            "Open connections that have not authenticated yet",
            n(unauthenticated),
        )?;
        gauge(
            &mut e,
            "chat_connections_authenticated",
            "Authenticated connections registered in the hub",
            n(ctx.hub.connection_count()),
        )?;
        gauge(
            &mut e,
            "chat_users_authenticated",
            "Distinct users with at least one authenticated connection on this node",
            n(ctx.hub.user_count()),
        )?;
        gauge(
            &mut e,
            "chat_rooms_active",
            "Rooms that at least one connection on this node has joined",
            n(ctx.hub.room_count()),
        )?;
        gauge(
            &mut e,
            "chat_outbound_unsent_bytes",
            "Bytes queued for clients and not yet handed to their sockets, reservations included",
            n(ctx.budget.used()),
        )?;
        gauge(
            &mut e,
            "chat_outbound_limit_bytes",
            "The bound on chat_outbound_unsent_bytes (--outbound-total-bytes)",
            n(ctx.budget.limit()),
        )?;
        counter(
            &mut e,
            "chat_slow_consumer_disconnects",
            "Connections closed with 4008 because they did not read",
            ctx.budget.slow_consumers(),
        )?;
        let drops = ctx.budget.drops();
        let mut family = e.encode_descriptor(
            "chat_outbound_dropped_frames",
            "Frames for clients never sent: reason=\"full\" not queued (the connection was behind at a bound and is closed with 4008), \"closed\" not queued (its writer had gone), \"discarded\" queued then thrown away (a 4008's queue, or what was left when a connection ended)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, v) in [
            ("full", drops.full),
            ("closed", drops.closed),
            ("discarded", drops.discarded),
        ] {
            ConstCounter::new(v).encode(family.encode_family(&[("reason", reason)])?)?;
        }
        Ok(())
    }
}

/// The registry `/metrics` encodes.
pub fn registry(ctx: &Arc<Ctx>) -> Registry {
    let mut r = Registry::default();
    let c = &ctx.counters;
    r.register(
        "chat_disconnects",
        "Connections ended, by the close code the server sent (code=\"client\": the client ended it)",
        c.disconnects.clone(),
    );
    r.register(
        "chat_messages_stored",
        "Messages committed to the database (resends of a stored message not counted)",
        c.messages_stored.clone(),
    );
    r.register_with_unit(
        "chat_sent",
        "Bytes of frames handed to client sockets",
        prometheus_client::registry::Unit::Bytes,
        c.sent_bytes.clone(),
    );
    r.register(
        "chat_frames_received",
        "Text frames read from clients, by type (type=\"invalid\": not JSON, not a frame, an unknown type, or a binary frame)",
        c.frames_received.family.clone(),
    );
    r.register(
        "chat_frames_sent",
        "Frames handed to client sockets, by type; a broadcast counts once per recipient it reached (type=\"other\" stays 0)",
        c.frames_sent.family.clone(),
    );
    let b = &c.broker;
    r.register_with_unit(
        "chat_broker_publish_latency",
        "Time from an event handed to the broker to Redis accepting its PUBLISH",
        prometheus_client::registry::Unit::Seconds,
        b.publish_seconds.clone(),
    );
    r.register_with_unit(
        "chat_broker_receive_latency",
        "Time from a publish on another node to its delivery on this one",
        prometheus_client::registry::Unit::Seconds,
        b.receive_seconds.clone(),
    );
    r.register(
        "chat_broker_gap_fills",
        "Runs of messages read from the database because they did not arrive through Redis in time",
        b.gap_fills.clone(),
    );
    r.register(
        "chat_broker_gap_filled_messages",
        "Messages delivered by gap fills from the database",
        b.gap_filled_messages.clone(),
    );
    r.register(
        "chat_broker_reconnects",
        "Connections to Redis re-established after a failure",
        b.reconnects.clone(),
    );
    r.register(
        "chat_broker_dropped_events",
        "Events not published to Redis because the publish queue was full",
        b.dropped.clone(),
    );
    r.register(
        "chat_presence_entries",
        "Presence entries this node owns in Redis (one per user per room)",
        b.presence_entries.clone(),
    );
    r.register(
        "chat_broker_connected",
        "1 while this node's subscription to Redis is up",
        b.connected.clone(),
    );
    if let Some(m) = ctx.store.commit_metrics() {
        r.register_with_unit(
            "chat_store_commit_duration",
            "Time per group commit, from the start of its batch to the end of its COMMIT (failed batches included)",
            prometheus_client::registry::Unit::Seconds,
            m.commit_seconds,
        );
        r.register(
            "chat_store_batch_size",
            "Writes per group commit (SQLite: every write; PostgreSQL: appended messages)",
            m.batch_size,
        );
    }
    r.register_collector(Box::new(Live(Arc::downgrade(ctx))));
    r
}

/// The registry in the text exposition format.
pub fn render(r: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_by_the_type_at_their_front() {
        let sent = FrameCounters::new(chat_proto::SERVER_FRAME_TYPES, "other");
        let get = |t: &'static str| sent.family.get_or_create(&[("type", t)]).get();
        {
            let mut tally = sent.tally();
            tally.add(r#"{"type":"message","seq":1}"#);
            tally.add(r#"{"type":"message","seq":2}"#);
            assert_eq!(get("message"), 0, "a run is added when it ends");
            for f in [
                r#"{"ref":1,"type":"ack"}"#,
                r#"{"type":"message","seq":3}"#,
                r#"{"type":"warp"}"#,
                "garbage",
            ] {
                tally.add(f);
            }
            assert_eq!((get("message"), get("ack")), (3, 1));
            assert_eq!(get("other"), 0, "the last run waits for the drop");
        }
        assert_eq!(get("other"), 2);
        sent.count(Some("pong"));
        sent.count(None);
        assert_eq!((get("pong"), get("other")), (1, 3));
    }
}
