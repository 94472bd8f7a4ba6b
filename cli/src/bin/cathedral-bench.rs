//! `cathedral-bench`: a load generator. N clients, each on its own connection, submit jobs
//! in a closed loop for T seconds; prints committed submits per second and the latency
//! distribution. A submit counts once the server acknowledged it, which it does only after
//! the entry is committed.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cathedral_api::v1 as pb;
use cathedral_api::v1::job_service_client::JobServiceClient;
use cathedral_cli::client::{self, Client, Credentials, DEFAULT_SERVER};
use cathedral_cli::parse;
use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser)]
#[command(
    name = "cathedral-bench",
    version,
    about = "Drive SubmitJob with concurrent clients and report throughput and latency."
)]
struct Args {
    /// Node(s) to send to, comma-separated; clients are spread over them.
    #[arg(long, env = "CATHEDRAL_ADDR", default_value = DEFAULT_SERVER)]
    server: String,
    /// Concurrent clients, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// How long to measure.
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Load before measuring (not counted).
    #[arg(long, default_value = "1s")]
    warmup: String,
    /// Bytes of argument per job (the command is `true` plus one argument of this size).
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Run the jobs: each client waits for its job to succeed (WatchJob) before the next,
    /// so the figures are jobs per second and latency from submit to success.
    #[arg(long)]
    wait: bool,
    /// The jobs' sandbox: default (the strongest the node has), process or bubblewrap.
    #[arg(long, default_value = "default", value_parser = ["default", "process", "bubblewrap"])]
    sandbox: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Token secret for a cluster with access control on.
    #[arg(long, env = "CATHEDRAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificate: connect over TLS, verifying the server with it.
    #[arg(long, env = "CATHEDRAL_TLS_CA", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
}

struct ClientResult {
    latencies: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let run = |s: &str| parse::duration_ms(s).map(Duration::from_millis);
    let (duration, warmup) = match (run(&args.duration), run(&args.warmup)) {
        (Ok(d), Ok(w)) => (d, w),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cathedral-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if args.clients == 0 {
        eprintln!("cathedral-bench: --clients must be at least 1");
        return ExitCode::from(2);
    }
    let credentials =
        match Credentials::new(args.token.as_deref(), args.tls_ca.as_deref(), None, None) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cathedral-bench: {}", e.message);
                return ExitCode::from(2);
            }
        };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(bench(&args, credentials, duration, warmup)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cathedral-bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs the load: `--clients` connections, each one request in flight, for the warm-up and
/// then the measured duration, and prints throughput and latency percentiles.
///
/// Long on purpose: the client loop, its counters and the report share local state (the
/// warm-up and end instants, the latency histograms); one function keeps the measured
/// window visibly the same for every client.
async fn bench(
    args: &Args,
    credentials: Credentials,
    duration: Duration,
    warmup: Duration,
) -> Result<(), String> {
    let servers: Vec<String> = args
        .server
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let client = Client::new(servers, credentials);
    let servers = client.servers();
    let mut channels = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let addr = &servers[i % servers.len()];
        channels.push(client.connect(addr).await.map_err(|e| e.message)?);
    }
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let arg = Arc::new("x".repeat(args.payload_bytes));
    let wait = args.wait;
    let sandbox = match args.sandbox.as_str() {
        "process" => pb::Sandbox::Process,
        "bubblewrap" => pb::Sandbox::Bubblewrap,
        _ => pb::Sandbox::Default,
    } as i32;
    let mut tasks = Vec::new();
    for (i, ch) in channels.into_iter().enumerate() {
        let arg = arg.clone();
        tasks.push(tokio::spawn(async move {
            let mut jobs = JobServiceClient::new(ch);
            let mut r = ClientResult {
                latencies: Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
                errors: 0,
                first_error: None,
            };
            let mut n = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    return r;
                }
                n += 1;
                let spec = pb::JobSpec {
                    name: format!("bench-{i}-{n}"),
                    command: vec!["true".into(), arg.to_string()],
                    sandbox,
                    ..Default::default()
                };
                let mut res = jobs
                    .submit_job(pb::SubmitJobRequest {
                        spec: Some(spec),
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().job_id);
                if let (true, Ok(id)) = (wait, &res) {
                    res = until_succeeded(&mut jobs, *id).await.map(|_| *id);
                }
                let t1 = Instant::now();
                if t0 < measure_from || t1 > end {
                    continue;
                }
                match res {
                    Ok(_) => {
                        let us = (t1 - t0).as_micros() as u64;
                        r.latencies.saturating_record(us.max(1));
                    }
                    Err(s) => {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| s.message().to_string());
                    }
                }
            }
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut errors, mut first_error) = (0, None);
    for t in tasks {
        let r = t.await.map_err(|e| e.to_string())?;
        all.add(&r.latencies).map_err(|e| e.to_string())?;
        errors += r.errors;
        first_error = first_error.or(r.first_error);
    }
    let what = if args.wait {
        "jobs succeeded"
    } else {
        "committed"
    };
    let ok = all.len();
    let rate = ok as f64 / duration.as_secs_f64();
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "clients": args.clients,
                "seconds": duration.as_secs_f64(),
                "mode": if args.wait { "submit to success" } else { "submit committed" },
                "completed": ok,
                "errors": errors,
                "per_sec": rate,
                "p50_ms": ms(0.50),
                "p99_ms": ms(0.99),
                "p999_ms": ms(0.999),
                "max_ms": all.max() as f64 / 1000.0,
            })
        );
    } else {
        println!(
            "clients {}  duration {:.1}s  {what} {ok}  errors {errors}\nper second {rate:.0}  p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms  max {:.2} ms",
            args.clients,
            duration.as_secs_f64(),
            ms(0.50),
            ms(0.99),
            ms(0.999),
            all.max() as f64 / 1000.0,
        );
    }
    if let Some(e) = first_error {
        eprintln!("cathedral-bench: {errors} submits failed; the first: {e}");
    }
    if ok == 0 {
        return Err("no submit was committed".into());
    }
    Ok(())
}

/// Waits for job `id` to end; an error unless it succeeded.
async fn until_succeeded(
    jobs: &mut JobServiceClient<client::Conn>,
    id: u64,
) -> Result<(), tonic::Status> {
    let last = client::watch_until_end(jobs, id, "").await?;
    if last.state == pb::JobState::Succeeded as i32 {
        return Ok(());
    }
    Err(tonic::Status::aborted(format!(
        "job {id} ended as {:?}",
        pb::JobState::try_from(last.state).ok()
    )))
}
