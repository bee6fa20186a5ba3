//! `GET /metrics`: the node's counters in the Prometheus text exposition
//! format (version 0.0.4), for a Prometheus server to scrape from every node.
//!
//! It owns the names, types, units and help texts of the families it serves
//! (listed in `docs/protocol.md`), and nothing else: every value is read
//! when the page is scraped, from the counters the rest of the server keeps
//! anyway ([`crate::http::stats`] per transport, [`crate::net::traffic`] on the wire,
//! the rooms, the connection limit, and the store's own [`RoundTrips`] if it
//! keeps any, as the Redis store does), so a scrape adds no work to any
//! request, stream or socket. The one count kept for this page alone is the node's wire tally
//! in [`crate::net::traffic`]: a relaxed add per socket read or write. This
//! module must not know how any of those are counted, keep counters of its
//! own, or touch a transport's: a scrape is a request of the `other`
//! channel, like `GET /stats`, and takes no place under `--max-connections`
//! but one under the scrapes' own small limit (see
//! [`crate::http::endpoints::Endpoint::limit`]), so a full node can be
//! watched and scrapes cannot fill its memory.
//!
//! The text is written by `prometheus-client`, the Prometheus organisation's
//! Rust client: each scrape takes a [`Snapshot`], registers it as the one
//! [`Collector`] of a fresh registry, and encodes that.

use std::fmt;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::core::error::ApiError;
use crate::core::log::Seq;
use crate::core::log_store::{RoundTrips, StoreMetrics};
use crate::http::state::AppState;
use crate::http::stats::{CountersView, SignalCountersView, StatsView};
use crate::net::traffic::{ChannelView, TallyView};

/// The prefix of every family's name.
pub const PREFIX: &str = "pushlab";

/// The `Content-Type` of the answer: Prometheus text, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// `GET /metrics`: the node's counters as Prometheus text.
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text = Snapshot::of(&state).render()?;
    Ok(HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(text))
}

/// One open room, as its families label it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSample {
    /// Its name, the `room` label; never shown for an unlisted room.
    pub name: String,
    /// Whether it is listed (its name does not start with `_`).
    pub listed: bool,
    /// The seq of its newest event.
    pub head: Seq,
    /// Users online in it.
    pub online: usize,
    /// Streams, sockets and requests reading it now.
    pub readers: usize,
}

/// Everything one scrape serves, read at once.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The counters per transport, as `/stats` serves them.
    pub transports: StatsView,
    /// WebRTC signals relayed and refused.
    pub signals: SignalCountersView,
    /// Every byte and request the node served, per channel.
    pub wire: TallyView,
    /// Requests in flight against `--max-connections`.
    pub connections: usize,
    /// `--max-connections`, as fitted under the open-file limit.
    pub max_connections: u64,
    /// Every open room.
    pub rooms: Vec<RoomSample>,
    /// The bytes every room's window holds now, by what they cost in
    /// memory, and `--total-bytes`.
    pub log_bytes: (usize, usize),
    /// The store's round trips, if it counts them (with `--redis`).
    pub store: Option<RoundTrips>,
}

impl Snapshot {
    /// Reads the server's counters now.
    pub fn of(state: &AppState) -> Snapshot {
        Snapshot {
            transports: state.stats.view(),
            signals: state.stats.signals.view(),
            wire: state.clients.node_view(),
            connections: state.limit.open(),
            max_connections: state.config.max_connections,
            rooms: state
                .rooms
                .list()
                .into_iter()
                .map(|room| RoomSample {
                    listed: room.name.is_listed(),
                    name: room.name.to_string(),
                    head: room.head,
                    online: room.online,
                    readers: room.readers,
                })
                .collect(),
            log_bytes: (state.log_bytes.used(), state.log_bytes.total()),
            store: state
                .store_metrics
                .as_deref()
                .map(StoreMetrics::round_trips),
        }
    }

    /// The exposition text.
    pub fn render(self) -> Result<String, ApiError> {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).map_err(|err| {
            tracing::error!("could not encode /metrics: {err}");
            ApiError::Internal
        })?;
        Ok(text)
    }

    /// Each transport's `label` value, with what `value` takes from its
    /// counters and its wire tally.
    fn per_transport<T>(
        &self,
        value: impl Fn(&CountersView, &ChannelView) -> T,
    ) -> [(&'static str, T); 5] {
        let (t, w) = (&self.transports, &self.wire);
        [
            ("poll", value(&t.poll, &w.poll)),
            ("longpoll", value(&t.longpoll, &w.longpoll)),
            ("sse", value(&t.sse, &w.sse)),
            ("ws", value(&t.ws, &w.ws)),
            ("webtransport", value(&t.webtransport, &w.webtransport)),
        ]
    }

    fn encode_transports(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let gauges: [Family<TransportGauge>; 2] = [
            (
                "transport_open_connections",
                "Held long-polls, open SSE streams and open WebSockets now.",
                None,
                |c| c.open,
            ),
            (
                "transport_queued",
                "Bytes waiting in WebSocket outbound buffers now.",
                BYTES,
                |c| c.queued,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let samples = self.per_transport(|c, _| ConstGauge::new(value(c)));
            labelled(encoder, name, help, unit, "transport", &samples)?;
        }
        let counters: [Family<TransportCounter>; 6] = [
            (
                "transport_requests",
                "Requests served; for sse and ws, connections accepted.",
                None,
                |c, _| c.requests,
            ),
            (
                "transport_events_delivered",
                "Log events delivered to clients.",
                None,
                |c, _| c.events,
            ),
            (
                "transport_empty_responses",
                "Poll and long-poll answers that carried no event.",
                None,
                |c, _| c.empty,
            ),
            (
                "transport_payload_sent",
                "Body bytes sent: response bodies, stream chunks, WebSocket frame payloads.",
                BYTES,
                |c, _| c.bytes,
            ),
            (
                "transport_sent",
                "Bytes written to the socket, response heads and framing included.",
                BYTES,
                |_, w| w.bytes_out,
            ),
            (
                "transport_received",
                "Bytes read from the socket: request heads and bodies, WebSocket frames.",
                BYTES,
                |_, w| w.bytes_in,
            ),
        ];
        for (name, help, unit, value) in counters {
            let samples = self.per_transport(|c, w| ConstCounter::new(value(c, w)));
            labelled(encoder, name, help, unit, "transport", &samples)?;
        }
        Ok(())
    }

    fn encode_node(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let other = &self.wire.other;
        singles(
            encoder,
            &[
                (
                    "other_requests",
                    "Requests other than the four transports' (register, send, stats, metrics, files), refused ones included.",
                    None,
                    ConstCounter::new(other.requests),
                ),
                (
                    "other_sent",
                    "Bytes written for requests other than the four transports'.",
                    BYTES,
                    ConstCounter::new(other.bytes_out),
                ),
                (
                    "other_received",
                    "Bytes read for requests other than the four transports'.",
                    BYTES,
                    ConstCounter::new(other.bytes_in),
                ),
            ],
        )?;
        labelled(
            encoder,
            "signals",
            "WebRTC signals passed on (relayed) or refused.",
            None,
            "outcome",
            &[
                ("relayed", ConstCounter::new(self.signals.relayed)),
                ("refused", ConstCounter::new(self.signals.refused)),
            ],
        )?;
        let total = |value: fn(&RoomSample) -> usize| self.rooms.iter().map(value).sum::<usize>();
        singles(
            encoder,
            &[
                (
                    "connections_in_flight",
                    "Requests in flight now, held long-polls, streams and sockets included, against --max-connections.",
                    None,
                    ConstGauge::new(gauge(self.connections)),
                ),
                (
                    "connections_max",
                    "The --max-connections in force, fitted under the open-file limit.",
                    None,
                    ConstGauge::new(i64::try_from(self.max_connections).unwrap_or(i64::MAX)),
                ),
                (
                    "rooms_open",
                    "Rooms open now, the lobby included.",
                    None,
                    ConstGauge::new(gauge(self.rooms.len())),
                ),
                (
                    "rooms_unlisted",
                    "Unlisted rooms (names starting with _) open now, counted in rooms_open; never named here.",
                    None,
                    ConstGauge::new(gauge(self.rooms.iter().filter(|r| !r.listed).count())),
                ),
                (
                    "log_windows",
                    "What every room's window of recent events holds now, in memory, against --total-bytes.",
                    BYTES,
                    ConstGauge::new(gauge(self.log_bytes.0)),
                ),
                (
                    "log_windows_max",
                    "The --total-bytes every room's window shares.",
                    BYTES,
                    ConstGauge::new(gauge(self.log_bytes.1)),
                ),
                (
                    "sessions_online",
                    "Users online now, in every room.",
                    None,
                    ConstGauge::new(gauge(total(|r| r.online))),
                ),
                (
                    "readers",
                    "Streams, sockets and requests reading a room's log now, in every room.",
                    None,
                    ConstGauge::new(gauge(total(|r| r.readers))),
                ),
            ],
        )?;
        // An unlisted room's name is its only secret: no series names it.
        let heads: Vec<_> = self
            .rooms
            .iter()
            .filter(|room| room.listed)
            .map(|room| (room.name.as_str(), ConstGauge::new(room.head)))
            .collect();
        labelled(
            encoder,
            "room_log_head",
            "The seq of each open listed room's newest event (events appended under its epoch).",
            None,
            "room",
            &heads,
        )
    }

    /// The store's round trips, in families named after its storage:
    /// `redis_calls`, `redis_errors` and `redis_round_trip` for Redis.
    fn encode_store(store: &RoundTrips, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let RoundTrips { storage, title, .. } = store;
        for (name, help, count) in [
            (
                format!("{storage}_calls"),
                format!("{title} commands and scripts sent."),
                store.calls,
            ),
            (
                format!("{storage}_errors"),
                format!("{title} calls that failed: unreachable, timed out or refused."),
                store.errors,
            ),
        ] {
            let counter = ConstCounter::new(count);
            counter.encode(encoder.encode_descriptor(
                &name,
                &help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let queued = ConstGauge::new(i64::try_from(store.queued_bytes).unwrap_or(i64::MAX));
        queued.encode(encoder.encode_descriptor(
            &format!("{storage}_queued"),
            &format!("Bytes of appends waiting to be written to {title} now, bounded per room and per node."),
            BYTES,
            queued.metric_type(),
        )?)?;
        let name = format!("{storage}_round_trip");
        let mut histogram = encoder.encode_descriptor(
            &name,
            &format!("Round-trip time of each {title} call, failed ones included."),
            SECONDS,
            MetricType::Histogram,
        )?;
        histogram.encode_histogram::<NoLabelSet>(
            store.rtt_sum_seconds,
            store.rtt_count(),
            &store.rtt_buckets,
            None,
        )
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.encode_transports(&mut encoder)?;
        self.encode_node(&mut encoder)?;
        match &self.store {
            Some(store) => Snapshot::encode_store(store, &mut encoder),
            None => Ok(()),
        }
    }
}

/// A family's name (without the prefix or the unit), help text, unit, and
/// what gives its value.
type Family<V> = (&'static str, &'static str, Option<&'static Unit>, V);

/// A transport's gauge, from its counters.
type TransportGauge = fn(&CountersView) -> i64;

/// A transport's counter, from its counters and its wire tally.
type TransportCounter = fn(&CountersView, &ChannelView) -> u64;

/// The unit of the families counted in bytes.
const BYTES: Option<&Unit> = Some(&Unit::Bytes);

/// The unit of the families measured in seconds.
const SECONDS: Option<&Unit> = Some(&Unit::Seconds);

/// A count as a gauge's value, saturating.
fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Writes families of one sample each, without labels.
fn singles<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    families: &[Family<M>],
) -> fmt::Result {
    for (name, help, unit, metric) in families {
        metric.encode(encoder.encode_descriptor(name, help, *unit, metric.metric_type())?)?;
    }
    Ok(())
}

/// Writes a family of one sample per value of `label`. A family without
/// samples is left out, descriptor and all.
fn labelled<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    label: &str,
    samples: &[(&str, M)],
) -> fmt::Result {
    let Some((_, first)) = samples.first() else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(name, help, unit, first.metric_type())?;
    for (value, metric) in samples {
        metric.encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::stats::Stats;
    use crate::net::traffic::Clients;

    fn quiet_node() -> Snapshot {
        Snapshot {
            transports: Stats::default().view(),
            signals: Stats::default().signals.view(),
            wire: Clients::default().node_view(),
            connections: 0,
            max_connections: 20_000,
            rooms: vec![RoomSample {
                listed: true,
                name: "lobby".into(),
                head: 7,
                online: 2,
                readers: 1,
            }],
            log_bytes: (3_000, 2 << 30),
            store: None,
        }
    }

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn every_family_is_typed_and_named_with_the_prefix() {
        let text = quiet_node().render().unwrap();

        assert!(text.contains("# TYPE pushlab_transport_requests_total counter\n"));
        assert!(text.contains("# TYPE pushlab_transport_sent_bytes_total counter\n"));
        assert!(text.contains("# TYPE pushlab_transport_open_connections gauge\n"));
        assert_eq!(sample(&text, "pushlab_log_windows_bytes"), Some("3000"));
        assert_eq!(
            sample(&text, "pushlab_log_windows_max_bytes"),
            Some("2147483648")
        );
        assert_eq!(
            sample(&text, r#"pushlab_room_log_head{room="lobby"}"#),
            Some("7")
        );
        assert_eq!(sample(&text, "pushlab_sessions_online"), Some("2"));
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            assert!(line.starts_with("pushlab_"), "{line}");
        }
    }

    #[test]
    fn a_node_without_redis_serves_no_redis_family() {
        let text = quiet_node().render().unwrap();

        assert!(!text.contains("redis"), "{text}");
    }

    #[test]
    fn a_store_s_round_trips_are_served_as_a_cumulative_histogram_in_seconds() {
        // Arrange: four calls, two failed, of 300 µs, 3 ms, 2.5 ms and 10 s.
        let mut rtt_buckets = vec![
            (0.0001, 0),
            (0.00025, 0),
            (0.0005, 1),
            (0.001, 0),
            (0.0025, 1),
            (0.005, 1),
        ];
        rtt_buckets.extend([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5].map(|le| (le, 0)));
        rtt_buckets.push((f64::INFINITY, 1));
        let store = RoundTrips {
            storage: "redis",
            title: "Redis",
            calls: 4,
            errors: 2,
            rtt_sum_seconds: 10.0058,
            rtt_buckets,
            queued_bytes: 8192,
        };

        // Act
        let text = Snapshot {
            store: Some(store),
            ..quiet_node()
        }
        .render()
        .unwrap();

        // Assert
        let bucket = |le: &str| {
            sample(
                &text,
                &format!(r#"pushlab_redis_round_trip_seconds_bucket{{le="{le}"}}"#),
            )
        };
        assert_eq!(bucket("0.0001"), Some("0"));
        assert_eq!(bucket("0.0005"), Some("1"));
        assert_eq!(bucket("0.0025"), Some("2"), "a bound is inclusive");
        assert_eq!(bucket("0.005"), Some("3"));
        assert_eq!(bucket("2.5"), Some("3"));
        assert_eq!(bucket("+Inf"), Some("4"));
        assert_eq!(sample(&text, "pushlab_redis_queued_bytes"), Some("8192"));
        assert_eq!(
            sample(&text, "pushlab_redis_round_trip_seconds_count"),
            Some("4")
        );
        assert_eq!(sample(&text, "pushlab_redis_calls_total"), Some("4"));
        assert_eq!(sample(&text, "pushlab_redis_errors_total"), Some("2"));
        let sum: f64 = sample(&text, "pushlab_redis_round_trip_seconds_sum")
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 10.0058).abs() < 1e-9, "{sum}");
    }
}
