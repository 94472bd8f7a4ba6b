//! `cathedral namespace ...`: namespaces and their settings — fair-share weight and
//! quotas. Every other command acts in the namespace `--namespace` (or
//! `CATHEDRAL_NAMESPACE`) names.

use cathedral_api::v1 as pb;
use clap::Subcommand;

use super::print_json;
use crate::client::{CliError, Client};
use crate::parse;

#[derive(Subcommand)]
pub enum NamespaceCmd {
    /// Create a namespace (names: a-z, 0-9 and '-', at most 63 bytes).
    Create {
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
        #[arg(long)]
        json: bool,
    },
    /// Every namespace with its settings and what it uses now.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One namespace.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Change settings: those given replace their current values, `--clear` drops some.
    Update {
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Settings to drop (back to unlimited, or weight 1): weight, pending_jobs_max,
        /// running_max, cpu_millis_max, memory_bytes_max, submit_rate, sandboxes,
        /// job_timeout_ms_max, job_cpu_millis_max, job_memory_bytes_max,
        /// job_timeout_ms_default, job_cpu_millis_default, job_memory_bytes_default,
        /// job_retention_ms, crons_max.
        #[arg(long, value_delimiter = ',')]
        clear: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a namespace that holds no job and no cron.
    Delete { name: String },
}

/// A namespace's settings on the command line (unset: unchanged, or unlimited).
#[derive(clap::Args)]
pub struct SettingsArgs {
    /// Its share of free slots against other namespaces with pending work (1..=1000).
    #[arg(long)]
    weight: Option<u32>,
    /// Most jobs pending at once; a submission past it is refused whole.
    #[arg(long, value_name = "N")]
    max_pending: Option<u64>,
    /// Most attempts assigned or running at once.
    #[arg(long, value_name = "N")]
    max_running: Option<u64>,
    /// Most CPU reserved by its running attempts (`2`, `500m`).
    #[arg(long, value_name = "CPU")]
    max_cpu: Option<String>,
    /// Most memory reserved by its running attempts (`512MiB`, `4G`).
    #[arg(long, value_name = "BYTES")]
    max_memory: Option<String>,
    /// Jobs submitted per second, with bursts: `RATE` or `RATE/BURST` (burst default:
    /// the rate).
    #[arg(long, value_name = "RATE[/BURST]")]
    submit_rate: Option<String>,
    /// The sandboxes its jobs may use (default, process, bubblewrap, docker).
    #[arg(long, value_delimiter = ',', value_name = "SANDBOX,...")]
    sandboxes: Vec<String>,
    /// Longest timeout one job may ask for (`30s`, `2h`).
    #[arg(long, value_name = "DURATION")]
    job_max_timeout: Option<String>,
    /// Most CPU one job may reserve.
    #[arg(long, value_name = "CPU")]
    job_max_cpu: Option<String>,
    /// Most memory one job may reserve.
    #[arg(long, value_name = "BYTES")]
    job_max_memory: Option<String>,
    /// The timeout of a job that asks none.
    #[arg(long, value_name = "DURATION")]
    job_default_timeout: Option<String>,
    /// The CPU reserved by a job that asks none.
    #[arg(long, value_name = "CPU")]
    job_default_cpu: Option<String>,
    /// The memory reserved by a job that asks none.
    #[arg(long, value_name = "BYTES")]
    job_default_memory: Option<String>,
    /// Keep its jobs this long after they end before retention collects them, instead
    /// of the cluster's --job-retention (12h, 30d; 0 keeps them). Fixed for a job when it
    /// ends; a job's own --retain comes first.
    #[arg(long, value_name = "DURATION")]
    job_retention: Option<String>,
    /// Most crons it holds.
    #[arg(long, value_name = "N")]
    max_crons: Option<u64>,
}

impl SettingsArgs {
    fn to_pb(&self) -> Result<pb::NamespaceSettings, CliError> {
        let cpu = self
            .max_cpu
            .as_deref()
            .map(parse::cpu_millis)
            .transpose()
            .map_err(|e| CliError::invalid(format!("--max-cpu: {e}")))?;
        let memory = self
            .max_memory
            .as_deref()
            .map(parse::bytes)
            .transpose()
            .map_err(|e| CliError::invalid(format!("--max-memory: {e}")))?;
        let rate = self
            .submit_rate
            .as_deref()
            .map(|r| {
                let (rate, burst) = r.split_once('/').unwrap_or((r, r));
                match (rate.trim().parse::<u32>(), burst.trim().parse::<u32>()) {
                    (Ok(a), Ok(b)) => Ok((a, b)),
                    _ => Err(CliError::invalid(format!(
                        "--submit-rate {r:?}: expected RATE or RATE/BURST (jobs a second)"
                    ))),
                }
            })
            .transpose()?;
        let dur = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(parse::duration_ms)
                .transpose()
                .map_err(|e| CliError::invalid(format!("--{flag}: {e}")))
        };
        let cpu_of = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(parse::cpu_millis)
                .transpose()
                .map_err(|e| CliError::invalid(format!("--{flag}: {e}")))
        };
        let bytes_of = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(parse::bytes)
                .transpose()
                .map_err(|e| CliError::invalid(format!("--{flag}: {e}")))
        };
        Ok(pb::NamespaceSettings {
            sandboxes: self.sandboxes.clone(),
            job_timeout_ms_max: dur("job-max-timeout", &self.job_max_timeout)?,
            job_cpu_millis_max: cpu_of("job-max-cpu", &self.job_max_cpu)?,
            job_memory_bytes_max: bytes_of("job-max-memory", &self.job_max_memory)?,
            job_timeout_ms_default: dur("job-default-timeout", &self.job_default_timeout)?,
            job_cpu_millis_default: cpu_of("job-default-cpu", &self.job_default_cpu)?,
            job_memory_bytes_default: bytes_of("job-default-memory", &self.job_default_memory)?,
            job_retention_ms: dur("job-retention", &self.job_retention)?,
            crons_max: self.max_crons,
            weight: self.weight,
            pending_jobs_max: self.max_pending,
            running_max: self.max_running,
            cpu_millis_max: cpu.map(u64::from),
            memory_bytes_max: memory,
            submit_rate_per_sec: rate.map(|(a, _)| a),
            submit_rate_burst: rate.map(|(_, b)| b),
        })
    }
}

/// `cathedral namespace ...`.
pub async fn run(
    client: &Client,
    command: NamespaceCmd,
    request_id: String,
) -> Result<u8, CliError> {
    let mut ns = client.namespaces().await?;
    match command {
        NamespaceCmd::Create {
            name,
            settings,
            json,
        } => {
            let v = ns
                .create_namespace(pb::CreateNamespaceRequest {
                    name,
                    settings: Some(settings.to_pb()?),
                    request_id,
                })
                .await?
                .into_inner();
            show(&v, json);
        }
        NamespaceCmd::List { json } => {
            let all = ns
                .list_namespaces(pb::ListNamespacesRequest {})
                .await?
                .into_inner()
                .namespaces;
            if json {
                print_json(&serde_json::to_value(&all).expect("JSON"));
            } else {
                println!(
                    "{:<24} {:>6} {:>9} {:>9} {:>11} {:>11}",
                    "NAMESPACE", "WEIGHT", "PENDING", "RUNNING", "MAX_PENDING", "MAX_RUNNING"
                );
                for v in &all {
                    let s = v.settings.clone().unwrap_or_default();
                    let u = v.usage.clone().unwrap_or_default();
                    let or_dash = |x: Option<u64>| x.map_or("-".to_string(), |n| n.to_string());
                    println!(
                        "{:<24} {:>6} {:>9} {:>9} {:>11} {:>11}",
                        v.name,
                        s.weight.unwrap_or(1),
                        u.pending,
                        u.running,
                        or_dash(s.pending_jobs_max),
                        or_dash(s.running_max)
                    );
                }
            }
        }
        NamespaceCmd::Show { name, json } => {
            let v = ns
                .get_namespace(pb::GetNamespaceRequest { name })
                .await?
                .into_inner();
            show(&v, json);
        }
        NamespaceCmd::Update {
            name,
            settings,
            clear,
            json,
        } => {
            let v = ns
                .update_namespace(pb::UpdateNamespaceRequest {
                    name,
                    settings: Some(settings.to_pb()?),
                    clear,
                    request_id,
                })
                .await?
                .into_inner();
            show(&v, json);
        }
        NamespaceCmd::Delete { name } => {
            ns.delete_namespace(pb::DeleteNamespaceRequest {
                name: name.clone(),
                request_id,
            })
            .await?;
            println!("namespace {name} deleted");
        }
    }
    Ok(0)
}

fn show(v: &pb::NamespaceView, json: bool) {
    if json {
        print_json(&serde_json::to_value(v).expect("JSON"));
        return;
    }
    let s = v.settings.clone().unwrap_or_default();
    let u = v.usage.clone().unwrap_or_default();
    let limit = |x: Option<u64>| x.map_or("unlimited".to_string(), |n| n.to_string());
    println!("namespace {}", v.name);
    println!("  weight            {}", s.weight.unwrap_or(1));
    println!(
        "  pending           {} (max {})",
        u.pending,
        limit(s.pending_jobs_max)
    );
    println!(
        "  running           {} (max {})",
        u.running,
        limit(s.running_max)
    );
    println!(
        "  cpu millicores    {} (max {})",
        u.cpu_millis,
        limit(s.cpu_millis_max)
    );
    println!(
        "  memory bytes      {} (max {})",
        u.memory_bytes,
        limit(s.memory_bytes_max)
    );
    match (s.submit_rate_per_sec, s.submit_rate_burst) {
        (Some(r), Some(b)) => println!("  submit rate       {r}/s, bursts of {b}"),
        _ => println!("  submit rate       unlimited"),
    }
    if !s.sandboxes.is_empty() {
        println!("  sandboxes         {}", s.sandboxes.join(", "));
    }
    let per_job = [
        (
            "job timeout ms",
            s.job_timeout_ms_max,
            s.job_timeout_ms_default,
        ),
        (
            "job cpu millis",
            s.job_cpu_millis_max.map(u64::from),
            s.job_cpu_millis_default.map(u64::from),
        ),
        (
            "job memory bytes",
            s.job_memory_bytes_max,
            s.job_memory_bytes_default,
        ),
    ];
    for (what, max, default) in per_job {
        if max.is_some() || default.is_some() {
            println!(
                "  {what:<17} max {}, default {}",
                limit(max),
                default.map_or("none".to_string(), |d| d.to_string())
            );
        }
    }
    if let Some(n) = s.crons_max {
        println!("  crons             max {n}");
    }
    match s.job_retention_ms {
        Some(0) => println!("  job retention     kept until deleted"),
        Some(ms) => println!("  job retention     {ms} ms after a job ends"),
        None => println!("  job retention     the cluster's"),
    }
    let mut states: Vec<_> = u.jobs_by_state.iter().collect();
    states.sort();
    if !states.is_empty() {
        let parts: Vec<String> = states.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("  jobs              {}", parts.join(", "));
    }
}
