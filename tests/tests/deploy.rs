//! The deployment files, checked as they are used:
//!
//! - **Kubernetes**: `kubectl kustomize` renders `deploy/kubernetes/base` and every overlay
//!   under `deploy/kubernetes/overlays/` (found by listing the directory, so a new overlay
//!   is covered). Each render has a headless service, a StatefulSet of coordinators and a
//!   PodDisruptionBudget (and any Deployment of workers is checked like the StatefulSet);
//!   the containers expose the server's ports and probe `/readyz` and `/healthz`;
//!   selectors match the pod labels; every `--flag` and `CATHEDRAL_*` variable is one
//!   `cathedral-server --help` documents; the `dns:` gossip seed, the join address and the
//!   coordinators' advertised address (after Kubernetes' `$(VAR)` expansion) name the
//!   services of the same render, in its namespace — so an overlay that renames objects or
//!   moves them to a namespace must keep the addresses in step; TLS files come from a
//!   mounted secret and the probes then speak HTTPS; no secret value is shipped.
//! - **Dockerfile**: builds the workspace's binaries and exposes the same ports.
//! - **Prometheus**: `deploy/prometheus/alerts.yml` passes `promtool check rules` and the
//!   unit tests in `alerts_test.yml` (`promtool test rules`), which make every alert fire
//!   and keep it quiet at least once; every rule has a severity, a summary and a
//!   description.
//! - **Grafana**: `deploy/grafana/cathedral.json` is JSON whose every panel queries
//!   Prometheus.
//! - Alert rules and dashboard query only series the server serves: [`KNOWN_METRICS`],
//!   which a test keeps equal to the series `server/src` describes.
//!
//! Without `kubectl` (Debian's kubernetes-client) or `promtool` (Debian's prometheus) the
//! parts that need them say so and pass; scripts/test.sh installs both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cathedral_server::gossip::Seed;
use cathedral_tests::bin;
use serde::Deserialize;
use serde_yaml_ng::Value;

/// Every series the server's `/metrics` serves (base names: a histogram's `_bucket`,
/// `_sum` and `_count` are stripped before looking a name up). It must match the series
/// described in `server/src/metrics.rs`;
/// `the_known_metrics_are_the_ones_the_server_describes` checks that.
const KNOWN_METRICS: &[&str] = &[
    "cathedral_api_request_duration_seconds",
    "cathedral_api_requests_total",
    "cathedral_attempt_run_seconds",
    "cathedral_attempts_in_flight",
    "cathedral_attempts_total",
    "cathedral_data_dir_capacity_bytes",
    "cathedral_data_dir_free_bytes",
    "cathedral_events_total",
    "cathedral_executor_attempts_started_total",
    "cathedral_executor_kills_total",
    "cathedral_gossip_datagrams_received_total",
    "cathedral_gossip_datagrams_sent_total",
    "cathedral_gossip_mac_failures_total",
    "cathedral_gossip_members",
    "cathedral_gossip_partitioned",
    "cathedral_gossip_phi",
    "cathedral_job_queue_wait_seconds",
    "cathedral_job_retries_total",
    "cathedral_jobs",
    "cathedral_namespace_jobs",
    "cathedral_namespace_queue_wait_seconds",
    "cathedral_namespace_quota",
    "cathedral_namespace_use",
    "cathedral_namespace_weight",
    "cathedral_raft_append_entries_sent_total",
    "cathedral_raft_applied_index",
    "cathedral_raft_commit_index",
    "cathedral_raft_entries_sent_total",
    "cathedral_raft_has_leader",
    "cathedral_raft_last_log_index",
    "cathedral_raft_leader",
    "cathedral_raft_leader_changes_total",
    "cathedral_raft_proposal_duration_seconds",
    "cathedral_raft_proposals_total",
    "cathedral_raft_snapshot_index",
    "cathedral_raft_snapshot_sent_bytes_total",
    "cathedral_raft_snapshots_sent_total",
    "cathedral_raft_term",
    "cathedral_raft_voters",
    "cathedral_scheduler_pass_duration_seconds",
    "cathedral_scheduler_placements_per_pass",
    "cathedral_scheduler_unplaceable_jobs",
    "cathedral_snapshot_writes_total",
    "cathedral_snapshot_written_bytes_total",
    "cathedral_state_divergences_total",
    "cathedral_state_fenced_reports_total",
    "cathedral_state_rejected_commands_total",
    "cathedral_storage_commit_rounds_total",
    "cathedral_storage_fdatasync_duration_seconds",
    "cathedral_storage_fdatasyncs_total",
    "cathedral_storage_purges_total",
    "cathedral_storage_records_total",
    "cathedral_storage_segments",
    "cathedral_storage_written_bytes_total",
];

/// The image's gRPC port, which gossip (UDP) shares.
const GRPC_PORT: u64 = 50051;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Whether `tool` runs (`args` being a harmless invocation such as `--version`).
fn installed(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd`, failing the test with its output unless it succeeds; returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn server_help() -> String {
    run(Command::new(bin("cathedral-server")).arg("--help"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn seq(v: &Value) -> Vec<Value> {
    v.as_sequence().cloned().unwrap_or_default()
}

/// A mapping of strings (labels, a selector's matchLabels).
fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a (non-empty) label selector picks pods with `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// (name, port, protocol) of a port list.
fn ports(list: &Value) -> BTreeSet<(String, u64, String)> {
    seq(list)
        .iter()
        .map(|p| {
            (
                s(&p["name"]).to_string(),
                p["port"].as_u64().or(p["containerPort"].as_u64()).unwrap(),
                s(&p["protocol"]).to_string(),
            )
        })
        .collect()
}

fn server_ports() -> BTreeSet<(String, u64, String)> {
    [
        ("grpc", GRPC_PORT, "TCP"),
        ("gossip", GRPC_PORT, "UDP"),
        ("http", 8081, "TCP"),
    ]
    .iter()
    .map(|(n, p, t)| (n.to_string(), *p, t.to_string()))
    .collect()
}

// ---------------------------------------------------------------------------------------
// Kubernetes

/// One `kubectl kustomize` output: its documents, by the directory they came from.
struct Render {
    name: String,
    docs: Vec<Value>,
}

impl Render {
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| s(&d["kind"]) == kind).collect()
    }
}

/// `deploy/kubernetes/base` and every directory under `deploy/kubernetes/overlays/`.
fn kustomizations() -> Vec<PathBuf> {
    let kube = root().join("deploy/kubernetes");
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(kube.join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    overlays.sort();
    assert!(
        !overlays.is_empty(),
        "no overlays under deploy/kubernetes/overlays"
    );
    std::iter::once(kube.join("base")).chain(overlays).collect()
}

fn render(dir: &Path) -> Render {
    let text = run(Command::new("kubectl").arg("kustomize").arg(dir));
    let mut docs = Vec::new();
    for d in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        if !v.is_null() {
            docs.push(v);
        }
    }
    let name = dir
        .strip_prefix(root().join("deploy/kubernetes"))
        .unwrap()
        .display()
        .to_string();
    Render { name, docs }
}

/// A container's environment as the kubelet sees it: each variable in order, its value
/// with `$(VAR)` references to the variables above it expanded (None: from a secret).
/// Downward-API fields become `pod` (metadata.name), `namespace` and a made-up pod IP.
fn environment(container: &Value, pod: &str, namespace: &str) -> Vec<(String, Option<String>)> {
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    let mut env = Vec::new();
    for e in seq(&container["env"]) {
        let name = s(&e["name"]).to_string();
        let value = if let Some(v) = e["value"].as_str() {
            Some(expand(v, &known))
        } else {
            match s(&e["valueFrom"]["fieldRef"]["fieldPath"]) {
                "metadata.name" => Some(pod.to_string()),
                "metadata.namespace" => Some(namespace.to_string()),
                "status.podIP" => Some("10.0.0.7".to_string()),
                _ => None,
            }
        };
        if let Some(v) = &value {
            known.insert(name.clone(), v.clone());
        }
        env.push((name, value));
    }
    env
}

/// Kubernetes' expansion of a value: `$(NAME)` of a known variable is replaced, `$$` is a
/// literal `$`, anything else stays as written.
fn expand(value: &str, known: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("$(") {
            let found = after
                .find(')')
                .and_then(|close| known.get(&after[..close]).map(|v| (close, v)));
            match found {
                Some((close, v)) => {
                    out.push_str(v);
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn env_value<'a>(env: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    env.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_deref())
}

/// The words of a container's command and args (shell scripts split on whitespace, quotes
/// stripped).
fn words(container: &Value) -> Vec<String> {
    ["command", "args"]
        .iter()
        .flat_map(|k| seq(&container[*k]))
        .flat_map(|v| {
            s(&v)
                .split_whitespace()
                .map(|w| w.trim_matches(|c| c == '"' || c == '\'').to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The namespace every object of a render is in (None: the one `kubectl apply` uses).
fn namespace_of(r: &Render) -> Option<String> {
    let namespaces: BTreeSet<Option<String>> = r
        .docs
        .iter()
        .filter(|d| s(&d["kind"]) != "Namespace")
        .map(|d| d["metadata"]["namespace"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        namespaces.len(),
        1,
        "{}: objects in several namespaces: {namespaces:?}",
        r.name
    );
    let ns = namespaces.into_iter().next().unwrap();
    for n in r.of_kind("Namespace") {
        assert_eq!(
            Some(s(&n["metadata"]["name"])),
            ns.as_deref(),
            "{}: a Namespace other than the objects'",
            r.name
        );
    }
    ns
}

/// The kustomize built into kubectl (major, minor), from `kubectl version --client`
/// (which names it from kubectl 1.24 on); None where kubectl does not say.
fn kustomize_version() -> Option<(u32, u32)> {
    let out = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Kustomize Version: v"))?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

#[test]
fn every_kustomization_renders_a_consistent_cluster() {
    if !installed("kubectl", &["version", "--client"]) {
        eprintln!("skipped: kubectl not installed (Debian package kubernetes-client)");
        return;
    }
    // The overlays use `replacements` and `labels`, which older kustomize lacks (Debian
    // 12's kubernetes-client is kubectl 1.20, with kustomize v2).
    match kustomize_version() {
        Some((major, _)) if major >= 5 => {}
        other => {
            eprintln!(
                "skipped: kubectl's kustomize is {other:?}; rendering the overlays needs \
                 kustomize v5 (kubectl 1.27 or later)"
            );
            return;
        }
    }
    let help = server_help();
    for dir in kustomizations() {
        check_render(&render(&dir), &help);
    }
}

fn check_render(r: &Render, help: &str) {
    let name = &r.name;
    // Workers (Deployments) are optional — the dev overlay has none; each one there is
    // checked like the StatefulSet below.
    let kinds: BTreeSet<&str> = r.docs.iter().map(|d| s(&d["kind"])).collect();
    for want in ["Service", "StatefulSet", "PodDisruptionBudget"] {
        assert!(kinds.contains(want), "{name}: no {want} in {kinds:?}");
    }
    assert!(
        !kinds.contains("Secret"),
        "{name}: secrets are created by hand, never shipped"
    );
    let ns = namespace_of(r);
    let ns = ns.as_deref().unwrap_or("NAMESPACE");

    // The coordinators and their headless service.
    let headless: Vec<&Value> = r
        .of_kind("Service")
        .into_iter()
        .filter(|d| s(&d["spec"]["clusterIP"]) == "None")
        .collect();
    assert_eq!(headless.len(), 1, "{name}: one headless service");
    let headless = headless[0];
    let service = s(&headless["metadata"]["name"]);
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"],
        Value::Bool(true),
        "{name}: seeds resolve before pods are ready"
    );
    assert_eq!(ports(&headless["spec"]["ports"]), server_ports(), "{name}");

    let sts = r.of_kind("StatefulSet");
    assert_eq!(sts.len(), 1, "{name}: one StatefulSet of coordinators");
    let sts = sts[0];
    let sts_name = s(&sts["metadata"]["name"]);
    assert_eq!(s(&sts["spec"]["serviceName"]), service, "{name}");
    let coordinators = string_map(&sts["spec"]["template"]["metadata"]["labels"]);
    assert!(
        selects(&string_map(&headless["spec"]["selector"]), &coordinators),
        "{name}: the headless service selects the coordinators"
    );
    let pdb = r.of_kind("PodDisruptionBudget")[0];
    assert!(
        selects(
            &string_map(&pdb["spec"]["selector"]["matchLabels"]),
            &coordinators
        ),
        "{name}: the PodDisruptionBudget covers the coordinators"
    );
    assert_eq!(
        pdb["spec"]["maxUnavailable"].as_u64(),
        Some(1),
        "{name}: one voter at a time"
    );

    // Where a node may join: a service in front of the coordinators, or the first one.
    let mut joins: BTreeSet<String> = r
        .of_kind("Service")
        .into_iter()
        .filter(|svc| selects(&string_map(&svc["spec"]["selector"]), &coordinators))
        .map(|svc| {
            format!(
                "{}.{ns}.svc.cluster.local:{GRPC_PORT}",
                s(&svc["metadata"]["name"])
            )
        })
        .collect();
    joins.insert(format!(
        "{sts_name}-0.{service}.{ns}.svc.cluster.local:{GRPC_PORT}"
    ));

    let workers = r.of_kind("Deployment");
    for w in &workers {
        let labels = string_map(&w["spec"]["template"]["metadata"]["labels"]);
        assert!(
            !selects(&string_map(&headless["spec"]["selector"]), &labels),
            "{name}: the headless service lists coordinators only"
        );
    }
    for w in std::iter::once(&sts).chain(&workers) {
        let wname = format!("{name}: {}", s(&w["metadata"]["name"]));
        let is_sts = s(&w["kind"]) == "StatefulSet";
        let pod = format!("{}-1", s(&w["metadata"]["name"]));
        let spec = &w["spec"];
        assert!(
            selects(
                &string_map(&spec["selector"]["matchLabels"]),
                &string_map(&spec["template"]["metadata"]["labels"])
            ),
            "{wname}: the selector picks the pod template's labels"
        );
        let containers = seq(&spec["template"]["spec"]["containers"]);
        let c = containers
            .iter()
            .find(|c| s(&c["name"]) == "cathedral-server")
            .unwrap_or_else(|| panic!("{wname}: no container cathedral-server"));
        assert_eq!(ports(&c["ports"]), server_ports(), "{wname}");

        // Every flag is one the server has.
        let words = words(c);
        assert!(
            words.iter().any(|w| w == "cathedral-server") || c["command"].is_null(),
            "{wname} runs cathedral-server (the image's entrypoint)"
        );
        for word in words.iter().filter(|w| w.starts_with("--")) {
            let flag = word.split('=').next().unwrap();
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{wname}: {flag} is not a server flag"
            );
        }

        // Every CATHEDRAL_* variable is one the server reads, and resolves.
        let env = environment(c, &pod, ns);
        for (var, value) in env.iter().filter(|(n, _)| n.starts_with("CATHEDRAL_")) {
            assert!(
                help.contains(&format!("[env: {var}=")) || help.contains(&format!("[env: {var}]")),
                "{wname}: {var} is not a server variable"
            );
            if let Some(v) = value {
                assert!(
                    !v.contains("$("),
                    "{wname}: {var}={v:?} refers to a variable not defined above it"
                );
            }
        }
        let key = seq(&c["env"])
            .into_iter()
            .find(|e| s(&e["name"]) == "CATHEDRAL_CLUSTER_KEY");
        if let Some(key) = key {
            assert!(
                key["valueFrom"]["secretKeyRef"].is_mapping(),
                "{wname}: the cluster key comes from a secret"
            );
        }

        // The gossip seed names this render's headless service.
        let seeds = env_value(&env, "CATHEDRAL_SEEDS")
            .unwrap_or_else(|| panic!("{wname}: no CATHEDRAL_SEEDS"));
        match Seed::parse(seeds) {
            Ok(Seed::Dns { name: host, port }) => {
                assert_eq!(
                    host,
                    format!("{service}.{ns}.svc.cluster.local"),
                    "{wname}: the dns: seed names another service than this render's headless one"
                );
                assert_eq!(u64::from(port), GRPC_PORT, "{wname}");
            }
            other => panic!("{wname}: seeds {seeds:?} are not a dns: seed: {other:?}"),
        }

        // The join address names this render's coordinators.
        let mut join = env_value(&env, "CATHEDRAL_JOIN").map(str::to_string);
        if let Some(at) = words.iter().position(|w| w == "--join") {
            let known: BTreeMap<String, String> = env
                .iter()
                .filter_map(|(n, v)| Some((n.clone(), v.clone()?)))
                .collect();
            join = Some(expand(&words[at + 1], &known));
        }
        let join = join.unwrap_or_else(|| panic!("{wname}: no join address"));
        assert!(
            joins.contains(&join),
            "{wname}: joins {join:?}, which is none of this render's {joins:?}"
        );

        if is_sts {
            // Coordinators advertise their stable name under the headless service.
            assert_eq!(
                env_value(&env, "CATHEDRAL_ADVERTISE"),
                Some(format!("{pod}.{service}.{ns}.svc.cluster.local:{GRPC_PORT}").as_str()),
                "{wname}"
            );
            // The StatefulSet's pods are the voters.
            let voters: u64 = env_value(&env, "CATHEDRAL_VOTERS").map_or(3, |v| v.parse().unwrap());
            assert_eq!(
                spec["replicas"].as_u64(),
                Some(voters),
                "{wname}: one coordinator per voter"
            );
        }

        // TLS: files from a mounted secret; then the HTTP port (the probes) is HTTPS.
        let tls = env_value(&env, "CATHEDRAL_TLS_CERT").is_some();
        assert_eq!(
            tls,
            env_value(&env, "CATHEDRAL_TLS_KEY").is_some(),
            "{wname}: a certificate goes with its key"
        );
        for var in [
            "CATHEDRAL_TLS_CERT",
            "CATHEDRAL_TLS_KEY",
            "CATHEDRAL_TLS_CA",
        ] {
            let Some(file) = env_value(&env, var) else {
                continue;
            };
            let mount = seq(&c["volumeMounts"])
                .into_iter()
                .find(|m| Path::new(file).starts_with(s(&m["mountPath"])))
                .unwrap_or_else(|| panic!("{wname}: {var}={file} is on no volume"));
            let volume = seq(&spec["template"]["spec"]["volumes"])
                .into_iter()
                .find(|v| s(&v["name"]) == s(&mount["name"]))
                .unwrap_or_else(|| panic!("{wname}: no volume {}", s(&mount["name"])));
            assert!(
                !s(&volume["secret"]["secretName"]).is_empty(),
                "{wname}: {var} comes from a secret"
            );
        }
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = &c[probe]["httpGet"];
            assert_eq!(s(&get["path"]), path, "{wname} {probe}");
            assert_eq!(s(&get["port"]), "http", "{wname} {probe}");
            let scheme = if tls { "HTTPS" } else { "HTTP" };
            assert_eq!(
                get["scheme"].as_str().unwrap_or("HTTP"),
                scheme,
                "{wname} {probe}: the HTTP port serves TLS exactly when the node has a certificate"
            );
        }
    }
}

#[test]
fn the_dockerfile_builds_the_binaries_and_exposes_the_ports() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(text.contains("-p cathedral-server -p cathedral-cli"));
    for binary in ["cathedral-server", "cathedral"] {
        assert!(bin(binary).exists());
        assert!(
            text.contains(&format!("target/release/{binary}")),
            "{binary}"
        );
    }
    assert!(text.contains("EXPOSE 50051/tcp 50051/udp 8081/tcp"));
    assert!(text.contains("ENTRYPOINT [\"cathedral-server\"]"));
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l == "target/"),
        "the build context leaves out target/"
    );
}

// ---------------------------------------------------------------------------------------
// Prometheus and Grafana

/// The metric names in a PromQL expression (`cathedral_[a-z_]+`), a histogram's `_bucket`,
/// `_sum` and `_count` stripped.
fn metric_names(expr: &str) -> Vec<String> {
    const PREFIX: &str = "cathedral_";
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(at) = expr[from..].find(PREFIX) {
        let start = from + at;
        let len = PREFIX.len()
            + expr[start + PREFIX.len()..]
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
                .count();
        let inside_a_word = start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b':');
        if !inside_a_word {
            let name = &expr[start..start + len];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.push(base.to_string());
        }
        from = start + len;
    }
    names
}

fn assert_known_metrics(what: &str, expr: &str) {
    let names = metric_names(expr);
    assert!(
        !names.is_empty(),
        "{what}: {expr:?} queries no cathedral_ series"
    );
    for m in names {
        assert!(
            KNOWN_METRICS.contains(&m.as_str()),
            "{what}: {m} is not a series the server serves (KNOWN_METRICS)"
        );
    }
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = root().join("deploy/prometheus");
    let rules = read_yaml(&dir.join("alerts.yml"));
    let mut alerts = BTreeSet::new();
    for group in seq(&rules["groups"]) {
        for rule in seq(&group["rules"]) {
            let alert = s(&rule["alert"]).to_string();
            assert!(
                !alert.is_empty(),
                "alerts.yml holds alerting rules only: {rule:?}"
            );
            assert!(
                !s(&rule["labels"]["severity"]).is_empty(),
                "{alert}: no severity"
            );
            for a in ["summary", "description"] {
                assert!(!s(&rule["annotations"][a]).is_empty(), "{alert}: no {a}");
            }
            assert_known_metrics(&alert, s(&rule["expr"]));
            alerts.insert(alert);
        }
    }
    assert!(!alerts.is_empty(), "no alerts in alerts.yml");

    // Every alert is tested firing and quiet.
    let tests = read_yaml(&dir.join("alerts_test.yml"));
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for t in seq(&tests["tests"]) {
        for case in seq(&t["alert_rule_test"]) {
            let alert = s(&case["alertname"]).to_string();
            if seq(&case["exp_alerts"]).is_empty() {
                quiet.insert(alert);
            } else {
                fires.insert(alert);
            }
        }
    }
    for alert in &alerts {
        assert!(
            fires.contains(alert),
            "alerts_test.yml never makes {alert} fire"
        );
        assert!(
            quiet.contains(alert),
            "alerts_test.yml never keeps {alert} quiet"
        );
    }

    if !installed("promtool", &["--version"]) {
        eprintln!("skipped: promtool not installed (Debian package prometheus)");
        return;
    }
    run(Command::new("promtool")
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir));
    run(Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir));
}

#[test]
fn the_grafana_dashboard_queries_only_served_metrics() {
    let path = root().join("deploy/grafana/cathedral.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "the data source is the variable DS_PROMETHEUS"
    );
    // Panels, and the panels of collapsed rows.
    let mut panels = Vec::new();
    for p in dashboard["panels"].as_array().cloned().unwrap_or_default() {
        if p["type"] == "row" {
            panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
        } else {
            panels.push(p);
        }
    }
    assert!(!panels.is_empty(), "no panels");
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("(untitled)");
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title}: queries the dashboard's data source"
        );
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(!expr.trim().is_empty(), "{title}: a target without expr");
            assert_known_metrics(title, expr);
        }
    }
}

/// Every series described (`describe_counter!`, `describe_gauge!`, `describe_histogram!`)
/// in the server's sources.
fn described_metrics(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(described_metrics(&path));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (at, _) in text.match_indices("describe_") {
            let rest = &text[at + "describe_".len()..];
            let Some(open) = rest.find("!(") else {
                continue;
            };
            if !["counter", "gauge", "histogram"].contains(&&rest[..open]) {
                continue;
            }
            let Some(args) = rest[open + 2..].trim_start().strip_prefix('"') else {
                continue;
            };
            if let Some(end) = args.find('"') {
                out.insert(args[..end].to_string());
            }
        }
    }
    out
}

#[test]
fn the_known_metrics_are_the_ones_the_server_describes() {
    let described = described_metrics(&root().join("server/src"));
    assert!(!described.is_empty());
    let unlisted: Vec<&String> = described
        .iter()
        .filter(|m| !KNOWN_METRICS.contains(&m.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "series the server describes, missing from KNOWN_METRICS: {unlisted:?}"
    );
    let gone: Vec<&&str> = KNOWN_METRICS
        .iter()
        .filter(|m| !described.contains(**m))
        .collect();
    assert!(
        gone.is_empty(),
        "KNOWN_METRICS names series the server does not describe: {gone:?}"
    );
}
