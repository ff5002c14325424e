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
//!
//! A server whose store is spread over several Redis instances
//! (`--engine redis://A,redis://B`) has one reading per instance: each
//! instance's delta is taken on its own (each leaves out its own `INFO`),
//! then the deltas are summed ([`sum`]).

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

/// The deltas of several instances added up, command by command.
pub fn sum<'a>(deltas: impl IntoIterator<Item = &'a CommandStats>) -> CommandStats {
    let mut s = CommandStats::new();
    for d in deltas {
        for (name, &calls) in d {
            *s.entry(name.clone()).or_default() += calls;
        }
    }
    s
}

/// A server's engine Redis instances: each one's address and pid (`None`:
/// its CPU not counted); empty without a Redis engine.
pub type Instances = Vec<(SocketAddr, Option<u32>)>;

/// The engine Redis instances of each hummer server, from
/// `--hummer-engine-redis` and `--hummer-engine-pid`: comma-separated per
/// server (in the order of `--hummer`), '-' (or nothing) for a server
/// without a Redis engine, a server's several instances joined by '+' in
/// both lists (their pids in the same order; a pid that is missing or not
/// a number is `None`: that instance's CPU is not counted).
pub fn parse_servers(
    addrs: &[String],
    pids: &[String],
    servers: usize,
) -> Result<Vec<Instances>, String> {
    (0..servers)
        .map(|i| {
            let a = match addrs.get(i).map(String::as_str) {
                None | Some("" | "-") => return Ok(Vec::new()),
                Some(a) => a,
            };
            let p: Vec<&str> = pids.get(i).map_or(Vec::new(), |p| p.split('+').collect());
            let instances: Vec<&str> = a.split('+').collect();
            if p.len() > 1 && p.len() != instances.len() {
                return Err(format!(
                    "--hummer-engine-pid: {} pids for the {} instances {a}",
                    p.len(),
                    instances.len()
                ));
            }
            instances
                .iter()
                .enumerate()
                .map(|(j, a)| {
                    let addr = a
                        .parse::<SocketAddr>()
                        .map_err(|_| format!("--hummer-engine-redis: {a:?} is not an address"))?;
                    Ok((addr, p.get(j).and_then(|v| v.parse().ok())))
                })
                .collect()
        })
        .collect()
}

/// Round trips: the scripts run (`EVAL`, `EVALSHA`).
pub fn round_trips(d: &CommandStats) -> u64 {
    ["eval", "evalsha"].iter().filter_map(|k| d.get(*k)).sum()
}

/// Every command, the scripts' inner ones included.
pub fn total(d: &CommandStats) -> u64 {
    d.values().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(v: &[(&str, u64)]) -> CommandStats {
        v.iter().map(|&(n, c)| (n.to_owned(), c)).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|&s| s.to_owned()).collect()
    }

    #[test]
    fn one_instance_per_server_as_before() {
        let e = parse_servers(
            &strings(&["127.0.0.1:7001", "-", "127.0.0.1:7002"]),
            &strings(&["11", "-", "x"]),
            3,
        )
        .unwrap();
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        assert_eq!(
            e,
            vec![vec![(a(7001), Some(11))], vec![], vec![(a(7002), None)]]
        );
        // Fewer entries than servers: the rest have no engine.
        let e = parse_servers(&strings(&["127.0.0.1:7001"]), &[], 2).unwrap();
        assert_eq!(e, vec![vec![(a(7001), None)], vec![]]);
        assert!(parse_servers(&strings(&["nowhere"]), &[], 1).is_err());
    }

    #[test]
    fn several_instances_joined_by_plus() {
        let e = parse_servers(
            &strings(&["127.0.0.1:7001", "127.0.0.1:7002+127.0.0.1:7003"]),
            &strings(&["11", "12+13"]),
            2,
        )
        .unwrap();
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        assert_eq!(
            e,
            vec![
                vec![(a(7001), Some(11))],
                vec![(a(7002), Some(12)), (a(7003), Some(13))]
            ]
        );
        // One "-" (no pids) for several instances: none counted.
        let e = parse_servers(
            &strings(&["127.0.0.1:7002+127.0.0.1:7003"]),
            &strings(&["-"]),
            1,
        )
        .unwrap();
        assert_eq!(e, vec![vec![(a(7002), None), (a(7003), None)]]);
        // Pids that do not match the instances one to one.
        assert!(parse_servers(
            &strings(&["127.0.0.1:7002+127.0.0.1:7003+127.0.0.1:7004"]),
            &strings(&["12+13"]),
            1
        )
        .is_err());
        assert!(parse_servers(&strings(&["127.0.0.1:7002+"]), &[], 1).is_err());
    }

    #[test]
    fn each_instance_leaves_out_its_own_info_then_the_deltas_add_up() {
        let before = [
            stats(&[("eval", 10), ("xadd", 100), ("info", 3)]),
            stats(&[("eval", 5), ("info", 7)]),
        ];
        let after = [
            stats(&[("eval", 12), ("xadd", 130), ("info", 4)]),
            stats(&[("eval", 9), ("set", 2), ("info", 8)]),
        ];
        let deltas: Vec<CommandStats> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| delta(b, a))
            .collect();
        let s = sum(&deltas);
        assert_eq!(s, stats(&[("eval", 6), ("xadd", 30), ("set", 2)]));
        assert_eq!(round_trips(&s), 6);
        assert_eq!(total(&s), 38);
        // One instance: the sum is its delta.
        assert_eq!(sum([&deltas[0]]), deltas[0]);
    }
}
