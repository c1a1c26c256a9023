//! `/metrics`: the node's live state in the Prometheus text format, read at each scrape from
//! the counters the server keeps anyway (no second copy to keep in step). Names follow
//! Prometheus conventions: `chat_` prefix, base units, `_total` on counters (the encoder adds
//! it); no user or room names as labels.

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::server::Ctx;

/// Counters of events nothing else counts, incremented where they happen. Cheap to clone (each
/// is an atomic behind an Arc) and shared by every connection.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// By `code`: the close code the server sent, or `client` when the client ended it.
    pub disconnects: Family<Vec<(String, String)>, Counter>,
    /// Messages committed (duplicates of a resend not counted).
    pub messages_stored: Counter,
    /// Bytes of frames handed to client sockets.
    pub sent_bytes: Counter,
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
