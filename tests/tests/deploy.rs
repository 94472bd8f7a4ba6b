//! The deployment files: `deploy/kubernetes/*.yaml` parse as YAML with the expected kinds,
//! ports and probes, and every flag and `CATHEDRAL_*` variable they give the server is one
//! `cathedral-server --help` documents; the `dns:` seeds name the headless service; the
//! `Dockerfile` builds the binaries the workspace has and exposes the same ports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cathedral_server::gossip::Seed;
use cathedral_tests::bin;
use serde::Deserialize;
use serde_yaml_ng::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every document of every manifest.
fn manifests() -> Vec<Value> {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for d in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    docs
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| s(&d["kind"]) == kind).collect()
}

/// (name, port, protocol) of a port list.
fn ports(list: &Value) -> BTreeSet<(String, u64, String)> {
    list.as_sequence()
        .unwrap()
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
        ("grpc", 50051, "TCP"),
        ("gossip", 50051, "UDP"),
        ("http", 8081, "TCP"),
    ]
    .iter()
    .map(|(n, p, t)| (n.to_string(), *p, t.to_string()))
    .collect()
}

#[test]
fn manifests_have_the_expected_kinds_ports_probes_and_flags() {
    let docs = manifests();
    let kinds: BTreeSet<&str> = docs.iter().map(|d| s(&d["kind"])).collect();
    for want in [
        "Service",
        "StatefulSet",
        "Deployment",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(want), "no {want} in {kinds:?}");
    }

    let headless = of_kind(&docs, "Service")
        .into_iter()
        .find(|d| s(&d["spec"]["clusterIP"]) == "None")
        .expect("a headless service");
    let service = s(&headless["metadata"]["name"]);
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"],
        Value::Bool(true)
    );
    assert_eq!(ports(&headless["spec"]["ports"]), server_ports());

    let sts = of_kind(&docs, "StatefulSet")[0];
    assert_eq!(s(&sts["spec"]["serviceName"]), service);
    assert_eq!(sts["spec"]["replicas"].as_u64(), Some(3));
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&sts["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&headless["spec"]["selector"], labels);
    let pdb = of_kind(&docs, "PodDisruptionBudget")[0];
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(
        pdb["spec"]["maxUnavailable"].as_u64(),
        Some(1),
        "keeps 2 of 3 voters"
    );

    let help = {
        let out = std::process::Command::new(bin("cathedral-server"))
            .arg("--help")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let workloads: Vec<&Value> = of_kind(&docs, "StatefulSet")
        .into_iter()
        .chain(of_kind(&docs, "Deployment"))
        .collect();
    for w in workloads {
        let name = s(&w["metadata"]["name"]);
        let c = &w["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(ports(&c["ports"]), server_ports(), "{name}");
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            assert_eq!(s(&c[probe]["httpGet"]["path"]), path, "{name} {probe}");
            assert_eq!(s(&c[probe]["httpGet"]["port"]), "http", "{name} {probe}");
        }
        // Every flag the container passes is one the server has.
        let words: Vec<String> = ["command", "args"]
            .iter()
            .flat_map(|k| c[*k].as_sequence().cloned().unwrap_or_default())
            .flat_map(|v| {
                s(&v)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            words.iter().any(|w| w == "cathedral-server") || c["command"].is_null(),
            "{name} runs cathedral-server"
        );
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} ")),
                "{name}: {flag} is not a server flag"
            );
        }
        // Every CATHEDRAL_* variable is one the server reads.
        let mut seeds = 0;
        for e in c["env"].as_sequence().unwrap() {
            let var = s(&e["name"]);
            if !var.starts_with("CATHEDRAL_") {
                continue;
            }
            assert!(
                help.contains(&format!("[env: {var}")),
                "{name}: {var} is not a server variable"
            );
            if var == "CATHEDRAL_SEEDS" {
                let value = s(&e["value"]).replace("$(POD_NAMESPACE)", "default");
                match Seed::parse(&value) {
                    Ok(Seed::Dns { name: host, port }) => {
                        assert!(host.starts_with(&format!("{service}.")), "{name}: {host}");
                        assert_eq!(port, 50051);
                    }
                    other => panic!("{name}: seeds {value:?} are not a dns: seed: {other:?}"),
                }
                seeds += 1;
            }
        }
        assert_eq!(seeds, 1, "{name} seeds gossip from DNS");
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
