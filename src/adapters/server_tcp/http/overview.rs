//! `/v1/stats`: the figures the dashboard shows, as JSON, for the calling
//! key's app (the busiest channels are filtered to it; the totals are the
//! server's).

use std::time::{SystemTime, UNIX_EPOCH};

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
    // Every operation's requests together.
    let mut all = Histogram::default();
    for (_, h) in stats.request_latency() {
        all.merge(h);
    }
    let ms = |q: f64| all.quantile_bound(q).map(|d| d.as_secs_f64() * 1000.0);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_snapshot_has_null_latencies() {
        let v = overview(&Stats::default(), 7);
        assert_eq!(v["latency_ms"]["p50"], Value::Null);
        assert_eq!(v["connections"], 0);
        assert_eq!(v["busiest"], json!([]));
    }
}
