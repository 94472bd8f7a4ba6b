//! Cathedral's clients: the commands of the `cathedral` CLI, and what it shares with the
//! `cathedral-bench` load generator. Built on `cathedral-api` alone.
//!
//! # Layout
//!
//! - `client`: [`Client`](client::Client), which connects to the servers with the
//!   credentials and retries writes; how gRPC errors become one line and an exit code.
//! - `cmd`: the `cathedral` command line, [`Cli`](cmd::Cli) (clap), and [`run`](cmd::run),
//!   which calls one function per command: `cmd::jobs` (submit, cancel, status, list,
//!   explain, logs, wait, watch), `cmd::workflow`, `cmd::events`, `cmd::cluster` (with
//!   node tags and snapshots), `cmd::acl`, `cmd::cron`, `cmd::tls`.
//! - `parse`: durations, sizes, CPU amounts and `key=value` pairs given on the command line.
//! - `workflow`: workflow files (YAML or JSON) into a SubmitWorkflow request.
//! - `render`: jobs, events and cluster status as text or JSON.
//! - `tls`: a CA and the certificates it signs, for a test cluster (`cathedral tls`).

pub mod client;
pub mod cmd;
pub mod parse;
pub mod render;
pub mod tls;
pub mod workflow;
