//! What an attempt is asked to do, and how it ended.

use std::collections::BTreeMap;

/// Open files an attempt may hold (RLIMIT_NOFILE).
pub const OPEN_FILES_MAX: u64 = 4096;

/// One attempt of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSpec {
    pub job: u64,
    pub attempt: u32,
    /// argv; not run through a shell.
    pub command: Vec<String>,
    /// The whole environment of the program (nothing is inherited but a default `PATH`
    /// when this has none).
    pub env: BTreeMap<String, String>,
    /// 0: none.
    pub timeout_ms: u64,
    /// CPU share in millicores (0: no limit).
    pub cpu_millis: u32,
    /// Memory limit in bytes (0: no limit).
    pub memory_bytes: u64,
    /// Processes and threads the attempt may have at once (0: the executor's default).
    pub pids_max: u32,
}

impl AttemptSpec {
    pub fn new(job: u64, attempt: u32, command: &[&str]) -> AttemptSpec {
        AttemptSpec {
            job,
            attempt,
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            timeout_ms: 0,
            cpu_millis: 0,
            memory_bytes: 0,
            pids_max: 0,
        }
    }
}

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
}

/// Why the executor (or the kernel) killed an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    Timeout,
    Cancelled,
    /// The memory limit was hit (the kernel's OOM killer acted in the attempt's cgroup).
    MemoryLimit,
}

impl KillReason {
    pub fn name(self) -> &'static str {
        match self {
            KillReason::Timeout => "timeout",
            KillReason::Cancelled => "cancelled",
            KillReason::MemoryLimit => "memory limit",
        }
    }
}

/// The outcome of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    pub exit: Exit,
    pub duration_ms: u64,
    /// The last bytes of the output.
    pub output_tail: Vec<u8>,
    pub output_bytes: u64,
    /// Output past the cap was dropped.
    pub output_truncated: bool,
    /// Which sandbox ran it: "process" or "bwrap".
    pub sandbox: &'static str,
    pub killed_because: Option<KillReason>,
    /// How the memory, CPU and pids limits were applied ("cgroup v1", "cgroup v2"), or why
    /// they could not be.
    pub limits: String,
    /// CPU time of the attempt's processes, where measured.
    pub cpu_ms: Option<u64>,
    /// Highest memory use in bytes, where measured (cgroup).
    pub memory_peak_bytes: Option<u64>,
    /// Step outputs: the files the program left in `$CATHEDRAL_OUTPUTS` (name → bytes).
    pub outputs: BTreeMap<String, Vec<u8>>,
    /// Files there that could not be published, and why (a bad name, too large, too many).
    pub outputs_refused: Vec<String>,
}

/// The variable naming the directory where an attempt leaves its step outputs: one file
/// per output, named after it.
pub const OUTPUTS_ENV: &str = "CATHEDRAL_OUTPUTS";
/// The directory under an attempt's work directory that `CATHEDRAL_OUTPUTS` names.
pub const OUTPUTS_SUBDIR: &str = ".cathedral-outputs";
/// Outputs read at most, and bytes of each (the replicated state's bounds are the
/// consensus crate's `STEP_OUTPUTS_MAX` and `STEP_OUTPUT_BYTES_MAX`; these match them).
pub const OUTPUTS_READ_MAX: usize = 16;
pub const OUTPUT_VALUE_READ_MAX: u64 = 64 * 1024;

/// Reads the step outputs an attempt left in `dir`: at most [`OUTPUTS_READ_MAX`] files of
/// at most [`OUTPUT_VALUE_READ_MAX`] bytes, named with letters, digits, `_` and `-` (up to
/// 64 bytes); anything else is refused, with the reason. One trailing newline (`\n` or
/// `\r\n`) is trimmed from each value, so `echo v1.2.3 > $CATHEDRAL_OUTPUTS/version`
/// publishes `v1.2.3`; any other whitespace is kept.
pub fn read_outputs(dir: &std::path::Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut refused = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (out, refused);
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let ok_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let meta = e.metadata();
        if !ok_name {
            refused.push(format!(
                "{name:?}: a name of letters, digits, _ and - (at most 64 bytes)"
            ));
        } else if !meta.as_ref().is_ok_and(|m| m.is_file()) {
            refused.push(format!("{name}: not a regular file"));
        } else if meta.as_ref().is_ok_and(|m| m.len() > OUTPUT_VALUE_READ_MAX) {
            refused.push(format!(
                "{name}: larger than STEP_OUTPUT_BYTES_MAX ({OUTPUT_VALUE_READ_MAX} bytes)"
            ));
        } else if out.len() == OUTPUTS_READ_MAX {
            refused.push(format!(
                "{name}: more than STEP_OUTPUTS_MAX ({OUTPUTS_READ_MAX}) outputs"
            ));
        } else {
            match std::fs::read(e.path()) {
                Ok(mut v) => {
                    if v.ends_with(b"\n") {
                        v.pop();
                        if v.ends_with(b"\r") {
                            v.pop();
                        }
                    }
                    out.insert(name, v);
                }
                Err(err) => refused.push(format!("{name}: {err}")),
            }
        }
    }
    (out, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_read_within_their_bounds_and_the_rest_refused_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("version"), "1.2.3").unwrap();
        std::fs::write(
            d.join("big"),
            vec![b'x'; OUTPUT_VALUE_READ_MAX as usize + 1],
        )
        .unwrap();
        std::fs::write(d.join("bad name"), "x").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        for i in 0..OUTPUTS_READ_MAX {
            std::fs::write(d.join(format!("n{i:02}")), "v").unwrap();
        }
        let (out, refused) = read_outputs(d);
        assert_eq!(out.len(), OUTPUTS_READ_MAX);
        assert_eq!(out["n00"], b"v");
        let text = refused.join("\n");
        assert!(
            text.contains("big: larger than STEP_OUTPUT_BYTES_MAX"),
            "{text}"
        );
        assert!(text.contains("\"bad name\""), "{text}");
        assert!(text.contains("sub: not a regular file"), "{text}");
        assert!(text.contains("more than STEP_OUTPUTS_MAX"), "{text}");
        assert_eq!(read_outputs(&d.join("none")), (BTreeMap::new(), vec![]));
    }

    #[test]
    fn one_trailing_newline_is_trimmed_from_an_output() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, value) in [
            ("echoed", "v1.2.3\n"),
            ("crlf", "a\r\n"),
            ("two", "b\n\n"),
            ("bare", "c"),
            ("spaces", " d \n"),
        ] {
            std::fs::write(d.join(name), value).unwrap();
        }
        let (out, refused) = read_outputs(d);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(out["echoed"], b"v1.2.3");
        assert_eq!(out["crlf"], b"a");
        assert_eq!(out["two"], b"b\n");
        assert_eq!(out["bare"], b"c");
        assert_eq!(out["spaces"], b" d ");
    }
}
