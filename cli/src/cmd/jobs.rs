//! Jobs: `submit`, `cancel` (writes), and `status`, `list`, `explain`, `logs`, `wait`,
//! `watch`.

use std::collections::HashMap;
use std::io::Write;

use cathedral_api::v1 as pb;
use tokio_stream::StreamExt;

use super::print_json;
use crate::client::{self, exit, CliError, Client};
use crate::{parse, render};

#[derive(clap::Args)]
pub struct SubmitArgs {
    /// Job name [default: the program's file name].
    #[arg(long)]
    pub name: Option<String>,
    /// Time limit per attempt (30s, 5m, 0 for none).
    #[arg(long, default_value = "30s")]
    pub timeout: String,
    /// Keep the job this long after it ends before retention collects it into the
    /// archive, instead of the cluster's --job-retention (12h, 30d; 0 keeps it).
    #[arg(long, value_name = "DURATION")]
    pub retain: Option<String>,
    /// Retries after a failed first attempt.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Run only on nodes carrying this tag (key=value); repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Environment variable for the job (KEY=VALUE); repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// CPU to reserve: cores (0.5) or millicores (500m).
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory to reserve (512M, 2G).
    #[arg(long)]
    pub memory: Option<String>,
    /// A job that must succeed first; repeatable.
    #[arg(long = "depends-on", value_name = "ID")]
    pub depends_on: Vec<u64>,
    /// Submitting again with the same key returns the first job instead of a new one.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// Isolation: auto (the strongest the node has), process, bubblewrap or docker
    /// [default: auto, or docker with --image].
    #[arg(long)]
    pub sandbox: Option<String>,
    /// Container image to run the command in (the docker sandbox); the job goes only to
    /// nodes whose container engine answers (tag driver.docker=true).
    #[arg(long)]
    pub image: Option<String>,
    /// Pull the image when the node's engine lacks it (otherwise the attempt fails).
    #[arg(long)]
    pub pull: bool,
    /// User inside the container: uid[:gid] or a user of the image [default: the image's].
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// The program and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(clap::Args)]
pub struct ListArgs {
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
}

/// The job `command` with the flags of `a` (`submit`, `cron create`).
pub fn submit_spec(command: Vec<String>, a: &SubmitArgs) -> Result<pb::JobSpec, CliError> {
    if command.is_empty() {
        return Err(CliError::invalid(
            "no command given; put it after --, e.g. cathedral submit -- echo hello",
        ));
    }
    let kv = |v: &[String]| -> Result<HashMap<String, String>, CliError> {
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

/// `cathedral submit`: a write of `spec` (from [`submit_spec`]) under `request_id`.
pub async fn submit(
    client: &Client,
    spec: Option<pb::JobSpec>,
    json: bool,
    request_id: String,
) -> Result<u8, CliError> {
    let req = pb::SubmitJobRequest {
        spec,
        request_id,
        namespace: client.namespace().into(),
    };
    let r = client
        .write(|mut c| {
            let req = req.clone();
            async move { c.submit_job(req).await }
        })
        .await?;
    if json {
        print_json(&serde_json::json!({"job_id": render::id(r.job_id), "index": r.index}));
    } else {
        println!("{}", r.job_id);
    }
    Ok(0)
}

/// `cathedral cancel`: a write under `request_id`.
pub async fn cancel(
    client: &Client,
    id: u64,
    reason: String,
    json: bool,
    request_id: String,
) -> Result<u8, CliError> {
    let req = pb::CancelJobRequest {
        job_id: id,
        reason,
        request_id,
        namespace: client.namespace().into(),
    };
    let r = client
        .write(|mut c| {
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
    Ok(0)
}

/// `cathedral status`.
pub async fn status(client: &Client, id: u64, json: bool) -> Result<u8, CliError> {
    let mut jobs = client.jobs().await?;
    let j = jobs
        .get_job(pb::GetJobRequest {
            job_id: id,
            namespace: client.namespace().into(),
        })
        .await?
        .into_inner();
    if json {
        print_json(&render::job_json(&j));
    } else {
        print!("{}", render::job_text(&j));
    }
    Ok(0)
}

/// `cathedral list`: every page, up to `--limit` jobs.
pub async fn list(client: &Client, a: ListArgs) -> Result<u8, CliError> {
    let mut jobs = client.jobs().await?;
    let state = match a.state {
        Some(s) => render::state_from_name(&s)
            .ok_or_else(|| CliError::invalid(format!("unknown state {s:?}")))?
            as i32,
        None => 0,
    };
    let limit = a.limit.unwrap_or(usize::MAX);
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = jobs
            .list_jobs(pb::ListJobsRequest {
                state,
                name_prefix: a.name_prefix.clone().unwrap_or_default(),
                node_id: a.node.unwrap_or(0),
                page_size: cathedral_api::LIST_PAGE_SIZE_MAX,
                page_token: token,
                workflow_id: a.workflow.unwrap_or(0),
                newest_first: a.newest_first,
                archived: a.archived,
                namespace: client.namespace().into(),
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
    if a.json {
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
    Ok(0)
}

/// `cathedral explain`.
pub async fn explain(client: &Client, id: u64, json: bool) -> Result<u8, CliError> {
    let mut jobs = client.jobs().await?;
    let e = jobs
        .explain_job(pb::ExplainJobRequest {
            job_id: id,
            namespace: client.namespace().into(),
        })
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
    Ok(0)
}

/// `cathedral logs`: the attempt's output, as it arrives with `follow`.
pub async fn logs(client: &Client, id: u64, attempt: u32, follow: bool) -> Result<u8, CliError> {
    let mut jobs = client.jobs().await?;
    let mut s = jobs
        .get_job_output(pb::GetJobOutputRequest {
            job_id: id,
            attempt,
            follow,
            namespace: client.namespace().into(),
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
    Ok(0)
}

/// `cathedral wait`: exit code 0 only when the job succeeded.
pub async fn wait(
    client: &Client,
    id: u64,
    timeout: Option<String>,
    json: bool,
) -> Result<u8, CliError> {
    let mut jobs = client.jobs().await?;
    let deadline = timeout
        .as_deref()
        .map(parse::duration_ms)
        .transpose()
        .map_err(CliError::invalid)?;
    let watch = async {
        Ok::<_, CliError>(client::watch_until_end(&mut jobs, id, client.namespace()).await?)
    };
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
    Ok(0)
}

/// `cathedral watch`: one line per state change until the job ends.
pub async fn watch(client: &Client, id: u64, json: bool) -> Result<u8, CliError> {
    let mut jobs = client.jobs().await?;
    let mut s = jobs
        .watch_job(pb::WatchJobRequest {
            job_id: id,
            namespace: client.namespace().into(),
        })
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
    Ok(0)
}
