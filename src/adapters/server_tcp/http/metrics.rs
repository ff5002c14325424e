//! `/metrics`: the merged [`Stats`] of the runner's threads, the runner's
//! and the API listener's own counters, and the process's figures, in the
//! Prometheus text format (version 0.0.4), encoded by prometheus-client
//! through a [`Collector`] that owns one scrape's numbers.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::process::Process;
use crate::server::{Histogram, LinkKind, Stats};

/// The content type of [`encode`]'s text.
pub(super) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Everything one scrape shows.
#[derive(Debug)]
pub(super) struct Scrape {
    /// The threads' snapshots, merged.
    pub stats: Stats,
    /// Connections the runner refused (its caps).
    pub refused: u64,
    /// API calls refused by the API's rate limits.
    pub api_rate_limited: u64,
    /// API requests by (route pattern, status).
    pub api_requests: Vec<((&'static str, u16), u64)>,
    /// API request durations by route pattern.
    pub api_latency: Vec<(&'static str, Histogram)>,
    /// The process's figures (Linux only).
    pub process: Option<Process>,
    /// The webhooks' deliveries and drops.
    #[cfg(feature = "webhooks")]
    pub hooks: super::super::HookStats,
}

/// The scrape in the Prometheus text format.
pub(super) fn encode(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    // Writing to a String cannot fail; a collector's error would be ours.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

type R = Result<(), std::fmt::Error>;

/// A family of one metric type: its series are added by label set.
fn family<'a>(
    e: &'a mut DescriptorEncoder<'_>,
    name: &'a str,
    help: &str,
    kind: MetricType,
) -> Result<MetricEncoder<'a>, std::fmt::Error> {
    e.encode_descriptor(name, help, None, kind)
}

fn counter(m: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, v: u64) -> R {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge(m: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, v: u64) -> R {
    m.encode_family(labels)?.encode_gauge(&v)
}

/// A counter without labels.
fn lone_counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> R {
    family(e, name, help, MetricType::Counter)?.encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// A gauge without labels.
fn lone_gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: impl Into<f64>) -> R {
    family(e, name, help, MetricType::Gauge)?.encode_gauge(&v.into())
}

/// A histogram's series: per-bucket counts (the encoder adds them up) from
/// the cumulative ones, the unbounded bucket as `+Inf`.
fn histogram(m: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, h: &Histogram) -> R {
    let mut previous = 0;
    let buckets: Vec<(f64, u64)> = h
        .cumulative()
        .map(|(bound, n)| {
            let in_bucket = n - previous;
            previous = n;
            (bound.map_or(f64::INFINITY, |b| b.as_secs_f64()), in_bucket)
        })
        .collect();
    m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
        h.sum().as_secs_f64(),
        h.count(),
        &buckets,
        None,
    )
}

#[cfg(feature = "webhooks")]
impl Scrape {
    fn encode_hooks(&self, e: &mut DescriptorEncoder<'_>) -> R {
        use super::super::{HookDrop, HookOutcome, HOOK_EVENT_TYPES};
        let h = &self.hooks;
        let mut m = family(
            e,
            "hummer_hook_deliveries",
            "Webhook delivery attempts, by event type and outcome (ok, retry, failed).",
            MetricType::Counter,
        )?;
        for event in HOOK_EVENT_TYPES {
            for outcome in HookOutcome::ALL {
                let n = h.deliveries(event, outcome);
                if n > 0 {
                    counter(
                        &mut m,
                        &[("event", event), ("outcome", outcome.as_str())],
                        n,
                    )?;
                }
            }
        }
        let mut m = family(
            e,
            "hummer_hook_dropped",
            "Webhook events given up, by reason (queue_full, gave_up, shutdown).",
            MetricType::Counter,
        )?;
        for reason in HookDrop::ALL {
            counter(&mut m, &[("reason", reason.as_str())], h.dropped(reason))?;
        }
        lone_gauge(
            e,
            "hummer_hook_queue",
            "Webhook events waiting for delivery.",
            h.queue_len() as f64,
        )
    }
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> R {
        let s = &self.stats;
        let kinds = LinkKind::ALL;
        let mut m = family(
            &mut e,
            "hummer_connections",
            "Client links open now (logged in or not), by transport.",
            MetricType::Gauge,
        )?;
        for k in kinds {
            gauge(&mut m, &[("transport", k.name())], s.links_open(k))?;
        }
        let mut m = family(
            &mut e,
            "hummer_connections_accepted",
            "Client links accepted since the start, by transport.",
            MetricType::Counter,
        )?;
        for k in kinds {
            counter(&mut m, &[("transport", k.name())], s.links_accepted(k))?;
        }
        lone_counter(
            &mut e,
            "hummer_connections_refused",
            "Connections closed at once by max_connections or max_connections_per_ip.",
            self.refused,
        )?;
        let mut m = family(
            &mut e,
            "hummer_logins",
            "Successful logins (resumes included), by transport.",
            MetricType::Counter,
        )?;
        for k in kinds {
            counter(&mut m, &[("transport", k.name())], s.logins(k))?;
        }
        lone_gauge(
            &mut e,
            "hummer_instances",
            "Logged-in instances, those in their presence grace included.",
            s.instances() as f64,
        )?;
        lone_gauge(
            &mut e,
            "hummer_channels",
            "Channels held (with members or retained history).",
            s.channels() as f64,
        )?;
        lone_gauge(
            &mut e,
            "hummer_channel_members",
            "Memberships: distinct uids in each channel, added up.",
            s.members() as f64,
        )?;
        let mut m = family(
            &mut e,
            "hummer_frames_in",
            "Frames received from clients, by body.",
            MetricType::Counter,
        )?;
        for (body, n) in s.frames_in() {
            counter(&mut m, &[("body", body)], n)?;
        }
        let mut m = family(
            &mut e,
            "hummer_deliveries",
            "Frames queued for clients, by body (a broadcast counts once per receiver).",
            MetricType::Counter,
        )?;
        for (body, n) in s.deliveries() {
            counter(&mut m, &[("body", body)], n)?;
        }
        lone_gauge(
            &mut e,
            "hummer_queued_bytes",
            "Bytes queued for clients and not yet taken by their transports.",
            s.queued_bytes() as f64,
        )?;
        let mut m = family(
            &mut e,
            "hummer_closes",
            "Links closed, by reason (lost: the transport went away by itself).",
            MetricType::Counter,
        )?;
        for (reason, n) in s.closes() {
            counter(&mut m, &[("reason", reason)], n)?;
        }
        let mut m = family(
            &mut e,
            "hummer_refusals",
            "Requests refused, by the code of their ErrorReply.",
            MetricType::Counter,
        )?;
        for (code, n) in s.refusals() {
            counter(&mut m, &[("code", code.to_string())], n)?;
        }
        let mut m = family(
            &mut e,
            "hummer_rate_limited",
            "Requests refused by a rate limit (4003 or HTTP 429), by limit.",
            MetricType::Counter,
        )?;
        for (limit, n) in s.rate_limited() {
            counter(&mut m, &[("limit", limit)], n)?;
        }
        counter(&mut m, &[("limit", "api_requests")], self.api_rate_limited)?;
        lone_counter(
            &mut e,
            "hummer_resumes",
            "Logins that resumed an instance in its grace period.",
            s.resumes(),
        )?;
        lone_counter(
            &mut e,
            "hummer_replayed_messages",
            "Retained messages replayed (on a resume, a rejoin or a fetch).",
            s.replayed_messages(),
        )?;
        lone_counter(
            &mut e,
            "hummer_gaps_reported",
            "Gaps reported to clients (ranges of messages they will never get).",
            s.gaps_reported(),
        )?;
        let mut m = family(
            &mut e,
            "hummer_request_duration_seconds",
            "Time from a request's frame read to its reply queued, by operation.",
            MetricType::Histogram,
        )?;
        for (op, h) in s.request_latency() {
            histogram(&mut m, &[("op", op)], h)?;
        }
        let mut m = family(
            &mut e,
            "hummer_api_requests",
            "Requests to the API listener, by route pattern and HTTP status.",
            MetricType::Counter,
        )?;
        for ((route, status), n) in &self.api_requests {
            counter(
                &mut m,
                &[("route", *route), ("status", &status.to_string())],
                *n,
            )?;
        }
        let mut m = family(
            &mut e,
            "hummer_api_request_duration_seconds",
            "Time to answer a request of the API listener, by route pattern.",
            MetricType::Histogram,
        )?;
        for (route, h) in &self.api_latency {
            histogram(&mut m, &[("route", *route)], h)?;
        }
        #[cfg(feature = "webhooks")]
        self.encode_hooks(&mut e)?;
        if let Some(p) = self.process {
            family(
                &mut e,
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&p.cpu_seconds, None)?;
            lone_gauge(
                &mut e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                p.resident_bytes as f64,
            )?;
            lone_gauge(
                &mut e,
                "process_open_fds",
                "Number of open file descriptors.",
                p.open_fds as f64,
            )?;
            lone_gauge(
                &mut e,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                p.start_time_seconds,
            )?;
        }
        Ok(())
    }
}
