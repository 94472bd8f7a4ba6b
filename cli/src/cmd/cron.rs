//! `cathedral cron ...`: periodic jobs and workflows. Writes go to one server under the
//! request id (so sending one again with the same `--request-id` is safe).

use std::path::PathBuf;

use cathedral_api::v1 as pb;
use cathedral_api::v1::cron_service_client::CronServiceClient;
use clap::Subcommand;

use super::jobs::{submit_spec, SubmitArgs};
use super::print_json;
use crate::client::{CliError, Client, Conn};
use crate::parse;

#[derive(Subcommand)]
pub enum CronCmd {
    /// Create a cron running a command (job flags as for `submit`) or a workflow file.
    Create(CreateArgs),
    /// Every cron: schedule, zone, next fire, counts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One cron and its history of fires.
    Show {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The next fire times of a cron (or of --schedule and --tz), in its zone.
    Next {
        #[arg(value_name = "NAME", required_unless_present = "schedule")]
        name: Option<String>,
        #[arg(short = 'n', long, default_value_t = 5)]
        count: u32,
        #[arg(long)]
        schedule: Option<String>,
        #[arg(long, default_value = "UTC")]
        tz: String,
    },
    /// Stop firing (nothing is owed for the paused time).
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(clap::Args)]
pub struct CreateArgs {
    #[arg(id = "cron_name", value_name = "NAME")]
    cron: String,
    /// Cron pattern: 5 fields (minute first) or 6 (seconds first); @hourly, @daily, ...
    #[arg(long)]
    schedule: String,
    /// IANA time zone of the pattern.
    #[arg(long, default_value = "UTC")]
    tz: String,
    /// While the previous run is active a fire is skipped, queued, or allowed to run.
    #[arg(long, default_value = "skip", value_parser = ["skip", "queue", "allow"])]
    overlap: String,
    /// Fires older than this when decided (after downtime) are skipped, not run.
    #[arg(long, default_value = "1m")]
    catch_up: String,
    /// Launch this workflow file (YAML or JSON) instead of a command.
    #[arg(long, value_name = "FILE")]
    workflow: Option<PathBuf>,
    #[command(flatten)]
    job: Box<SubmitArgs>,
}

/// `cathedral cron ...`.
pub async fn run(client: &Client, command: CronCmd, request_id: String) -> Result<u8, CliError> {
    let mut crons = client.crons().await?;
    // Every cron command acts in the namespace of --namespace (`*` lists all).
    let ns = client.namespace();
    match command {
        CronCmd::Create(a) => create(&mut crons, ns, a, request_id).await?,
        CronCmd::List { json } => list(&mut crons, ns, json).await?,
        CronCmd::Show { name, json } => show(&mut crons, ns, name, json).await?,
        CronCmd::Next {
            name,
            count,
            schedule,
            tz,
        } => {
            let r = crons
                .preview_cron(pb::PreviewCronRequest {
                    namespace: ns.to_string(),
                    name: name.unwrap_or_default(),
                    schedule: schedule.unwrap_or_default(),
                    tz,
                    count,
                    after_ms: 0,
                })
                .await?
                .into_inner();
            for (t, local) in r.next_ms.iter().zip(&r.local) {
                println!("{}  {local}", when(*t));
            }
        }
        CronCmd::Pause { name } => {
            set_paused(&mut crons, ns, &name, true, request_id).await?;
            println!("cron {name} paused");
        }
        CronCmd::Resume { name } => {
            set_paused(&mut crons, ns, &name, false, request_id).await?;
            println!("cron {name} resumed");
        }
        CronCmd::Delete { name } => {
            crons
                .delete_cron(pb::DeleteCronRequest {
                    namespace: ns.to_string(),
                    name: name.clone(),
                    request_id,
                })
                .await?;
            println!("cron {name} deleted");
        }
    }
    Ok(0)
}

/// A time of the log (ms since the epoch) in RFC 3339, to the second; `-` for none (0).
fn when(ms: u64) -> String {
    if ms == 0 {
        "-".to_string()
    } else {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string()
    }
}

/// `cathedral cron create`: creates the cron; prints its next fires.
async fn create(
    crons: &mut CronServiceClient<Conn>,
    ns: &str,
    a: CreateArgs,
    request_id: String,
) -> Result<(), CliError> {
    let CreateArgs {
        cron,
        schedule,
        tz,
        overlap,
        catch_up,
        workflow,
        job,
    } = a;
    let target = match (&workflow, job.command.is_empty()) {
        (Some(file), true) => {
            let w = crate::workflow::load(file).map_err(CliError::invalid)?;
            pb::cron_spec::Target::Workflow(pb::CronWorkflow {
                name: w.name,
                jobs: w.jobs,
            })
        }
        (None, false) => {
            // The jobs it launches are named after the cron unless --name says.
            let mut spec = submit_spec(job.command.clone(), &job)?;
            if job.name.is_none() {
                spec.name = cron.clone();
            }
            pb::cron_spec::Target::Job(spec)
        }
        _ => {
            return Err(CliError::invalid(
                "give a command after -- or --workflow FILE (one of them)",
            ))
        }
    };
    let overlap = match overlap.as_str() {
        "queue" => pb::CronOverlap::Queue,
        "allow" => pb::CronOverlap::Allow,
        _ => pb::CronOverlap::Skip,
    };
    let catch_up_ms =
        parse::duration_ms(&catch_up).map_err(|e| CliError::invalid(format!("--catch-up: {e}")))?;
    let r = crons
        .create_cron(pb::CreateCronRequest {
            namespace: ns.to_string(),
            spec: Some(pb::CronSpec {
                name: cron.clone(),
                schedule,
                tz,
                overlap: overlap as i32,
                catch_up_ms: Some(catch_up_ms),
                target: Some(target),
            }),
            request_id,
        })
        .await?
        .into_inner();
    if job.json {
        print_json(&serde_json::json!({"name": cron, "index": r.index, "next_ms": r.next_ms}));
    } else {
        println!("cron {cron}; next fires:");
        for t in r.next_ms {
            println!("  {}", when(t));
        }
    }
    Ok(())
}

/// `cathedral cron list`.
async fn list(crons: &mut CronServiceClient<Conn>, ns: &str, json: bool) -> Result<(), CliError> {
    let r = crons
        .list_crons(pb::ListCronsRequest {
            namespace: ns.to_string(),
        })
        .await?
        .into_inner();
    if json {
        print_json(&serde_json::to_value(&r.crons).expect("JSON"));
        return Ok(());
    }
    println!(
        "{:<24} {:<20} {:<16} {:<7} {:>8} {:>8}  NEXT",
        "NAME", "SCHEDULE", "TZ", "OVERLAP", "LAUNCHED", "SKIPPED"
    );
    for c in &r.crons {
        let s = c.spec.clone().unwrap_or_default();
        let overlap = pb::CronOverlap::try_from(s.overlap)
            .map(|o| {
                o.as_str_name()
                    .trim_start_matches("CRON_OVERLAP_")
                    .to_lowercase()
            })
            .unwrap_or_default();
        // Across namespaces, a cron outside `default` shows as namespace/name.
        let name = if ns == "*" && !c.namespace.is_empty() && c.namespace != "default" {
            format!("{}/{}", c.namespace, s.name)
        } else {
            s.name.clone()
        };
        println!(
            "{:<24} {:<20} {:<16} {:<7} {:>8} {:>8}  {}",
            name,
            s.schedule,
            s.tz,
            overlap,
            c.launched,
            c.skipped,
            if c.paused {
                "paused".into()
            } else {
                when(c.next_ms)
            }
        );
    }
    Ok(())
}

/// `cathedral cron show`: the cron, then one line per fire of its history.
async fn show(
    crons: &mut CronServiceClient<Conn>,
    ns: &str,
    name: String,
    json: bool,
) -> Result<(), CliError> {
    let c = crons
        .get_cron(pb::GetCronRequest {
            name,
            namespace: ns.to_string(),
        })
        .await?
        .into_inner();
    if json {
        print_json(&serde_json::to_value(&c).expect("JSON"));
        return Ok(());
    }
    let s = c.spec.clone().unwrap_or_default();
    println!("cron      {}", s.name);
    println!("schedule  {} ({})", s.schedule, s.tz);
    println!("paused    {}", c.paused);
    println!(
        "next      {}",
        if c.paused {
            "-".into()
        } else {
            when(c.next_ms)
        }
    );
    println!("launched  {}   skipped {}", c.launched, c.skipped);
    if !c.queued_ms.is_empty() {
        println!(
            "queued    {}",
            c.queued_ms
                .iter()
                .map(|t| when(*t))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "{:<22} {:<9} {:<10} WHAT",
        "SCHEDULED", "OUTCOME", "DECIDED"
    );
    for f in &c.history {
        let what = match (f.job_id, f.workflow_id, f.count) {
            (j, _, _) if j > 0 => format!("job {j}"),
            (_, w, _) if w > 0 => format!("workflow {w}"),
            (_, _, n) if n > 1 => {
                format!("{n} fires through {} ({})", when(f.through_ms), f.reason)
            }
            _ => f.reason.clone(),
        };
        let late = f.decided_at_ms.saturating_sub(f.scheduled_ms);
        println!(
            "{:<22} {:<9} +{:<9} {}",
            when(f.scheduled_ms),
            f.outcome,
            humantime::format_duration(std::time::Duration::from_millis(late - late % 1000))
                .to_string(),
            what
        );
    }
    Ok(())
}

/// Pauses or resumes cron `name`: a write under `request_id`.
async fn set_paused(
    crons: &mut CronServiceClient<Conn>,
    ns: &str,
    name: &str,
    paused: bool,
    request_id: String,
) -> Result<(), CliError> {
    crons
        .set_cron_paused(pb::SetCronPausedRequest {
            namespace: ns.to_string(),
            name: name.to_string(),
            paused,
            request_id,
        })
        .await?;
    Ok(())
}
