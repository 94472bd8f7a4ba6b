//! What a run costs the servers: fdatasync and fsync calls (perf's syscall tracepoints,
//! or the disk's flushes) and CPU time.

use super::*;

// ---------------------------------------------------------------------------------------
// Counting: fdatasyncs and CPU of the servers

/// Counts fdatasync + fsync calls of `pids` from now until `finish`.
pub(super) enum SyncCounter {
    Perf(Child),
    Disk { device: String, start: u64 },
    None,
}

pub(super) fn disk_flushes(device: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/diskstats").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // major minor name, then 17 counters: the 16th is flush requests completed.
        (f.len() >= 19 && f[2] == device).then(|| f[17].parse().ok())?
    })
}

/// The block device holding `path` (by its device number), as /proc/diskstats names it.
pub(super) fn device_of(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let text = std::fs::read_to_string("/proc/diskstats").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 3 && f[0] == major.to_string() && f[1] == minor.to_string())
            .then(|| f[2].to_string())
    })
}

impl SyncCounter {
    pub(super) fn start(pids: &[u32], dir: &Path) -> SyncCounter {
        let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
        let perf = Command::new("perf")
            .args([
                "stat",
                "-x,",
                "-e",
                "syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync",
                "-p",
                &list.join(","),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        if let Ok(child) = perf {
            std::thread::sleep(Duration::from_millis(200));
            let mut child = child;
            if child.try_wait().ok().flatten().is_none() {
                return SyncCounter::Perf(child);
            }
        }
        match device_of(dir).and_then(|d| disk_flushes(&d).map(|s| (d, s))) {
            Some((device, start)) => SyncCounter::Disk { device, start },
            None => SyncCounter::None,
        }
    }

    /// `(count, source)`.
    pub(super) fn finish(self) -> (Option<u64>, &'static str) {
        match self {
            SyncCounter::Perf(child) => {
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGINT);
                }
                let out = child.wait_with_output().ok();
                let total = out.and_then(|o| {
                    let text = String::from_utf8_lossy(&o.stderr).into_owned();
                    let counts: Vec<u64> = text
                        .lines()
                        .filter(|l| l.contains("syscalls:sys_enter_f"))
                        .filter_map(|l| l.split(',').next()?.trim().parse().ok())
                        .collect();
                    (!counts.is_empty()).then(|| counts.iter().sum())
                });
                (total, "perf")
            }
            SyncCounter::Disk { device, start } => (
                disk_flushes(&device).map(|n| n.saturating_sub(start)),
                "disk flushes",
            ),
            SyncCounter::None => (None, "-"),
        }
    }
}

/// User + system CPU seconds used so far by `pids`.
pub(super) fn cpu_secs(pids: &[u32]) -> f64 {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            // Fields after the command name in parentheses; utime and stime are 14 and 15.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / tick
}
