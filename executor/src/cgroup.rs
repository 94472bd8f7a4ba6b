//! Memory, CPU and pids limits through cgroups: v2 (unified) or v1 (one hierarchy per
//! controller), whichever the host mounts writable. Each attempt gets its own group under
//! the server's own; the child joins it before exec, so every process it forks is counted.
//!
//! Written here rather than taken from a library: the few files involved are stable kernel
//! ABI, and the join must happen in the forked child with nothing but raw syscalls.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::spec::AttemptSpec;

/// CFS period for CPU quotas.
const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup interface this host offers the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSupport {
    V2 {
        parent: PathBuf,
    },
    /// Per-controller parents: memory, pids, cpu.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
    },
    None {
        why: String,
    },
}

impl CgroupSupport {
    /// Finds a writable cgroup parent for attempts, under the current process's own group.
    pub fn detect() -> CgroupSupport {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let path_of = |controller: &str| -> Option<String> {
            own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                ctrls
                    .split(',')
                    .any(|c| c == controller)
                    .then(|| path.to_string())
            })
        };
        let root = Path::new("/sys/fs/cgroup");
        // v2 only when it is the whole hierarchy and has the controllers we need.
        if root.join("cgroup.controllers").exists() {
            let ctrls =
                std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let own = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("/");
            if ["memory", "pids", "cpu"]
                .iter()
                .all(|c| ctrls.split_whitespace().any(|x| x == *c))
            {
                let parent = root.join(own.trim_start_matches('/')).join("cathedral");
                return match probe(&parent) {
                    Ok(()) => CgroupSupport::V2 { parent },
                    Err(why) => CgroupSupport::None { why },
                };
            }
        }
        let v1 = |ctrl: &str| -> Result<PathBuf, String> {
            let mount = root.join(ctrl);
            if !mount.join("cgroup.procs").exists() {
                return Err(format!(
                    "no cgroup v1 {ctrl} hierarchy at {}",
                    mount.display()
                ));
            }
            let own = path_of(ctrl).unwrap_or_else(|| "/".into());
            let parent = mount.join(own.trim_start_matches('/')).join("cathedral");
            probe(&parent)?;
            Ok(parent)
        };
        match (v1("memory"), v1("pids"), v1("cpu")) {
            (Ok(memory), Ok(pids), Ok(cpu)) => CgroupSupport::V1 { memory, pids, cpu },
            (Err(why), _, _) | (_, Err(why), _) | (_, _, Err(why)) => CgroupSupport::None { why },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            CgroupSupport::V2 { .. } => "cgroup v2".into(),
            CgroupSupport::V1 { .. } => "cgroup v1".into(),
            CgroupSupport::None { why } => format!("not applied: {why}"),
        }
    }

    /// Creates a new, empty group (one directory per hierarchy) named `name`.
    fn new_group(&self, name: &str) -> Result<Group, String> {
        let dirs: Vec<PathBuf> = match self {
            CgroupSupport::V2 { parent } => vec![parent.join(name)],
            CgroupSupport::V1 { memory, pids, cpu } => {
                vec![memory.join(name), pids.join(name), cpu.join(name)]
            }
            CgroupSupport::None { why } => return Err(why.clone()),
        };
        for d in &dirs {
            match std::fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("create {}: {e}", d.display())),
            }
        }
        Ok(Group {
            v2: matches!(self, CgroupSupport::V2 { .. }),
            dirs,
            oom_base: 0,
            pids_base: 0,
            peak_reset: true,
            uses: 0,
            limits: None,
        })
    }

    /// The parent directories groups are made under.
    fn parents(&self) -> Vec<&Path> {
        match self {
            CgroupSupport::V2 { parent } => vec![parent],
            CgroupSupport::V1 { memory, pids, cpu } => vec![memory, pids, cpu],
            CgroupSupport::None { .. } => Vec::new(),
        }
    }
}

/// The groups of attempts: created as needed and kept for the next attempts once empty
/// (creating and destroying a cgroup costs the kernel far more than rewriting a few limit
/// files: it was a sixth of a trivial job's cost, BENCHMARKS.md).
#[derive(Debug)]
pub struct Cgroups {
    pub support: CgroupSupport,
    idle: std::sync::Mutex<Vec<Group>>,
}

/// The next group name's number in this process.
static GROUP_NAMES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// This process's run, random per start: a group is named `<pid>-<run>-<n>`, so a
/// server that gets the pid of an earlier one (a container's pid 1 restarted) never
/// takes that one's groups for its own.
fn run_id() -> &'static str {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN.get_or_init(|| format!("{:08x}", rand_u32()))
}

/// 32 random bits from the kernel (the clock's nanoseconds where it has none).
fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most the 4 bytes it is given.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    }
}

/// Whether group `name` belongs to a server that is gone: its pid is no process (here),
/// or it is this process's pid but another run's (or the older `<pid>-<n>` form).
fn owner_gone(name: &str) -> bool {
    let Some(owner) = name.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
        return false;
    };
    if owner == std::process::id() as i32 {
        return !name.starts_with(&format!("{owner}-{}-", run_id()));
    }
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(owner, 0) } == 0;
    !alive && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Empty groups kept for reuse at most.
pub const IDLE_GROUPS_MAX: usize = 256;

impl Cgroups {
    pub fn new(support: CgroupSupport) -> Cgroups {
        // Groups of server processes that are gone go; those of other servers running on
        // this host stay. A gone server's group that still holds processes holds an
        // attempt that outlived its node (a SIGKILLed server whose sandbox did not follow
        // it down): the restarted node reports that attempt lost and the job runs again,
        // so the orphan is killed rather than left to run on beside the retry. (While the
        // node was down a retry may already have run elsewhere: that overlap this cannot
        // undo.) Runs once at start, before any attempt: `kill_all`'s short waits block
        // the caller then, not the running node.
        let mut names = std::collections::BTreeSet::new();
        for parent in support.parents() {
            for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    names.insert(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        for name in names {
            if !owner_gone(&name) {
                continue;
            }
            let Ok(group) = support.new_group(&name) else {
                continue;
            };
            let orphans = group.pids();
            // Only processes whose parent is gone too (reparented to a reaper) or is in
            // the group: a server alive in another pid namespace under the same parent
            // group (its pid means nothing here) still parents its attempts, seen or not.
            if !orphans.is_empty() && orphans.iter().all(|p| orphaned(*p, &orphans)) {
                let empty = group.kill_all();
                tracing::warn!(
                    group = %name,
                    processes = orphans.len(),
                    emptied = empty,
                    "killed the processes of an attempt whose server is gone"
                );
            }
            group.remove();
        }
        Cgroups {
            support,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn describe(&self) -> String {
        self.support.describe()
    }

    /// A group for one attempt with its limits: an idle one when there is one.
    pub fn take(&self, spec: &AttemptSpec, pids_max: u32) -> Result<Group, String> {
        let reused = self.idle.lock().unwrap().pop();
        let mut group = match reused {
            Some(g) => g,
            None => {
                // Unique on the host: several nodes may share it and its cgroups, and one
                // process may run several executors (tests).
                let n = GROUP_NAMES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.support
                    .new_group(&format!("{}-{}-{n}", std::process::id(), run_id()))?
            }
        };
        match group.prepare(spec, pids_max) {
            Ok(()) => Ok(group),
            Err(e) => {
                group.remove();
                Err(e)
            }
        }
    }

    /// Takes back the group of an ended attempt: kept when `empty` (its processes all
    /// gone, see [`Group::kill_all`]), removed otherwise.
    pub fn give_back(&self, group: Group, empty: bool) {
        let mut idle = self.idle.lock().unwrap();
        if empty && idle.len() < IDLE_GROUPS_MAX {
            idle.push(group);
        } else {
            drop(idle);
            group.remove();
        }
    }
}

/// Whether process `pid` of a group (`group` all its processes) has lost the server that
/// started it: its parent is in the group, or is a reaper (pid 1, or a subreaper that is
/// not a cathedral server). A parent that cannot be read (outside this pid namespace:
/// ppid 0) or that is a live server says no.
fn orphaned(pid: i32, group: &[i32]) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true; // gone meanwhile
    };
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let Some(ppid) = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return false;
    };
    if ppid == 0 {
        return false;
    }
    if ppid == 1 || group.contains(&ppid) {
        return true;
    }
    let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
    !comm.trim().starts_with("cathedral")
}

/// Checks that a group can be created under `parent` (creating `parent` itself).
fn probe(parent: &Path) -> Result<(), String> {
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let test = parent.join(format!("probe-{}", std::process::id()));
    std::fs::create_dir(&test)
        .and_then(|_| std::fs::remove_dir(&test))
        .map_err(|e| format!("cannot create groups under {}: {e}", parent.display()))
}

/// One attempt's cgroup (one directory per hierarchy). Groups are reused from attempt to
/// attempt (see [`Cgroups`]): the counters read at the end are compared with what they
/// were at the start.
#[derive(Debug)]
pub struct Group {
    v2: bool,
    dirs: Vec<PathBuf>,
    /// `oom_kill` and pids `max` event counts when this attempt began.
    oom_base: u64,
    pids_base: u64,
    /// Whether the peak memory counter was reset for this attempt.
    peak_reset: bool,
    /// Attempts this group has served.
    uses: u64,
    /// The limits last written: `(memory bytes, CPU quota, pids)`; unchanged ones are not
    /// written again.
    limits: Option<(u64, Option<u64>, u32)>,
}

/// What the counters of a group say about the attempt that just ended in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub oom_killed: bool,
    pub pids_limited: bool,
    pub memory_peak: Option<u64>,
}

/// The `name N` counter of a flat keyed file (`memory.events`, `pids.events`,
/// `memory.oom_control`), 0 where absent.
fn counter(path: &Path, name: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

impl Group {
    /// Sets every limit for the next attempt — including "none" for what it does not
    /// limit, since the group may have served another; limits equal to the last ones are
    /// left as they are — and resets the peak counter where the kernel allows. The event
    /// counters' baselines were read when the last attempt ended (a new group's are 0).
    fn prepare(&mut self, spec: &AttemptSpec, pids_max: u32) -> Result<(), String> {
        let w = |dir: &Path, file: &str, value: String| {
            std::fs::write(dir.join(file), &value)
                .map_err(|e| format!("write {value} to {}: {e}", dir.join(file).display()))
        };
        let quota = (spec.cpu_millis > 0).then(|| spec.cpu_millis as u64 * CPU_PERIOD_US / 1000);
        let wanted = (spec.memory_bytes, quota, pids_max);
        let same = self.limits == Some(wanted);
        self.limits = None;
        if self.v2 {
            let d = &self.dirs[0];
            if !same {
                if spec.memory_bytes > 0 {
                    w(d, "memory.max", spec.memory_bytes.to_string())?;
                    let _ = w(d, "memory.swap.max", "0".into());
                } else {
                    w(d, "memory.max", "max".into())?;
                    let _ = w(d, "memory.swap.max", "max".into());
                }
                w(d, "pids.max", pids_max.to_string())?;
                match quota {
                    Some(q) => w(d, "cpu.max", format!("{q} {CPU_PERIOD_US}"))?,
                    None => w(d, "cpu.max", format!("max {CPU_PERIOD_US}"))?,
                }
            }
            // memory.peak resets only per open file (Linux 6.12): a reused group's peak is
            // not this attempt's alone.
            self.peak_reset = !self.reused();
        } else {
            let (m, p, c) = (&self.dirs[0], &self.dirs[1], &self.dirs[2]);
            if !same {
                // memsw must stay at or above the memory limit: lift both, then set both.
                let _ = w(m, "memory.memsw.limit_in_bytes", "-1".into());
                w(m, "memory.limit_in_bytes", "-1".into())?;
                if spec.memory_bytes > 0 {
                    w(m, "memory.limit_in_bytes", spec.memory_bytes.to_string())?;
                    // Without swap accounting this file is absent; the limit above holds.
                    let _ = w(
                        m,
                        "memory.memsw.limit_in_bytes",
                        spec.memory_bytes.to_string(),
                    );
                }
                w(p, "pids.max", pids_max.to_string())?;
                match quota {
                    Some(q) => {
                        w(c, "cpu.cfs_period_us", CPU_PERIOD_US.to_string())?;
                        w(c, "cpu.cfs_quota_us", q.to_string())?;
                    }
                    None => w(c, "cpu.cfs_quota_us", "-1".into())?,
                }
            }
            self.peak_reset =
                !self.reused() || w(m, "memory.max_usage_in_bytes", "0".into()).is_ok();
        }
        self.limits = Some(wanted);
        self.uses += 1;
        Ok(())
    }

    /// Reads what the attempt that just ended did to the counters, and keeps their values
    /// as the next attempt's baselines.
    pub fn finish(&mut self) -> Ended {
        let (events, pids_dir) = if self.v2 {
            ("memory.events", &self.dirs[0])
        } else {
            ("memory.oom_control", &self.dirs[1])
        };
        let oom = counter(&self.dirs[0].join(events), "oom_kill");
        let pids = counter(&pids_dir.join("pids.events"), "max");
        let ended = Ended {
            oom_killed: oom > self.oom_base,
            pids_limited: pids > self.pids_base,
            memory_peak: self.memory_peak(),
        };
        self.oom_base = oom;
        self.pids_base = pids;
        ended
    }

    fn reused(&self) -> bool {
        self.uses > 0
    }

    /// The `cgroup.procs` files the child writes "0" to before exec (joining every group).
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .map(|d| {
                CString::new(d.join("cgroup.procs").as_os_str().as_encoded_bytes())
                    .expect("cgroup paths have no NUL")
            })
            .collect()
    }

    fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for d in &self.dirs {
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// SIGKILLs every process in the group once; whether it held none (a killed process
    /// takes a moment to go, one in uninterruptible sleep longer: `kill_all` waits).
    pub fn kill_once(&self) -> bool {
        if self.v2 && std::fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            // The kernel kills them all, forks included.
        }
        let pids = self.pids();
        for p in &pids {
            // SAFETY: kill(2) takes plain integers; a pid gone since it was listed is ESRCH.
            unsafe {
                libc::kill(*p, libc::SIGKILL);
            }
        }
        pids.is_empty()
    }

    /// SIGKILLs every process in the group until none is left (or 2 s passed); whether
    /// it is empty.
    pub fn kill_all(&self) -> bool {
        if self.v2 && std::fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            // The kernel kills them all, forks included.
        }
        for _ in 0..200 {
            let pids = self.pids();
            if pids.is_empty() {
                return true;
            }
            for p in pids {
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.pids().is_empty()
    }

    /// Highest memory use of the group during this attempt, where the kernel can tell.
    fn memory_peak(&self) -> Option<u64> {
        if !self.peak_reset {
            return None;
        }
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        std::fs::read_to_string(self.dirs[0].join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Removes the (empty) group directories.
    pub fn remove(&self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attempt left running by a server that is gone (its group named after the dead
    /// server's pid, its process reparented) is killed when an executor starts; a live
    /// server's group, and a process whose parent lives, are left.
    #[test]
    fn the_processes_of_a_gone_servers_group_are_killed_at_start() {
        let support = CgroupSupport::detect();
        if matches!(support, CgroupSupport::None { .. }) {
            eprintln!("skipped: no writable cgroup here ({})", support.describe());
            return;
        }
        // A pid that was a process and is no more.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id() as i32;
        gone.wait().unwrap();
        // An orphan: its shell exits at once, so it is reparented as a SIGKILLed server's
        // attempt is.
        let out = std::process::Command::new("sh")
            .args(["-c", "sleep 60 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        let orphan: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let orphan_group = support.new_group(&format!("{dead}-0")).unwrap();
        for f in orphan_group.procs_files() {
            std::fs::write(f.to_str().unwrap(), orphan.to_string()).unwrap();
        }
        // A gone owner's group whose process still has a live parent (this test, standing
        // for a server in another pid namespace): left.
        let parented_group = support.new_group(&format!("{dead}-1")).unwrap();
        let mut parented = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        for f in parented_group.procs_files() {
            std::fs::write(f.to_str().unwrap(), parented.id().to_string()).unwrap();
        }
        // This run's own group: left.
        let live_group = support
            .new_group(&format!("{}-{}-orphan-test", std::process::id(), run_id()))
            .unwrap();
        let mut kept = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        for f in live_group.procs_files() {
            std::fs::write(f.to_str().unwrap(), kept.id().to_string()).unwrap();
        }

        let _ = Cgroups::new(support.clone());

        let dead_or_zombie = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        };
        assert!(dead_or_zombie(orphan), "the orphan was killed");
        assert!(
            orphan_group.dirs.iter().all(|d| !d.exists()),
            "its group removed"
        );
        assert!(
            parented.try_wait().unwrap().is_none(),
            "a parented process runs on"
        );
        assert!(
            kept.try_wait().unwrap().is_none(),
            "this run's attempt runs on"
        );
        assert_eq!(live_group.pids(), vec![kept.id() as i32]);
        for (mut child, group) in [(kept, live_group), (parented, parented_group)] {
            child.kill().unwrap();
            child.wait().unwrap();
            assert!(group.kill_all());
            group.remove();
        }
    }

    #[test]
    fn a_group_is_gone_when_its_server_is_or_is_another_run_of_this_pid() {
        let me = std::process::id();
        assert!(!owner_gone(&format!("{me}-{}-3", run_id())));
        assert!(owner_gone(&format!("{me}-00000000-3")) || run_id() == "00000000");
        assert!(
            owner_gone(&format!("{me}-3")),
            "the older form, this pid: an earlier run"
        );
        assert!(!owner_gone("1-abc-0"), "pid 1 lives");
        assert!(!owner_gone("not-a-pid"));
    }
}
