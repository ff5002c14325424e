//! `/v1/stats`: the figures the dashboard shows, as JSON, for the calling
//! key's app (the busiest channels are filtered to it; the totals are the
//! server's).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::server::{Histogram, LinkKind, Stats};

/// The frames that carry a message in.
const MESSAGE_BODIES: [&str; 2] = ["send_to_user", "send_to_channel"];

/// The JSON of `/v1/stats` for app `appid`.
pub(super) fn overview(stats: &Stats, appid: u32) -> Value {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let connections: u64 = LinkKind::ALL.iter().map(|&k| stats.links_open(k)).sum();
    let logins: u64 = LinkKind::ALL.iter().map(|&k| stats.logins(k)).sum();
    let frames_in: u64 = stats.frames_in().map(|(_, n)| n).sum();
    let messages_in: u64 = stats
        .frames_in()
        .filter(|(b, _)| MESSAGE_BODIES.contains(b))
        .map(|(_, n)| n)
        .sum();
    let deliveries: u64 = stats.deliveries().map(|(_, n)| n).sum();
    let histograms: Vec<&Histogram> = stats.request_latency().map(|(_, h)| h).collect();
    let ms = |q: f64| quantile_bound(&histograms, q).map(|d| d.as_secs_f64() * 1000.0);
    let busiest: Vec<Value> = stats
        .busiest_channels()
        .iter()
        .filter(|c| c.appid == appid)
        .map(|c| {
            json!({
                "appid": c.appid,
                "region": c.region.as_str(),
                "id": c.id,
                "members": c.members,
                "messages": c.messages,
            })
        })
        .collect();
    json!({
        "unix_ms": unix_ms,
        "connections": connections,
        "logins_total": logins,
        "frames_in_total": frames_in,
        "messages_in_total": messages_in,
        "deliveries_total": deliveries,
        "latency_ms": {"p50": ms(0.5), "p99": ms(0.99)},
        "busiest": busiest,
    })
}

/// [`Histogram::quantile_bound`] over several histograms added up (their
/// buckets are the same): the smallest bound under which at least `q` of
/// all the observations fall; `None` without observations or past the last
/// bound.
fn quantile_bound(histograms: &[&Histogram], q: f64) -> Option<Duration> {
    let mut cumulative = vec![(None, 0u64); Histogram::BOUNDS_US.len() + 1];
    for h in histograms {
        for (slot, (bound, n)) in cumulative.iter_mut().zip(h.cumulative()) {
            *slot = (bound, slot.1 + n);
        }
    }
    let total = cumulative.last().map_or(0, |c| c.1);
    if total == 0 {
        return None;
    }
    let want = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    cumulative
        .into_iter()
        .find(|&(_, n)| n >= want)
        .and_then(|(b, _)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_over_several_histograms_match_one_histogram_of_all() {
        let samples_a = [100u64, 300, 2_000, 40_000];
        let samples_b = [90u64, 700, 700, 3_000_000, 20_000_000];
        let (mut a, mut b, mut all) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for us in samples_a {
            a.observe(Duration::from_micros(us));
            all.observe(Duration::from_micros(us));
        }
        for us in samples_b {
            b.observe(Duration::from_micros(us));
            all.observe(Duration::from_micros(us));
        }
        for q in [0.0, 0.1, 0.5, 0.7, 0.8, 0.9, 0.99, 1.0] {
            assert_eq!(
                quantile_bound(&[&a, &b], q),
                all.quantile_bound(q),
                "q = {q}"
            );
        }
        assert_eq!(quantile_bound(&[], 0.5), None);
    }

    #[test]
    fn an_empty_snapshot_has_null_latencies() {
        let v = overview(&Stats::default(), 7);
        assert_eq!(v["latency_ms"]["p50"], Value::Null);
        assert_eq!(v["connections"], 0);
        assert_eq!(v["busiest"], json!([]));
    }
}
