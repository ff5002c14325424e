//! The Redis behind a `hummer-server --engine redis://…` (its durable
//! store): `INFO commandstats` read around each run, to count the commands
//! the server's writes cost per published and per delivered message.
//!
//! Redis counts the commands a script runs (`SET`, `XADD` … inside the
//! write script's `EVAL`) in their own `cmdstat_` lines as well as the
//! `EVAL` itself, so the sum over every line is every command Redis ran;
//! `EVAL` + `EVALSHA` are the round trips (one per batch, plus the lease's
//! renewals, a few per second at most). The `INFO` of this reader is left
//! out.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Calls per command name (lowercase, e.g. `eval`, `xadd`).
pub type CommandStats = HashMap<String, u64>;

/// `INFO commandstats` of the Redis at `addr`, over raw RESP.
pub fn command_stats(addr: SocketAddr) -> io::Result<CommandStats> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")?;
    let mut r = BufReader::new(s);
    let mut head = String::new();
    r.read_line(&mut head)?;
    let len: usize = head
        .trim_end()
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other(format!("INFO answered {head:?}")))?;
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let mut stats = CommandStats::new();
    for line in String::from_utf8_lossy(&body).lines() {
        // cmdstat_xadd:calls=10,usec=…,…
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let calls = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        stats.insert(name.to_owned(), calls);
    }
    Ok(stats)
}

/// What ran between two readings, without the readings' own `INFO`s.
pub fn delta(before: &CommandStats, after: &CommandStats) -> CommandStats {
    let mut d = CommandStats::new();
    for (name, &calls) in after {
        let n = calls.saturating_sub(before.get(name).copied().unwrap_or(0));
        let n = if name == "info" {
            n.saturating_sub(1)
        } else {
            n
        };
        if n > 0 {
            d.insert(name.clone(), n);
        }
    }
    d
}

/// Round trips: the scripts run (`EVAL`, `EVALSHA`).
pub fn round_trips(d: &CommandStats) -> u64 {
    ["eval", "evalsha"].iter().filter_map(|k| d.get(*k)).sum()
}

/// Every command, the scripts' inner ones included.
pub fn total(d: &CommandStats) -> u64 {
    d.values().sum()
}
