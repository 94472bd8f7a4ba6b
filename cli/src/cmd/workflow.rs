//! `cathedral workflow submit|rerun`: writes, under the request id.

use std::path::PathBuf;

use cathedral_api::v1 as pb;
use clap::Subcommand;

use super::print_json;
use crate::client::{CliError, Client};
use crate::render;

#[derive(Subcommand)]
pub enum WorkflowCmd {
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

/// `cathedral workflow ...`.
pub async fn run(
    client: &Client,
    command: WorkflowCmd,
    request_id: String,
) -> Result<u8, CliError> {
    match command {
        WorkflowCmd::Submit { file, json } => submit(client, file, json, request_id).await,
        WorkflowCmd::Rerun {
            workflow,
            from,
            json,
        } => rerun(client, workflow, from, json, request_id).await,
    }
}

async fn submit(
    client: &Client,
    file: PathBuf,
    json: bool,
    request_id: String,
) -> Result<u8, CliError> {
    let mut req = crate::workflow::load(&file).map_err(CliError::invalid)?;
    req.request_id = request_id;
    req.namespace = client.namespace().into();
    let r = client
        .write(|mut c| {
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
    Ok(0)
}

/// `from`: a job id, or else a job's key in the workflow.
async fn rerun(
    client: &Client,
    workflow: u64,
    from: String,
    json: bool,
    request_id: String,
) -> Result<u8, CliError> {
    let (from_job_id, from_key) = match from.parse::<u64>() {
        Ok(id) => (id, String::new()),
        Err(_) => (0, from),
    };
    let req = pb::RerunWorkflowRequest {
        workflow_id: workflow,
        from_job_id,
        from_key,
        request_id,
        namespace: client.namespace().into(),
    };
    let r = client
        .write(|mut c| {
            let req = req.clone();
            async move { c.rerun_workflow(req).await }
        })
        .await?;
    if json {
        print_json(&serde_json::json!({"job_ids": render::ids(&r.job_ids), "index": r.index}));
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
    Ok(0)
}
