//! `cathedral`: the client CLI. See `cathedral --help`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use cathedral_api::v1 as pb;
use cathedral_cli::client::{self, exit, CliError, DEFAULT_SERVER};
use cathedral_cli::{parse, render, workflow};
use clap::{CommandFactory, Parser, Subcommand};
use tokio_stream::StreamExt;

#[derive(Parser)]
#[command(
    name = "cathedral",
    version,
    about = "Submit and inspect jobs and workflows on a Cathedral cluster."
)]
struct Cli {
    /// Any node's gRPC address; several, comma-separated, for writes to fail over to.
    #[arg(long, global = true, env = "CATHEDRAL_ADDR", default_value = DEFAULT_SERVER)]
    server: String,
    /// Request id of a write (submit, cancel, workflow submit|rerun, cron changes), given
    /// before the subcommand [default: a new random id]. The cluster applies an id once:
    /// sending the same write again with it is safe.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// How long a write whose outcome is unknown (server down or frozen, no leader) is
    /// tried again, at every --server in turn, under its request id, and how long `events
    /// --follow` looks for a node to follow; 0: not at all. Given before the subcommand.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    write_retry: String,
    /// The token's secret, for a cluster with access control on.
    #[arg(long, global = true, env = "CATHEDRAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificate to verify the server with; connects over TLS.
    #[arg(long, global = true, env = "CATHEDRAL_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate to present (with --tls-key).
    #[arg(
        long,
        global = true,
        env = "CATHEDRAL_CLIENT_CERT",
        value_name = "FILE"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, env = "CATHEDRAL_CLIENT_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Submit a job; prints its id once the cluster committed it.
    Submit(SubmitArgs),
    /// Show one job.
    Status {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// List jobs (every page), oldest first.
    List {
        /// pending, assigned, running, succeeded, failed, cancelled or timed_out.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        name_prefix: Option<String>,
        /// Jobs whose latest attempt is on this node.
        #[arg(long)]
        node: Option<u64>,
        /// The jobs of this workflow.
        #[arg(long)]
        workflow: Option<u64>,
        /// Stop after this many jobs.
        #[arg(long)]
        limit: Option<usize>,
        /// Newest first (with --limit: the latest jobs).
        #[arg(long)]
        newest_first: bool,
        /// The jobs retention collected, from the asked node's archive (most recently
        /// collected first).
        #[arg(long)]
        archived: bool,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job (and the jobs that depend on it).
    Cancel {
        id: u64,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Why a job is where it is: what it waits for, and which nodes could run it and why not.
    Explain {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Print a job attempt's output.
    Logs {
        id: u64,
        /// Attempt number (default: the latest).
        #[arg(long, default_value_t = 0)]
        attempt: u32,
        /// Keep printing until the attempt ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Wait for a job to end; exit code 0 only when it succeeded.
    Wait {
        id: u64,
        /// Give up after this long (exit code 1).
        #[arg(long)]
        timeout: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print every state change of a job until it ends.
    Watch {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Print the cluster's events — jobs submitted, assigned, started, finished, retried,
    /// cancelled; nodes joined, failed, recovered, left; leader changes; checkpoints — in
    /// log order, each with its log index.
    Events {
        /// Start at this log index (INDEX, or INDEX.SEQ to resume inside an entry; 0: the
        /// earliest the node holds). Default: every event the node holds; with --follow,
        /// only events applied from now on.
        #[arg(long, value_name = "INDEX[.SEQ]")]
        from: Option<String>,
        /// Keep printing events as they are applied; when the server goes away, go on at
        /// the next --server from the last event printed (no gap, no repeat), for up to
        /// --write-retry without one answering. Without it: stop at the events applied now.
        #[arg(long, short)]
        follow: bool,
        /// Only these kinds (comma-separated: job_submitted, job_finished, node_failed, …).
        #[arg(long, value_delimiter = ',', value_name = "KIND")]
        kind: Vec<String>,
        /// Only this job's events.
        #[arg(long)]
        job: Option<u64>,
        /// Only this workflow's events.
        #[arg(long)]
        workflow: Option<u64>,
        /// Only this node's events.
        #[arg(long)]
        node: Option<u64>,
        /// One JSON object per line (the API's JSON mapping).
        #[arg(long)]
        json: bool,
    },
    /// Workflows (DAGs of jobs).
    Workflow {
        #[command(subcommand)]
        command: WorkflowCmd,
    },
    /// The cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
    /// One node: its tags.
    Node {
        #[command(subcommand)]
        command: NodeCmd,
    },
    /// Snapshots of the replicated state.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCmd,
    },
    /// Access control: bootstrap it, and manage tokens.
    Acl {
        #[command(subcommand)]
        command: AclCmd,
    },
    /// Periodic jobs and workflows: each fire is decided once, in the log.
    Cron {
        #[command(subcommand)]
        command: CronCmd,
    },
    /// Make a CA and certificates for a test cluster (local files; no server).
    Tls {
        #[command(subcommand)]
        command: TlsCmd,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum CronCmd {
    /// Create a cron running a command (job flags as for `submit`) or a workflow file.
    Create {
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
    },
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

#[derive(Subcommand)]
enum AclCmd {
    /// Turn access control on; prints the first (management) token. Its secret is shown
    /// this once: keep it.
    Bootstrap {
        #[arg(long, default_value = "bootstrap")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Tokens (needs a management token).
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// The token this call carries.
    Whoami {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token; prints its accessor and its secret (shown this once).
    Create {
        /// read, submit, operator or management.
        #[arg(long)]
        policy: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its accessor; every node refuses it once the revoke is applied.
    Revoke { accessor: String },
}

#[derive(Subcommand)]
enum TlsCmd {
    /// A new CA: DIR/ca.pem and DIR/ca-key.pem.
    CreateCa {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value = "Cathedral test CA")]
        name: String,
    },
    /// A certificate the CA signs: for a node (--node ID with --ip/--dns; server and
    /// client use) or a client (--client NAME). Writes OUT/NAME.pem and OUT/NAME-key.pem.
    CreateCert {
        /// The CA's directory (from create-ca).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        #[arg(long, conflicts_with = "client")]
        node: Option<String>,
        #[arg(long)]
        client: Option<String>,
        /// An IP address the node is reached at; repeatable.
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
        /// A DNS name the node is reached at; repeatable.
        #[arg(long)]
        dns: Vec<String>,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct SubmitArgs {
    /// Job name [default: the program's file name].
    #[arg(long)]
    name: Option<String>,
    /// Time limit per attempt (30s, 5m, 0 for none).
    #[arg(long, default_value = "30s")]
    timeout: String,
    /// Keep the job this long after it ends before retention collects it into the
    /// archive, instead of the cluster's --job-retention (12h, 30d; 0 keeps it).
    #[arg(long, value_name = "DURATION")]
    retain: Option<String>,
    /// Retries after a failed first attempt.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Run only on nodes carrying this tag (key=value); repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Environment variable for the job (KEY=VALUE); repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// CPU to reserve: cores (0.5) or millicores (500m).
    #[arg(long)]
    cpu: Option<String>,
    /// Memory to reserve (512M, 2G).
    #[arg(long)]
    memory: Option<String>,
    /// A job that must succeed first; repeatable.
    #[arg(long = "depends-on", value_name = "ID")]
    depends_on: Vec<u64>,
    /// Submitting again with the same key returns the first job instead of a new one.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[arg(long, default_value_t = 0)]
    priority: i32,
    /// Isolation: auto (the strongest the node has), process, bubblewrap or docker
    /// [default: auto, or docker with --image].
    #[arg(long)]
    sandbox: Option<String>,
    /// Container image to run the command in (the docker sandbox); the job goes only to
    /// nodes whose container engine answers (tag driver.docker=true).
    #[arg(long)]
    image: Option<String>,
    /// Pull the image when the node's engine lacks it (otherwise the attempt fails).
    #[arg(long)]
    pull: bool,
    /// User inside the container: uid[:gid] or a user of the image [default: the image's].
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    json: bool,
    /// The program and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Subcommand)]
enum WorkflowCmd {
    /// Submit a workflow file (YAML, or JSON by the .json extension).
    Submit {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run a failed, timed-out or cancelled job of a workflow again, with everything
    /// downstream of it; succeeded jobs upstream keep their results.
    Rerun {
        workflow: u64,
        /// The job to rerun from: its id or its key in the workflow.
        #[arg(long, value_name = "JOB")]
        from: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Leader, term, indexes, state hash and members, as the node asked sees them.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Remove a node from the cluster.
    RemoveNode { id: u64 },
    /// Every node with its state, gossip liveness, phi, load and tags.
    Nodes {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// A node's tags.
    Tag {
        #[command(subcommand)]
        command: TagCmd,
    },
}

#[derive(Subcommand)]
enum TagCmd {
    /// Set tags on node ID (kept across its restarts, spread by gossip); prints its tags.
    Set {
        id: u64,
        #[arg(required = true, value_name = "KEY=VALUE")]
        tags: Vec<String>,
    },
    /// Remove tags from node ID; prints its tags.
    Unset {
        id: u64,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Write a snapshot now on the node asked; prints the index it covers.
    Trigger {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // A reader that stops early (`cathedral list | head`) ends this process quietly, with
    // the status a Unix filter killed by SIGPIPE has (141), instead of a panic message.
    // (Not by restoring SIGPIPE's default: a write to a closed socket would then kill the
    // process instead of failing the call.)
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    if let Cmd::Tls { command } = cli.command {
        return match tls(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cathedral: {}", e.message);
                ExitCode::from(e.code)
            }
        };
    }
    if let Cmd::Completions { shell } = cli.command {
        // Into a buffer first: a reader that stops early (`| head`) closes the pipe, which
        // ends the write quietly instead of panicking inside the generator.
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "cathedral", &mut script);
        let _ = std::io::stdout().write_all(&script);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cathedral: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cathedral: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// The writes: sent under one request id, tried at every server in turn while their
/// outcome is unknown.
async fn write(
    command: Cmd,
    spec: Option<pb::JobSpec>,
    servers: &[String],
    retry_for: std::time::Duration,
    request_id: String,
) -> Result<u8, CliError> {
    match command {
        Cmd::Submit(a) => {
            let req = pb::SubmitJobRequest { spec, request_id };
            let r = client::write(servers, retry_for, |mut c| {
                let req = req.clone();
                async move { c.submit_job(req).await }
            })
            .await?;
            if a.json {
                print_json(&serde_json::json!({"job_id": render::id(r.job_id), "index": r.index}));
            } else {
                println!("{}", r.job_id);
            }
        }
        Cmd::Cancel { id, reason, json } => {
            let req = pb::CancelJobRequest {
                job_id: id,
                reason,
                request_id,
            };
            let r = client::write(servers, retry_for, |mut c| {
                let req = req.clone();
                async move { c.cancel_job(req).await }
            })
            .await?;
            let j = r.job.unwrap_or_default();
            if json {
                print_json(&render::job_json(&j));
            } else {
                println!("job {}: {}", j.id, render::state_name(j.state));
            }
        }
        Cmd::Workflow {
            command: WorkflowCmd::Submit { file, json },
        } => {
            let mut req = workflow::load(&file).map_err(CliError::invalid)?;
            req.request_id = request_id;
            let r = client::write(servers, retry_for, |mut c| {
                let req = req.clone();
                async move { c.submit_workflow(req).await }
            })
            .await?;
            if json {
                let job_ids: serde_json::Map<String, serde_json::Value> = r
                    .job_ids
                    .iter()
                    .map(|(k, v)| (k.clone(), render::id(*v)))
                    .collect();
                print_json(&serde_json::json!({
                    "workflow_id": render::id(r.workflow_id),
                    "job_ids": job_ids,
                    "index": r.index,
                }));
            } else {
                println!("workflow {}", r.workflow_id);
                let mut ids: Vec<_> = r.job_ids.into_iter().collect();
                ids.sort_by_key(|(_, id)| *id);
                for (key, id) in ids {
                    println!("  {id:>8}  {key}");
                }
            }
        }
        Cmd::Workflow {
            command:
                WorkflowCmd::Rerun {
                    workflow,
                    from,
                    json,
                },
        } => {
            let (from_job_id, from_key) = match from.parse::<u64>() {
                Ok(id) => (id, String::new()),
                Err(_) => (0, from),
            };
            let req = pb::RerunWorkflowRequest {
                workflow_id: workflow,
                from_job_id,
                from_key,
                request_id,
            };
            let r = client::write(servers, retry_for, |mut c| {
                let req = req.clone();
                async move { c.rerun_workflow(req).await }
            })
            .await?;
            if json {
                print_json(
                    &serde_json::json!({"job_ids": render::ids(&r.job_ids), "index": r.index}),
                );
            } else {
                println!(
                    "workflow {workflow}: rerunning jobs {}",
                    r.job_ids
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        _ => unreachable!("only writes come here"),
    }
    Ok(0)
}

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values print")
    );
}

/// Runs one command. Long on purpose: one short match arm per read subcommand (the writes
/// are in `write`), so the whole CLI surface reads top to bottom like `--help`.
/// `INDEX` or `INDEX.SEQ`.
fn parse_position(s: &str) -> Result<(u64, u32), CliError> {
    let bad = || CliError::invalid(format!("--from {s:?}: expected INDEX or INDEX.SEQ"));
    match s.split_once('.') {
        None => Ok((s.parse().map_err(|_| bad())?, 0)),
        Some((i, q)) => Ok((i.parse().map_err(|_| bad())?, q.parse().map_err(|_| bad())?)),
    }
}

/// `cathedral events`: reads the event stream, and with `follow` resumes it at the next
/// server after the last event printed when a server goes away.
async fn events(
    servers: &[String],
    req: pb::WatchEventsRequest,
    from: Option<(u64, u32)>,
    follow: bool,
    json: bool,
    retry_for: std::time::Duration,
) -> Result<u8, CliError> {
    let mut from = from;
    let mut tries = 0usize;
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        let addr = &servers[tries % servers.len()];
        let failed: CliError = match client::connect(addr).await {
            Err(e) => e,
            Ok(ch) => {
                // Following from "now": pin "now" to an index first, so a resumed stream
                // starts where this one did.
                if from.is_none() && follow {
                    match client::cluster(ch.clone())
                        .status(pb::StatusRequest {})
                        .await
                    {
                        Ok(s) => from = Some((s.into_inner().applied_index + 1, 0)),
                        Err(s) if client::outcome_unknown(&s) => {
                            tries += 1;
                            pause(
                                &mut failing_since,
                                retry_for,
                                tries,
                                servers.len(),
                                s.into(),
                            )
                            .await?;
                            continue;
                        }
                        Err(s) => return Err(s.into()),
                    }
                }
                let mut r = req.clone();
                r.from_index = Some(from.map_or(0, |p| p.0));
                r.from_seq = from.map_or(0, |p| p.1);
                match client::jobs(ch).watch_events(r).await {
                    Err(s) if follow && client::outcome_unknown(&s) => s.into(),
                    Err(s) => return Err(s.into()),
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        let ended = loop {
                            match stream.next().await {
                                None => break None,
                                Some(Err(s)) => break Some(s),
                                Some(Ok(ev)) => {
                                    failing_since = None;
                                    from = Some((ev.index, ev.seq + 1));
                                    print_event(&ev, json)?;
                                }
                            }
                        };
                        match ended {
                            None if !follow => return Ok(0),
                            None => {
                                CliError::new(exit::UNAVAILABLE, format!("{addr} ended the stream"))
                            }
                            Some(s) if follow && client::outcome_unknown(&s) => s.into(),
                            Some(s) => return Err(s.into()),
                        }
                    }
                }
            }
        };
        if !follow {
            return Err(failed);
        }
        tries += 1;
        pause(&mut failing_since, retry_for, tries, servers.len(), failed).await?;
    }
}

/// Between tries of `events`: gives up with `failed` once `retry_for` passed without an
/// event; pauses after each round of the servers.
async fn pause(
    failing_since: &mut Option<std::time::Instant>,
    retry_for: std::time::Duration,
    tries: usize,
    servers: usize,
    failed: CliError,
) -> Result<(), CliError> {
    let since = *failing_since.get_or_insert_with(std::time::Instant::now);
    if since.elapsed() >= retry_for {
        return Err(failed);
    }
    if tries.is_multiple_of(servers) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(())
}

fn print_event(ev: &pb::ClusterEvent, json: bool) -> Result<(), CliError> {
    let line = if json {
        serde_json::to_string(ev).map_err(|e| CliError::new(exit::FAILED, e.to_string()))?
    } else {
        render::cluster_event_text(ev)
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .map_err(|e| CliError::new(exit::FAILED, format!("stdout: {e}")))
}

async fn run(cli: Cli) -> Result<u8, CliError> {
    client::use_credentials(client::Credentials::new(
        cli.token.as_deref(),
        cli.tls_ca.as_deref(),
        cli.tls_cert.as_deref(),
        cli.tls_key.as_deref(),
    )?);
    // Input mistakes are reported before anything is sent.
    let spec = match &cli.command {
        Cmd::Submit(a) => Some(submit_spec(a.command.clone(), a)?),
        _ => None,
    };
    let servers = client::addresses(&cli.server)?;
    let retry_for = std::time::Duration::from_millis(
        parse::duration_ms(&cli.write_retry)
            .map_err(|e| CliError::invalid(format!("--write-retry: {e}")))?,
    );
    let request_id = cli
        .request_id
        .clone()
        .unwrap_or_else(client::new_request_id);
    // Writes connect per try (they fail over); everything else reads from one server.
    let is_write = matches!(
        cli.command,
        Cmd::Submit(_) | Cmd::Cancel { .. } | Cmd::Workflow { .. }
    );
    if is_write {
        return write(cli.command, spec, &servers, retry_for, request_id).await;
    }
    if let Cmd::Events {
        from,
        follow,
        kind,
        job,
        workflow,
        node,
        json,
    } = &cli.command
    {
        let from = from.as_deref().map(parse_position).transpose()?;
        let req = pb::WatchEventsRequest {
            kinds: kind.clone(),
            job_id: *job,
            workflow_id: *workflow,
            node_id: *node,
            stop_at_applied: !follow,
            ..Default::default()
        };
        let retry = std::time::Duration::from_millis(
            parse::duration_ms(&cli.write_retry).map_err(CliError::invalid)?,
        );
        return events(&servers, req, from, *follow, *json, retry).await;
    }
    let ch = client::connect_any(&servers).await?;
    if let Cmd::Acl { command } = cli.command {
        return acl(client::acl(ch), command).await;
    }
    if let Cmd::Cron { command } = cli.command {
        return cron(client::crons(ch), command, request_id).await;
    }
    let mut jobs = client::jobs(ch.clone());
    match cli.command {
        Cmd::Submit(_) | Cmd::Cancel { .. } | Cmd::Workflow { .. } => {
            unreachable!("writes are sent above")
        }
        Cmd::Events { .. } => unreachable!("read above"),
        Cmd::Explain { id, json } => {
            let e = jobs
                .explain_job(pb::ExplainJobRequest { job_id: id })
                .await?
                .into_inner();
            if json {
                print_json(&serde_json::to_value(&e).expect("JSON"));
            } else {
                println!("job {id}: {}", e.summary);
                for d in &e.details {
                    println!("  {d}");
                }
                for n in &e.nodes {
                    println!(
                        "  node {:<20} {} {}",
                        n.node_id,
                        if n.fits { "yes" } else { "no " },
                        n.why
                    );
                }
            }
        }
        Cmd::Status { id, json } => {
            let j = jobs
                .get_job(pb::GetJobRequest { job_id: id })
                .await?
                .into_inner();
            if json {
                print_json(&render::job_json(&j));
            } else {
                print!("{}", render::job_text(&j));
            }
        }
        Cmd::List {
            state,
            name_prefix,
            node,
            workflow,
            limit,
            newest_first,
            archived,
            json,
        } => {
            let state = match state {
                Some(s) => render::state_from_name(&s)
                    .ok_or_else(|| CliError::invalid(format!("unknown state {s:?}")))?
                    as i32,
                None => 0,
            };
            let limit = limit.unwrap_or(usize::MAX);
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = jobs
                    .list_jobs(pb::ListJobsRequest {
                        state,
                        name_prefix: name_prefix.clone().unwrap_or_default(),
                        node_id: node.unwrap_or(0),
                        page_size: cathedral_api::LIST_PAGE_SIZE_MAX,
                        page_token: token,
                        workflow_id: workflow.unwrap_or(0),
                        newest_first,
                        archived,
                    })
                    .await?
                    .into_inner();
                all.extend(page.jobs);
                token = page.next_page_token;
                if token.is_empty() || all.len() >= limit {
                    break;
                }
            }
            all.truncate(limit);
            if json {
                print_json(&serde_json::Value::Array(
                    all.iter().map(render::job_json).collect(),
                ));
            } else {
                let mut out = std::io::stdout().lock();
                if !all.is_empty() {
                    let _ = writeln!(out, "{}", render::JOB_LINE_HEADER);
                }
                for j in &all {
                    let _ = writeln!(out, "{}", render::job_line(j));
                }
            }
        }
        Cmd::Logs {
            id,
            attempt,
            follow,
        } => {
            let mut s = jobs
                .get_job_output(pb::GetJobOutputRequest {
                    job_id: id,
                    attempt,
                    follow,
                })
                .await?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = s.next().await {
                let chunk = chunk?;
                out.write_all(&chunk.data)
                    .and_then(|_| out.flush())
                    .map_err(|e| CliError::new(exit::FAILED, format!("stdout: {e}")))?;
            }
        }
        Cmd::Wait { id, timeout, json } => {
            let deadline = timeout
                .as_deref()
                .map(parse::duration_ms)
                .transpose()
                .map_err(CliError::invalid)?;
            let watch = async { Ok::<_, CliError>(client::watch_until_end(&mut jobs, id).await?) };
            let last = match deadline {
                Some(ms) => tokio::time::timeout(std::time::Duration::from_millis(ms), watch)
                    .await
                    .map_err(|_| {
                        CliError::new(
                            exit::FAILED,
                            format!("job {id} still running after {ms} ms"),
                        )
                    })??,
                None => watch.await?,
            };
            if json {
                print_json(&render::event_json(&last));
            } else {
                println!("{}", render::event_text(&last));
            }
            if last.state != pb::JobState::Succeeded as i32 {
                return Ok(exit::FAILED);
            }
        }
        Cmd::Watch { id, json } => {
            let mut s = jobs
                .watch_job(pb::WatchJobRequest { job_id: id })
                .await?
                .into_inner();
            while let Some(ev) = s.next().await {
                let ev = ev?;
                if json {
                    println!("{}", render::event_json(&ev));
                } else {
                    println!("{}", render::event_text(&ev));
                }
            }
        }
        Cmd::Cluster { command } => {
            let mut cluster = client::cluster(ch);
            match command {
                ClusterCmd::Status { json } => {
                    let s = cluster.status(pb::StatusRequest {}).await?.into_inner();
                    if json {
                        print_json(&render::status_json(&s));
                    } else {
                        print!("{}", render::status_text(&s));
                    }
                }
                ClusterCmd::Nodes { json } => {
                    let r = cluster
                        .list_nodes(pb::ListNodesRequest {})
                        .await?
                        .into_inner();
                    if json {
                        print_json(&render::nodes_json(&r));
                    } else {
                        print!("{}", render::nodes_text(&r));
                    }
                }
                ClusterCmd::RemoveNode { id } => {
                    cluster
                        .remove_node(pb::RemoveNodeRequest { node_id: id })
                        .await?;
                    println!("node {id} removed");
                }
            }
        }
        Cmd::Node {
            command: NodeCmd::Tag { command },
        } => {
            let (node_id, set, unset) = tag_change(command)?;
            let r = client::cluster(ch)
                .set_node_tags(pb::SetNodeTagsRequest {
                    node_id,
                    set,
                    unset,
                })
                .await?
                .into_inner();
            let mut tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            tags.sort();
            for t in tags {
                println!("{t}");
            }
        }
        Cmd::Snapshot {
            command: SnapshotCmd::Trigger { json },
        } => {
            let mut cluster = client::cluster(ch);
            let r = cluster
                .trigger_snapshot(pb::TriggerSnapshotRequest {})
                .await?
                .into_inner();
            if json {
                print_json(&serde_json::json!({"snapshot_index": r.snapshot_index}));
            } else {
                println!("snapshot at index {}", r.snapshot_index);
            }
        }
        Cmd::Completions { .. } | Cmd::Tls { .. } => unreachable!("handled before connecting"),
        Cmd::Acl { .. } | Cmd::Cron { .. } => unreachable!("handled above"),
    }
    Ok(0)
}

fn token_json(t: &pb::AclToken) -> serde_json::Value {
    let mut v = serde_json::json!({
        "accessor": t.accessor,
        "name": t.name,
        "policy": t.policy,
        "created_at_ms": t.created_at_ms,
    });
    if !t.secret.is_empty() {
        v["secret"] = t.secret.clone().into();
    }
    v
}

fn print_token(t: &pb::AclToken, json: bool) {
    if json {
        print_json(&token_json(t));
        return;
    }
    println!("accessor  {}", t.accessor);
    if !t.secret.is_empty() {
        println!("secret    {}", t.secret);
    }
    println!("name      {}", t.name);
    println!("policy    {}", t.policy);
}

/// `cathedral acl ...`.
async fn acl(
    mut acl: cathedral_api::v1::acl_service_client::AclServiceClient<client::Conn>,
    command: AclCmd,
) -> Result<u8, CliError> {
    match command {
        AclCmd::Bootstrap { name, json } => {
            let t = acl
                .bootstrap(pb::AclBootstrapRequest { name })
                .await?
                .into_inner();
            print_token(&t, json);
            if !json {
                eprintln!("access control is on: keep this secret; every call needs a token (--token or CATHEDRAL_TOKEN)");
            }
        }
        AclCmd::Whoami { json } => {
            let t = acl.who_am_i(pb::WhoAmIRequest {}).await?.into_inner();
            print_token(&t, json);
        }
        AclCmd::Token {
            command: TokenCmd::Create { policy, name, json },
        } => {
            let t = acl
                .create_token(pb::CreateTokenRequest { name, policy })
                .await?
                .into_inner();
            print_token(&t, json);
        }
        AclCmd::Token {
            command: TokenCmd::List { json },
        } => {
            let r = acl
                .list_tokens(pb::ListTokensRequest {})
                .await?
                .into_inner();
            if json {
                print_json(&serde_json::json!({
                    "enforced": r.enforced,
                    "tokens": r.tokens.iter().map(token_json).collect::<Vec<_>>(),
                }));
            } else {
                println!("{:<32}  {:<10}  NAME", "ACCESSOR", "POLICY");
                for t in &r.tokens {
                    println!("{:<32}  {:<10}  {}", t.accessor, t.policy, t.name);
                }
            }
        }
        AclCmd::Token {
            command: TokenCmd::Revoke { accessor },
        } => {
            acl.revoke_token(pb::RevokeTokenRequest {
                accessor: accessor.clone(),
            })
            .await?;
            println!("token {accessor} revoked");
        }
    }
    Ok(0)
}

/// `cathedral cron ...`. Writes go to one server under the request id (so sending one
/// again with the same `--request-id` is safe).
async fn cron(
    mut crons: cathedral_api::v1::cron_service_client::CronServiceClient<client::Conn>,
    command: CronCmd,
    request_id: String,
) -> Result<u8, CliError> {
    let when = |ms: u64| {
        if ms == 0 {
            "-".to_string()
        } else {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string()
        }
    };
    match command {
        CronCmd::Create {
            cron,
            schedule,
            tz,
            overlap,
            catch_up,
            workflow,
            job,
        } => {
            let target = match (&workflow, job.command.is_empty()) {
                (Some(file), true) => {
                    let w = workflow::load(file).map_err(CliError::invalid)?;
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
            let catch_up_ms = parse::duration_ms(&catch_up)
                .map_err(|e| CliError::invalid(format!("--catch-up: {e}")))?;
            let r = crons
                .create_cron(pb::CreateCronRequest {
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
                print_json(
                    &serde_json::json!({"name": cron, "index": r.index, "next_ms": r.next_ms}),
                );
            } else {
                println!("cron {cron}; next fires:");
                for t in r.next_ms {
                    println!("  {}", when(t));
                }
            }
        }
        CronCmd::List { json } => {
            let r = crons
                .list_crons(pb::ListCronsRequest {})
                .await?
                .into_inner();
            if json {
                print_json(&serde_json::to_value(&r.crons).expect("JSON"));
            } else {
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
                    println!(
                        "{:<24} {:<20} {:<16} {:<7} {:>8} {:>8}  {}",
                        s.name,
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
            }
        }
        CronCmd::Show { name, json } => {
            let c = crons
                .get_cron(pb::GetCronRequest { name })
                .await?
                .into_inner();
            if json {
                print_json(&serde_json::to_value(&c).expect("JSON"));
            } else {
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
                        humantime::format_duration(std::time::Duration::from_millis(
                            late - late % 1000
                        ))
                        .to_string(),
                        what
                    );
                }
            }
        }
        CronCmd::Next {
            name,
            count,
            schedule,
            tz,
        } => {
            let r = crons
                .preview_cron(pb::PreviewCronRequest {
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
            crons
                .set_cron_paused(pb::SetCronPausedRequest {
                    name: name.clone(),
                    paused: true,
                    request_id,
                })
                .await?;
            println!("cron {name} paused");
        }
        CronCmd::Resume { name } => {
            let r = crons
                .set_cron_paused(pb::SetCronPausedRequest {
                    name: name.clone(),
                    paused: false,
                    request_id,
                })
                .await?
                .into_inner();
            let _ = r;
            println!("cron {name} resumed");
        }
        CronCmd::Delete { name } => {
            crons
                .delete_cron(pb::DeleteCronRequest {
                    name: name.clone(),
                    request_id,
                })
                .await?;
            println!("cron {name} deleted");
        }
    }
    Ok(0)
}

/// `cathedral tls ...`: local files only.
fn tls(command: TlsCmd) -> Result<(), CliError> {
    use cathedral_cli::tls::{create_ca, create_cert, Subject};
    let files = match command {
        TlsCmd::CreateCa { out, name } => create_ca(&out, &name)?,
        TlsCmd::CreateCert {
            ca,
            node,
            client,
            ip,
            dns,
            out,
        } => {
            let subject = match (node, client) {
                (Some(id), None) => Subject::Node {
                    id,
                    ips: ip,
                    names: dns,
                },
                (None, Some(name)) => Subject::Client { name },
                _ => return Err(CliError::invalid("give --node ID or --client NAME")),
            };
            create_cert(&ca, subject, &out)?
        }
    };
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

type TagChange = (u64, std::collections::HashMap<String, String>, Vec<String>);

fn tag_change(cmd: TagCmd) -> Result<TagChange, CliError> {
    Ok(match cmd {
        TagCmd::Set { id, tags } => {
            let set = tags
                .iter()
                .map(|t| parse::key_value(t).map_err(CliError::invalid))
                .collect::<Result<_, _>>()?;
            (id, set, Vec::new())
        }
        TagCmd::Unset { id, keys } => (id, Default::default(), keys),
    })
}

fn submit_spec(command: Vec<String>, a: &SubmitArgs) -> Result<pb::JobSpec, CliError> {
    if command.is_empty() {
        return Err(CliError::invalid(
            "no command given; put it after --, e.g. cathedral submit -- echo hello",
        ));
    }
    let kv = |v: &[String]| -> Result<std::collections::HashMap<String, String>, CliError> {
        v.iter()
            .map(|s| parse::key_value(s).map_err(CliError::invalid))
            .collect()
    };
    let (sandbox, docker) = parse::sandbox(
        a.sandbox.as_deref(),
        a.image.as_deref(),
        a.pull,
        a.user.as_deref(),
    )
    .map_err(CliError::invalid)?;
    let name = a.name.clone().unwrap_or_else(|| {
        std::path::Path::new(&command[0])
            .file_name()
            .map_or(command[0].clone(), |n| n.to_string_lossy().into_owned())
    });
    Ok(pb::JobSpec {
        name,
        command,
        env: kv(&a.env)?,
        cpu_millis: a
            .cpu
            .as_deref()
            .map(parse::cpu_millis)
            .transpose()
            .map_err(CliError::invalid)?
            .unwrap_or(0),
        memory_bytes: a
            .memory
            .as_deref()
            .map(parse::bytes)
            .transpose()
            .map_err(CliError::invalid)?
            .unwrap_or(0),
        sandbox: sandbox as i32,
        docker,
        constraints: kv(&a.tags)?,
        timeout_ms: Some(parse::duration_ms(&a.timeout).map_err(CliError::invalid)?),
        retain_ms: a
            .retain
            .as_deref()
            .map(parse::duration_ms)
            .transpose()
            .map_err(CliError::invalid)?,
        retry: Some(pb::RetryPolicy {
            max_attempts: a.retries.saturating_add(1),
            initial_backoff_ms: 1000,
            max_backoff_ms: 60_000,
            multiplier_milli: 2000,
        }),
        priority: a.priority,
        depends_on: a.depends_on.clone(),
        idempotency_key: a.idempotency_key.clone().unwrap_or_default(),
    })
}
