//! The `cathedral` command line: [`Cli`] and its commands (clap), and [`run`], which
//! calls one function per command. A group of subcommands lives in its own module with
//! its flags.

pub mod acl;
pub mod cluster;
pub mod cron;
pub mod events;
pub mod jobs;
pub mod namespace;
pub mod tls;
pub mod workflow;

use std::io::Write;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use crate::client::{self, CliError, Client, Credentials, DEFAULT_SERVER};
use crate::parse;

#[derive(Parser)]
#[command(
    name = "cathedral",
    version,
    about = "Submit and inspect jobs and workflows on a Cathedral cluster."
)]
pub struct Cli {
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
    /// The namespace jobs and workflows are submitted to and read from; `*` reads every
    /// namespace [default: default].
    #[arg(long, global = true, env = "CATHEDRAL_NAMESPACE", value_name = "NAME")]
    namespace: Option<String>,
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
pub enum Cmd {
    /// Submit a job; prints its id once the cluster committed it.
    Submit(jobs::SubmitArgs),
    /// Show one job.
    Status {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// List jobs (every page), oldest first.
    List(jobs::ListArgs),
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
    Events(events::EventsArgs),
    /// Workflows (DAGs of jobs).
    Workflow {
        #[command(subcommand)]
        command: workflow::WorkflowCmd,
    },
    /// The cluster.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCmd,
    },
    /// One node: its tags.
    Node {
        #[command(subcommand)]
        command: cluster::NodeCmd,
    },
    /// Snapshots of the replicated state.
    Snapshot {
        #[command(subcommand)]
        command: cluster::SnapshotCmd,
    },
    /// Access control: bootstrap it, and manage tokens.
    Acl {
        #[command(subcommand)]
        command: acl::AclCmd,
    },
    /// Namespaces: one cluster shared by several teams, each with its weight and quotas.
    Namespace {
        #[command(subcommand)]
        command: namespace::NamespaceCmd,
    },
    /// Periodic jobs and workflows: each fire is decided once, in the log.
    Cron {
        #[command(subcommand)]
        command: cron::CronCmd,
    },
    /// Make a CA and certificates for a test cluster (local files; no server).
    Tls {
        #[command(subcommand)]
        command: tls::TlsCmd,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

impl Cli {
    /// Whether the command talks to a server (`tls` and `completions` do not).
    pub fn needs_server(&self) -> bool {
        !matches!(self.command, Cmd::Tls { .. } | Cmd::Completions { .. })
    }
}

/// Runs a command that needs no server (see [`Cli::needs_server`]): no runtime, no
/// connection. Returns the exit code.
pub fn run_local(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Cmd::Tls { command } => tls::run(command).map(|()| 0),
        Cmd::Completions { shell } => {
            // Into a buffer first: a reader that stops early (`| head`) closes the pipe,
            // which ends the write quietly instead of panicking inside the generator.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cathedral", &mut script);
            let _ = std::io::stdout().write_all(&script);
            Ok(0)
        }
        _ => unreachable!("only commands without a server come here"),
    }
}

/// Runs the command; returns the exit code. Writes connect per try (they fail over, see
/// [`Client::write`]); `events` follows from server to server; everything else reads
/// from one server.
pub async fn run(cli: Cli) -> Result<u8, CliError> {
    if !cli.needs_server() {
        return run_local(cli);
    }
    let credentials = Credentials::new(
        cli.token.as_deref(),
        cli.tls_ca.as_deref(),
        cli.tls_cert.as_deref(),
        cli.tls_key.as_deref(),
    )?;
    // Input mistakes are reported before anything is sent.
    let spec = match &cli.command {
        Cmd::Submit(a) => Some(jobs::submit_spec(a.command.clone(), a)?),
        _ => None,
    };
    let servers = client::addresses(&cli.server)?;
    let write_retry = std::time::Duration::from_millis(
        parse::duration_ms(&cli.write_retry)
            .map_err(|e| CliError::invalid(format!("--write-retry: {e}")))?,
    );
    let client = Client::new(servers, credentials)
        .with_write_retry(write_retry)
        .with_namespace(cli.namespace.unwrap_or_default());
    let request_id = cli.request_id.unwrap_or_else(client::new_request_id);
    let c = &client;
    match cli.command {
        Cmd::Submit(a) => jobs::submit(c, spec, a.json, request_id).await,
        Cmd::Cancel { id, reason, json } => jobs::cancel(c, id, reason, json, request_id).await,
        Cmd::Workflow { command } => workflow::run(c, command, request_id).await,
        Cmd::Events(a) => events::run(c, a).await,
        Cmd::Status { id, json } => jobs::status(c, id, json).await,
        Cmd::List(a) => jobs::list(c, a).await,
        Cmd::Explain { id, json } => jobs::explain(c, id, json).await,
        Cmd::Logs {
            id,
            attempt,
            follow,
        } => jobs::logs(c, id, attempt, follow).await,
        Cmd::Wait { id, timeout, json } => jobs::wait(c, id, timeout, json).await,
        Cmd::Watch { id, json } => jobs::watch(c, id, json).await,
        Cmd::Cluster { command } => cluster::cluster(c, command).await,
        Cmd::Node { command } => cluster::node(c, command).await,
        Cmd::Snapshot { command } => cluster::snapshot(c, command).await,
        Cmd::Acl { command } => acl::run(c, command).await,
        Cmd::Cron { command } => cron::run(c, command, request_id).await,
        Cmd::Namespace { command } => namespace::run(c, command, request_id).await,
        Cmd::Tls { .. } | Cmd::Completions { .. } => unreachable!("run without a server above"),
    }
}

/// Prints `v` as indented JSON.
pub(crate) fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values print")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn tls_and_completions_need_no_server() {
        let needs = |args: &[&str]| Cli::try_parse_from(args).unwrap().needs_server();
        assert!(!needs(&["cathedral", "completions", "bash"]));
        assert!(!needs(&["cathedral", "tls", "create-ca", "--out", "d"]));
        assert!(needs(&["cathedral", "status", "1"]));
        assert!(needs(&["cathedral", "cron", "list"]));
    }
}
