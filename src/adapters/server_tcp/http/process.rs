//! The process's own figures for `/metrics`, read from `/proc/self` on
//! Linux (the `process_*` names every Prometheus client uses); elsewhere
//! none.

/// CPU, memory, descriptors and start time of this process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Process {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Clock ticks per second of `/proc`'s times: `USER_HZ`, which the kernel
/// fixes at 100 for user space on every architecture Linux runs on today
/// (what `sysconf(_SC_CLK_TCK)` returns).
#[cfg(target_os = "linux")]
const TICKS_PER_SECOND: f64 = 100.0;

/// The figures now, or `None` where there is no `/proc/self`.
#[cfg(target_os = "linux")]
pub(super) fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // the fields after its closing parenthesis start with field 3.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime, start_ticks) = (field(14)?, field(15)?, field(22)?);
    let boot_time: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(Process {
        cpu_seconds: (utime + stime) / TICKS_PER_SECOND,
        resident_bytes: rss_kib * 1024,
        open_fds,
        start_time_seconds: boot_time + start_ticks / TICKS_PER_SECOND,
    })
}

/// The figures now, or `None` where there is no `/proc/self`.
#[cfg(not(target_os = "linux"))]
pub(super) fn read() -> Option<Process> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn this_process_has_figures() {
        let p = super::read().expect("/proc/self on Linux");
        assert!(p.resident_bytes > 0);
        assert!(p.open_fds >= 3, "stdio at least: {}", p.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0 * 365.0);
    }
}
