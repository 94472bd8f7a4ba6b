//! Unit tests of the settings: flags, file, environment, defaults and the checks.

use super::*;

fn from(args: &[&str]) -> Result<Config> {
    Config::from_args(std::iter::once("cathedral-server").chain(args.iter().copied()))
}

#[test]
fn defaults() {
    let c = Config::resolve(Args::default()).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("./cathedral-data"));
    assert_eq!(c.bind.to_string(), "127.0.0.1:50051");
    assert_eq!(c.advertise, "127.0.0.1:50051");
    assert_eq!(c.http.to_string(), "127.0.0.1:8081");
    assert_eq!(c.role, Role::Standalone);
    assert_eq!(c.voters, 3);
    assert_eq!(c.raft, RaftSettings::default());
    // Gossip takes the gRPC port over UDP: nodes sharing a host never collide.
    assert_eq!(c.gossip.bind.to_string(), "127.0.0.1:50051");
    assert_eq!(c.gossip.advertise.to_string(), "127.0.0.1:50051");
    assert_eq!(c.gossip.phi_threshold, 8.0);
    assert_eq!(c.gossip.quorum_fraction, 0.5);
    assert_eq!(c.gossip.partition_grace.as_millis(), 30_000);
    assert_eq!(c.leader.placement, Placement::LeastLoaded);
    assert_eq!(c.log_segment_bytes, 64 << 20);
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(c.worker_threads, cpus);
    assert!(c.tags.is_empty());
}

#[test]
fn gossip_settings_and_tags_from_flags_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "seeds = [\"10.0.0.1:7946\"]\nplacement = \"round-robin\"\n[tags]\nzone = \"a\"\nrack = \"1\"\n",
    )
    .unwrap();
    let c = from(&[
        "--config",
        file.to_str().unwrap(),
        "--bind",
        "0.0.0.0:7000",
        "--advertise",
        "10.1.2.3:7000",
        "--gossip-bind",
        "0.0.0.0:8000",
        "--tag",
        "zone=b",
        "--cluster-key",
        "k",
    ])
    .unwrap();
    assert_eq!(c.gossip.advertise.to_string(), "10.1.2.3:8000");
    assert_eq!(c.gossip.seeds, vec!["10.0.0.1:7946".to_string()]);
    assert_eq!(c.gossip.cluster_keys, ["k"]);
    assert_eq!(c.leader.placement, Placement::RoundRobin);
    assert_eq!(c.tags["zone"], "b", "a flag wins over the file");
    assert_eq!(c.tags["rack"], "1");
    for (args, why) in [
        (vec!["--tag", "zone"], "KEY=VALUE"),
        (vec!["--tag", "role=x"], "--role"),
        (vec!["--phi-threshold", "0"], "--phi-threshold"),
        (vec!["--partition-quorum", "1.5"], "--partition-quorum"),
        (vec!["--gossip-interval-ms", "1"], "--gossip-interval-ms"),
        (vec!["--gossip-bind", "127.0.0.1:0"], "fixed port"),
        (vec!["--cluster-key", ""], "empty"),
    ] {
        let e = from(&args).unwrap_err().to_string();
        assert!(e.contains(why), "{args:?}: {e}");
    }
}

#[test]
fn flags_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "bind = \"127.0.0.1:7000\"\nvoters = 5\nrole = \"coordinator\"\nsnapshot_threshold = 50\n",
    )
    .unwrap();
    let c = from(&["--config", file.to_str().unwrap(), "--voters", "1"]).unwrap();
    assert_eq!(c.bind.to_string(), "127.0.0.1:7000");
    assert_eq!(c.advertise, "127.0.0.1:7000");
    assert_eq!(c.voters, 1);
    assert_eq!(c.role, Role::Coordinator);
    assert_eq!(c.raft.compaction.snapshot_threshold, 50);
}

#[test]
fn bad_settings_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "bnid = \"x\"\n").unwrap();
    let e = from(&["--config", file.to_str().unwrap()]).unwrap_err();
    assert!(e.to_string().contains("unknown field `bnid`"), "{e}");
    let e = from(&["--voters", "9"]).unwrap_err();
    assert!(e.to_string().contains("VOTERS_MAX"), "{e}");
    let e = from(&["--role", "worker"]).unwrap_err();
    assert!(e.to_string().contains("needs --join"), "{e}");
    let e = from(&["--write-timeout-ms", "30001"]).unwrap_err();
    assert!(e.to_string().contains("WRITE_TIMEOUT_MS_MAX"), "{e}");
    let e = from(&["--write-timeout-ms", "0"]).unwrap_err();
    assert!(e.to_string().contains("WRITE_TIMEOUT_MS_MAX"), "{e}");
    assert!(from(&["--write-timeout-ms", "30000"]).is_ok());
    let e = from(&["--worker-threads", "0"]).unwrap_err();
    assert!(e.to_string().contains("WORKER_THREADS_MAX"), "{e}");
    let e = from(&["--worker-threads", "257"]).unwrap_err();
    assert!(e.to_string().contains("WORKER_THREADS_MAX"), "{e}");
    assert_eq!(from(&["--worker-threads", "3"]).unwrap().worker_threads, 3);
    let e = from(&["--bind", "0.0.0.0:1"]).unwrap_err();
    assert!(e.to_string().contains("--advertise"), "{e}");
    let e = from(&[
        "--election-timeout-min-ms",
        "500",
        "--election-timeout-max-ms",
        "100",
    ])
    .unwrap_err();
    assert!(e.to_string().contains("raft timing"), "{e}");
    let e = from(&["--log-segment-bytes", "4095"]).unwrap_err();
    assert!(e.to_string().contains("SEGMENT_BYTES_MIN"), "{e}");
    let e = from(&["--log-segment-bytes", "1073741825"]).unwrap_err();
    assert!(e.to_string().contains("SEGMENT_BYTES_LIMIT"), "{e}");
    assert_eq!(
        from(&["--log-segment-bytes", "4096"])
            .unwrap()
            .log_segment_bytes,
        4096
    );
}
