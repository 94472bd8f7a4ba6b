//! Cathedral's replicated state: the [`Command`] vocabulary every log entry carries, and
//! the deterministic [`ClusterState`] every node applies it to.
//!
//! # Layout
//!
//! - `command`: [`Command`], [`JobSpec`] and its validation and bounds (`limits`).
//! - `state`: [`ClusterState`] — `apply`, the state hash, snapshots, and the queries the
//!   server and scheduler use.
//! - `raft`: openraft's [`TypeConfig`](raft::TypeConfig), the [`LogStore`](raft::LogStore)
//!   over the storage crate's log and the [`StateMachine`](raft::StateMachine) over
//!   `ClusterState` with snapshots in the storage crate's snapshot store.
//! - `requests`: the answered-request table that makes a write with a request id apply
//!   at most once ([`Command::Request`]).
//! - `cron`: periodic jobs — crons as replicated state, fires decided once as log
//!   entries, and the schedule evaluation ([`cron::due`]) the leader runs.
//! - `blocking`: blocking work off the async threads (in place on a simulation's thread).
//! - `rng`: the random source of every node's choices, seedable for a simulation.
//! - `namespace`: namespaces — settings, quotas and the submit rate's bucket.
//! - `tags`: the one rule for node tags and job constraints, with its bounds.
//! - `step_refs`: step-output references (`${{ jobs.KEY.outputs.NAME }}`): checked at
//!   submit, substituted when an attempt starts.
//! - `replay`: offline replay of a data directory (snapshot + log), checking checkpoints.
//! - `testkit`: an in-process network and node start-up for tests and benchmarks.
//! - `error`: [`ConsensusError`] and [`Invalid`] (a rejected command's field and reason).

pub mod acl;
pub mod archive;
pub mod blocking;
mod command;
pub mod cron;
mod error;
pub mod events;
mod jobs;
pub mod namespace;
pub mod raft;
pub mod replay;
pub mod requests;
pub mod rng;
mod state;
pub mod step_refs;
pub mod tags;
pub mod testkit;
pub mod words;

pub use command::{
    check_job_options, check_outputs, limits, valid_output_name, Assignment, Capacity, Command,
    ContainerSpec, Exit, Feature, JobId, JobOption, JobSpec, NodeId, NodeInfo, Outcome, Resources,
    RetryPolicy, Role, Rules, SandboxKind, WorkflowId, WorkflowJob, DOCKER_DRIVER_TAG,
    LOST_RETRIES_DEFAULT,
};
pub use error::{ConsensusError, Invalid, Result};
pub use state::{
    hex, Attempt, ClusterState, Collected, Counters, Job, JobState, Load, Node, NodeStatus,
    Response, Workflow, CHECKPOINTS_KEPT,
};
