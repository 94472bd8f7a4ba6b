//! Workflow files: YAML (or JSON, by the `.json` extension) into a SubmitWorkflow request.
//!
//! ```yaml
//! name: nightly           # optional; default: the file's name without its extension
//! jobs:
//!   - key: fetch
//!     command: [sh, -c, "echo fetching"]
//!     timeout: 30s        # optional; default 30s, "0" for none
//!     retries: 2          # optional; retries after the first attempt
//!     retain: 30d         # optional; kept this long after it ends (default: the
//!                         # cluster's --job-retention; 0 keeps it)
//!   - key: build
//!     command: [make, -j4]
//!     after: [fetch]      # keys of jobs that must succeed first
//!     env: {CC: clang}
//!     constraints: {zone: a}
//!     cpu: 0.5
//!     memory: 512M
//!   - key: test
//!     command: [sh, -c, "make test"]
//!     after: [build]
//!     image: alpine:3.20 # the docker sandbox; `pull: true` fetches a missing image,
//!     user: "1000"       # `sandbox:` auto, process, bubblewrap or docker
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use cathedral_api::v1 as pb;
use serde::Deserialize;

use crate::parse;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    name: Option<String>,
    jobs: Vec<Job>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Job {
    key: String,
    command: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    constraints: BTreeMap<String, String>,
    #[serde(default)]
    timeout: Option<String>,
    /// Kept this long after it ends before retention collects it (0: kept).
    #[serde(default)]
    retain: Option<String>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    cpu: Option<String>,
    #[serde(default)]
    memory: Option<String>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    sandbox: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    pull: bool,
    #[serde(default)]
    user: Option<String>,
}

/// Reads and converts a workflow file; errors name the file and the problem.
pub fn load(path: &Path) -> Result<pb::SubmitWorkflowRequest, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json = path.extension().is_some_and(|e| e == "json");
    let file: File = if json {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let stem = path
        .file_stem()
        .map_or("workflow".into(), |s| s.to_string_lossy().into_owned());
    to_request(file, stem).map_err(|e| format!("{}: {e}", path.display()))
}

fn to_request(file: File, stem: String) -> Result<pb::SubmitWorkflowRequest, String> {
    let mut jobs = Vec::with_capacity(file.jobs.len());
    for j in file.jobs {
        let at = |e: String| format!("job {:?}: {e}", j.key);
        let (sandbox, docker) = parse::sandbox(
            j.sandbox.as_deref(),
            j.image.as_deref(),
            j.pull,
            j.user.as_deref(),
        )
        .map_err(at)?;
        let spec = pb::JobSpec {
            name: j.name.clone().unwrap_or_else(|| j.key.clone()),
            command: j.command.clone(),
            env: j.env.clone().into_iter().collect(),
            cpu_millis: j
                .cpu
                .as_deref()
                .map(parse::cpu_millis)
                .transpose()
                .map_err(at)?
                .unwrap_or(0),
            memory_bytes: j
                .memory
                .as_deref()
                .map(parse::bytes)
                .transpose()
                .map_err(at)?
                .unwrap_or(0),
            constraints: j.constraints.clone().into_iter().collect(),
            timeout_ms: j
                .timeout
                .as_deref()
                .map(parse::duration_ms)
                .transpose()
                .map_err(at)?,
            retry: j.retries.map(|r| pb::RetryPolicy {
                max_attempts: r.saturating_add(1),
                initial_backoff_ms: 1000,
                max_backoff_ms: 60_000,
                multiplier_milli: 2000,
            }),
            priority: j.priority,
            sandbox: sandbox as i32,
            docker,
            retain_ms: j
                .retain
                .as_deref()
                .map(parse::duration_ms)
                .transpose()
                .map_err(at)?,
            ..Default::default()
        };
        jobs.push(pb::WorkflowJob {
            key: j.key,
            spec: Some(spec),
            after: j.after,
        });
    }
    Ok(pb::SubmitWorkflowRequest {
        name: file.name.unwrap_or(stem),
        jobs,
        // The CLI sets these when it sends the request.
        request_id: String::new(),
        namespace: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_give_the_same_request() {
        let dir = tempfile::tempdir().unwrap();
        let y = dir.path().join("w.yaml");
        std::fs::write(
            &y,
            "name: w\njobs:\n  - key: a\n    command: [\"true\"]\n    timeout: 5s\n  - key: b\n    command: [\"false\"]\n    after: [a]\n    retries: 2\n    memory: 1M\n",
        )
        .unwrap();
        let j = dir.path().join("w.json");
        std::fs::write(
            &j,
            r#"{"name":"w","jobs":[{"key":"a","command":["true"],"timeout":"5s"},
               {"key":"b","command":["false"],"after":["a"],"retries":2,"memory":"1M"}]}"#,
        )
        .unwrap();
        let a = load(&y).unwrap();
        assert_eq!(a, load(&j).unwrap());
        assert_eq!(a.jobs.len(), 2);
        let b = a.jobs[1].spec.as_ref().unwrap();
        assert_eq!(b.retry.as_ref().unwrap().max_attempts, 3);
        assert_eq!(b.memory_bytes, 1 << 20);
        assert_eq!(a.jobs[0].spec.as_ref().unwrap().timeout_ms, Some(5000));
    }

    #[test]
    fn a_file_without_a_name_is_named_after_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let y = dir.path().join("release.yaml");
        std::fs::write(&y, "jobs:\n  - key: a\n    command: [\"true\"]\n").unwrap();
        assert_eq!(load(&y).unwrap().name, "release");
    }

    #[test]
    fn mistakes_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let y = dir.path().join("w.yaml");
        std::fs::write(&y, "name: w\njobs:\n  - key: a\n    comand: [x]\n").unwrap();
        let e = load(&y).unwrap_err();
        assert!(e.contains("w.yaml") && e.contains("comand"), "{e}");
        std::fs::write(
            &y,
            "name: w\njobs:\n  - key: a\n    command: [x]\n    timeout: soon\n",
        )
        .unwrap();
        let e = load(&y).unwrap_err();
        assert!(e.contains("job \"a\"") && e.contains("soon"), "{e}");
    }
}
