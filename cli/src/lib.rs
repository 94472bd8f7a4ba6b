//! Cathedral's clients: what the `cathedral` CLI and the `cathedral-bench` load generator
//! share. Built on `cathedral-api` alone.
//!
//! # Layout
//!
//! - `client`: connecting to a server, and how gRPC errors become one line and an exit code.
//! - `parse`: durations, sizes, CPU amounts and `key=value` pairs given on the command line.
//! - `workflow`: workflow files (YAML or JSON) into a SubmitWorkflow request.
//! - `render`: jobs, events and cluster status as text or JSON.

pub mod client;
pub mod parse;
pub mod render;
pub mod tls;
pub mod workflow;
