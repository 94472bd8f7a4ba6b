//! The scenarios beside the write rows: a leader's SIGKILL to the first accepted write,
//! and trivial jobs run end to end against how fast this machine starts processes.

use super::*;

// ---------------------------------------------------------------------------------------
// Failover: leader SIGKILL to the first accepted write

pub(super) async fn failover(kind: Kind, a: &Args) -> Vec<f64> {
    let mut cluster = Cluster::start(kind, 3, a, true).await;
    let mut out = Vec::new();
    for trial in 0..a.failover_trials {
        cluster.wait_healthy(Duration::from_secs(60)).await;
        let leader = cluster.leader().await.expect("a leader");
        let survivors: Vec<Writer> = {
            let mut v = Vec::new();
            for i in (0..3).filter(|i| *i != leader) {
                v.push(Writer::connect(kind, &cluster.procs[i].client, 200, 1000 + i).await);
            }
            v
        };
        // A probe write every PROBE_MS to the survivors in turn, each on its own (writes
        // sent to a follower while there is no leader may wait a long time: etcd holds
        // them until its request timeout), from the kill on.
        const PROBE_MS: u64 = 5;
        let first_ok: Arc<std::sync::Mutex<Option<Instant>>> = Default::default();
        cluster.procs[leader].kill9();
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(30);
        let mut n = 0u64;
        let mut probes = Vec::new();
        while first_ok.lock().unwrap().is_none() && Instant::now() < deadline {
            let mut w = survivors[n as usize % survivors.len()].clone();
            let first_ok = first_ok.clone();
            probes.push(tokio::spawn(async move {
                if let Ok(Ok(())) =
                    tokio::time::timeout(Duration::from_secs(30), w.write(1_000_000 + n)).await
                {
                    let mut f = first_ok.lock().unwrap();
                    if f.is_none() {
                        *f = Some(Instant::now());
                    }
                }
            }));
            n += 1;
            tokio::time::sleep(Duration::from_millis(PROBE_MS)).await;
        }
        for p in probes {
            p.abort();
        }
        let ms = first_ok
            .lock()
            .unwrap()
            .map(|f| f.duration_since(t0).as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN);
        eprintln!("  {} failover trial {trial}: {ms:.0} ms", kind.name());
        out.push(ms);
        cluster.procs[leader].spawn();
    }
    out
}

// ---------------------------------------------------------------------------------------
// Jobs: trivial jobs end to end, against this machine's process start rate

pub(super) async fn jobs_per_sec(a: &Args, sandbox: pb::Sandbox, clients: usize) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut p = Proc {
        bin: a.server_bin.clone(),
        args: [
            "--data-dir",
            &dir.path().join("n").display().to_string(),
            "--bind",
            &grpc,
            "--http",
            &format!("127.0.0.1:{}", free_port()),
            "--slots",
            "64",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        log: dir.path().join("n.log"),
        child: None,
        client: grpc.clone(),
    };
    p.spawn();
    let cluster = Cluster {
        kind: Kind::Cathedral,
        procs: vec![p],
        _dir: dir,
    };
    cluster.wait_healthy(Duration::from_secs(60)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (grpc, stop, counting) = (grpc.clone(), stop.clone(), counting.clone());
        tasks.push(tokio::spawn(async move {
            let ch = channel(&grpc).await.unwrap();
            let mut jobs = pb::job_service_client::JobServiceClient::new(ch);
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = match jobs
                    .submit_job(pb::SubmitJobRequest {
                        spec: Some(pb::JobSpec {
                            name: "t".into(),
                            command: vec!["true".into()],
                            sandbox: sandbox as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(r) => r.into_inner().job_id,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(w) = jobs
                    .watch_job(pb::WatchJobRequest {
                        job_id: id,
                        ..Default::default()
                    })
                    .await
                else {
                    continue;
                };
                let mut s = w.into_inner();
                let mut ok = false;
                while let Ok(Some(ev)) = s.message().await {
                    if ev.state >= pb::JobState::Succeeded as i32 {
                        ok = ev.state == pb::JobState::Succeeded as i32;
                        break;
                    }
                }
                if ok && counting.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    done += 1;
                }
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_secs(a.warmup)).await;
    counting.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.jobs_secs)).await;
    stop.store(true, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let mut done = 0;
    for t in tasks {
        done += t.await.unwrap_or(0);
    }
    (done as f64 / secs, done)
}

/// How many times per second `threads` threads start and reap `program args` on this
/// machine: the ceiling for trivial jobs run that way.
pub(super) fn spawn_rate(threads: usize, secs: u64, program: &OsStr, args: &[OsString]) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let stop = stop.clone();
            let (program, args) = (program.to_os_string(), args.to_vec());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let ok = Command::new(&program)
                        .args(&args)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    n += ok as u64;
                }
                n
            })
        })
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let n: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    n as f64 / t0.elapsed().as_secs_f64()
}

/// The ceiling under bubblewrap: `true` in exactly the sandbox the executor builds for a
/// job (the same arguments, from `BwrapBackend::launch`), or `None` without bubblewrap.
pub(super) fn bwrap_spawn_rate(threads: usize, secs: u64) -> Option<f64> {
    let backend = BwrapBackend::detect()?;
    let work = tempfile::tempdir().unwrap();
    let launch = backend
        .launch(&AttemptSpec::new(1, 1, &["true"]), work.path())
        .unwrap();
    Some(spawn_rate(threads, secs, &launch.program, &launch.args))
}
