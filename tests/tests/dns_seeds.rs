//! Gossip seeds from DNS (`--seeds dns:NAME:PORT`), as a Kubernetes headless service
//! gives them: a real dnsmasq on loopback serves NAME's A records, two gossip members on
//! their own loopback addresses (127.0.0.2 and 127.0.0.3, one port) find each other
//! through it, and a name that has no record at the first attempt is resolved again at
//! the next. Also: a malformed seed stops the server with a clear message.
//!
//! Skips (saying why) where dnsmasq cannot be had (`scripts/test.sh` installs it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cathedral_server::gossip::{GossipSettings, Membership, Published};
use cathedral_tests::{bin, eventually, free_udp_port};

struct Dnsmasq {
    child: Child,
    port: u16,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 for both UDP and TCP: dnsmasq listens on both and exits when
/// either is taken (the suite's servers hold many TCP ports).
fn free_dns_port() -> u16 {
    loop {
        let port = free_udp_port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// dnsmasq answering on 127.0.0.1 from `hosts` only (nothing forwarded, no /etc/hosts).
/// A start that fails (a port taken between the check and its bind) is tried again on
/// another port; one that cannot start at all skips the test, saying why.
fn dnsmasq(hosts: &std::path::Path) -> Option<Dnsmasq> {
    let Some(exe) = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("SKIPPED: dnsmasq is not installed (scripts/test.sh installs it)");
        return None;
    };
    let mut last = String::new();
    for _ in 0..10 {
        let port = free_dns_port();
        let child = Command::new(exe)
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg(format!("--port={port}"))
            .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
            .args(["--no-resolv", "--no-hosts", "--pid-file="])
            .arg(format!("--addn-hosts={}", hosts.display()))
            // Names it does not know are not forwarded anywhere; answer from the file at once.
            .args(["--user=root", "--local-ttl=0", "--no-negcache"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                eprintln!("SKIPPED: cannot start dnsmasq: {e}");
                return None;
            }
        };
        // It binds its sockets before it serves: one that is still running after a
        // moment has them.
        std::thread::sleep(Duration::from_millis(300));
        match child.try_wait() {
            Ok(None) => return Some(Dnsmasq { child, port }),
            _ => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                last = format!("port {port}: {}", err.trim());
            }
        }
    }
    panic!("dnsmasq did not start on 10 ports; the last: {last}");
}

fn published(id: u64) -> Published {
    Published {
        node_id: id,
        grpc: format!("127.0.0.1:{}", 20_000 + id),
        role: "worker".into(),
        tags: BTreeMap::new(),
        slots: 1,
        cpu_millis: 1000,
        memory_bytes: 1 << 30,
    }
}

fn settings(ip: &str, port: u16, seeds: Vec<String>, dns: Option<SocketAddr>) -> GossipSettings {
    let mut s = GossipSettings::new(format!("{ip}:{port}").parse().unwrap());
    s.seeds = seeds;
    s.dns_server = dns;
    s.interval = Duration::from_millis(200);
    s.cluster_keys = vec!["dns-test".into()];
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_find_each_other_through_dns_records_resolved_at_every_attempt() {
    let tmp = tempfile::tempdir().unwrap();
    let hosts = tmp.path().join("peers.hosts");
    std::fs::write(&hosts, "").unwrap();
    let Some(mut dns) = dnsmasq(&hosts) else {
        return;
    };
    let server: SocketAddr = format!("127.0.0.1:{}", dns.port).parse().unwrap();
    // Loopback addresses of their own, one gossip port: the service's port is one number.
    let port = free_udp_port();
    let seed = format!("dns:peers.cathedral.test:{port}");
    let a = Membership::start(
        settings("127.0.0.2", port, vec![seed.clone()], Some(server)),
        published(1),
        Default::default(),
    )
    .await
    .expect("member a starts");
    let b = Membership::start(
        settings("127.0.0.3", port, vec![seed.clone()], Some(server)),
        published(2),
        Default::default(),
    )
    .await
    .expect("member b starts");

    // The name has no record yet: the first attempts find nobody. Then the "pods" become
    // ready and the service lists them; dnsmasq rereads its hosts file on SIGHUP.
    let joining = {
        let b = b.clone();
        let seeds = vec![seed.clone()];
        tokio::spawn(async move {
            b.join_with(
                &seeds,
                60,
                Duration::from_millis(200),
                Duration::from_millis(300),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!joining.is_finished(), "nothing to join yet");
    std::fs::write(
        &hosts,
        "127.0.0.2 peers.cathedral.test\n127.0.0.3 peers.cathedral.test\n",
    )
    .unwrap();
    unsafe {
        libc::kill(dns.child.id() as i32, libc::SIGHUP);
    }
    let attempt = tokio::time::timeout(Duration::from_secs(90), joining)
        .await
        .expect("b joins within 90 s (a lookup the DNS server does not answer waits for the resolver's timeout)")
        .unwrap()
        .expect("b joins once the name resolves");
    assert!(
        attempt > 1,
        "joined at attempt {attempt}: resolved again on retry"
    );
    let ids = |m: &Membership| m.view().members.keys().copied().collect::<Vec<u64>>();
    eventually(Duration::from_secs(30), "a and b to see each other", || {
        let (ia, ib) = (ids(&a), ids(&b));
        async move { (ia == vec![1, 2] && ib == vec![1, 2]).then_some(()) }
    })
    .await;

    // Both records come back: the lookup asks for every A/AAAA record of the name.
    let found = cathedral_server::gossip::seeds::resolve(&[seed], Some(server)).await;
    assert_eq!(
        found,
        vec![
            format!("127.0.0.2:{port}").parse::<SocketAddr>().unwrap(),
            format!("127.0.0.3:{port}").parse().unwrap()
        ]
    );
    a.stop().await;
    b.stop().await;
    let _ = dns.child.kill();
}

#[test]
fn a_malformed_dns_seed_stops_the_server_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin("cathedral-server"))
        .args(["--data-dir", tmp.path().to_str().unwrap()])
        .args(["--seeds", "dns:peers.cathedral.test"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--seeds") && err.contains("dns:NAME:PORT"),
        "{err}"
    );
}
