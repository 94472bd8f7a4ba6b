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

    /// Creates the group of one attempt with its limits.
    pub fn create(&self, spec: &AttemptSpec, pids_max: u32) -> Result<Group, String> {
        // Unique per server process: several nodes may share a host and its cgroups.
        let name = format!("{}-{}-{}", std::process::id(), spec.job, spec.attempt);
        let dirs: Vec<PathBuf> = match self {
            CgroupSupport::V2 { parent } => vec![parent.join(&name)],
            CgroupSupport::V1 { memory, pids, cpu } => {
                vec![memory.join(&name), pids.join(&name), cpu.join(&name)]
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
        let group = Group {
            v2: matches!(self, CgroupSupport::V2 { .. }),
            dirs,
        };
        let w = |dir: &Path, file: &str, value: String| {
            std::fs::write(dir.join(file), &value)
                .map_err(|e| format!("write {value} to {}: {e}", dir.join(file).display()))
        };
        let quota = (spec.cpu_millis > 0).then(|| spec.cpu_millis as u64 * CPU_PERIOD_US / 1000);
        let result = if group.v2 {
            let d = &group.dirs[0];
            (if spec.memory_bytes > 0 {
                w(d, "memory.max", spec.memory_bytes.to_string())
                    .and_then(|_| w(d, "memory.swap.max", "0".into()).or(Ok(())))
            } else {
                Ok(())
            })
            .and_then(|_| w(d, "pids.max", pids_max.to_string()))
            .and_then(|_| match quota {
                Some(q) => w(d, "cpu.max", format!("{q} {CPU_PERIOD_US}")),
                None => Ok(()),
            })
        } else {
            let (m, p, c) = (&group.dirs[0], &group.dirs[1], &group.dirs[2]);
            (if spec.memory_bytes > 0 {
                w(m, "memory.limit_in_bytes", spec.memory_bytes.to_string()).map(|_| {
                    // Without swap accounting this file is absent; the limit above holds.
                    let _ = w(
                        m,
                        "memory.memsw.limit_in_bytes",
                        spec.memory_bytes.to_string(),
                    );
                })
            } else {
                Ok(())
            })
            .and_then(|_| w(p, "pids.max", pids_max.to_string()))
            .and_then(|_| match quota {
                Some(q) => w(c, "cpu.cfs_period_us", CPU_PERIOD_US.to_string())
                    .and_then(|_| w(c, "cpu.cfs_quota_us", q.to_string())),
                None => Ok(()),
            })
        };
        match result {
            Ok(()) => Ok(group),
            Err(e) => {
                group.remove();
                Err(e)
            }
        }
    }
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

/// One attempt's cgroup (one directory per hierarchy).
#[derive(Debug)]
pub struct Group {
    v2: bool,
    dirs: Vec<PathBuf>,
}

impl Group {
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

    /// SIGKILLs every process in the group until none is left (or 2 s passed).
    pub fn kill_all(&self) {
        if self.v2 && std::fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            // The kernel kills them all, forks included.
        }
        for _ in 0..200 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for p in pids {
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Whether the kernel's OOM killer acted in this group.
    pub fn oom_killed(&self) -> bool {
        if self.v2 {
            let ev =
                std::fs::read_to_string(self.dirs[0].join("memory.events")).unwrap_or_default();
            return ev
                .lines()
                .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"));
        }
        let oc =
            std::fs::read_to_string(self.dirs[0].join("memory.oom_control")).unwrap_or_default();
        oc.lines()
            .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"))
    }

    /// Highest memory use of the group.
    pub fn memory_peak(&self) -> Option<u64> {
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

    /// Whether fork was refused for hitting pids.max.
    pub fn pids_limited(&self) -> bool {
        let d = if self.v2 {
            &self.dirs[0]
        } else {
            &self.dirs[1]
        };
        std::fs::read_to_string(d.join("pids.events"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.strip_prefix("max ").is_some_and(|n| n.trim() != "0"))
    }

    /// Removes the (empty) group directories.
    pub fn remove(&self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}
