//! `cathedral-server`: the gRPC job API, Raft over gRPC, cluster membership, and the wiring
//! of storage and consensus into a running node.
//!
//! # Layout
//!
//! - `api`: the code generated from `proto/` (public `cathedral.v1`, internal peer calls).
//! - `config`: one settings list read from flags, environment and TOML file, layered by
//!   clap and resolved into a [`Config`] with a sub-settings value per loop.
//! - `data_dir`: [`DataDir`](data_dir::DataDir), every path in the data directory.
//! - `identity`: `node.toml`, the node and cluster ids.
//! - `edges`: what a node is given from outside ([`Edges`](edges::Edges)): its clock, so a
//!   simulation can run nodes on simulated, skewed time.
//! - `node`: the [`Node`] — Raft over the data directory, writes forwarded to the leader,
//!   joining, membership upkeep; it hands out the applied state as a `StateView`.
//! - `proposal`: what the write path carries ([`Proposal`](node::Proposal), its outcome,
//!   the entry and write bounds, the proposer's clock), below the node, the `batcher`
//!   (concurrent writes as one entry) and the `forwarder` (writes sent to the leader).
//! - `transport`: openraft's network over gRPC (client side); `peer_service` the server side.
//! - `service`: the public `JobService` and `ClusterService`; `convert` their messages.
//! - `scheduler`: placement ([`place`]) and overdue attempts ([`overdue`]), pure functions;
//!   `leader` the leader's loop (node failure and recovery from gossip, timeouts,
//!   assignments; its settings in `leader::settings`); `worker` the loop that runs this
//!   node's attempts through the executor; `cron_service` the crons' API and firing.
//! - `gossip`: membership over chitchat (phi-accrual detection, tags, partitions): what
//!   it tells the node (`view`), its decisions as pure functions (`rules`), the running
//!   membership (`membership`), an authenticated UDP transport, and loss and partitions
//!   injected in the crate's tests only (`faults`); `tags` the run-time tag overlay file.
//! - `output`: job output files, where an attempt's output is read from, and its
//!   streaming (settings in `output::settings`); `replicas` the copies other nodes keep.
//! - `metrics`: the Prometheus recorder and the counting calls; `scrape` what a scrape
//!   reads from the node, the event counters and the dashboard history's sampler;
//!   `history` that history; `events` the event stream; `rest` and `openapi` the REST
//!   API and its document.
//! - `http`: `/healthz` and `/readyz` (over TLS when the node has a certificate).
//! - `methods`: every API method once (gRPC path, what a caller needs, whether it writes,
//!   its REST routes), which auth, metrics, REST and OpenAPI read.
//! - `auth`: the tower layer that decides every call (tokens by policy, nodes by
//!   certificate and cluster-key credential); `acl_service` the public `AclService`;
//!   `security` TLS configurations and node credentials.
//! - `server`: [`start`] and [`Running::shutdown`].
//!
//! Imports go one way, with no cycle among the crate's files: the services and the REST
//! API over the node's handles, the node over the write path's parts (`proposal`,
//! `batcher`, `forwarder`, `transport`), the counting (`metrics`) and the settings
//! (`config`), and those over the consensus and storage crates.
//!
//! # The write path
//!
//! A `SubmitJob`, from the wire to the answer (each step a hop; the value it hands on in
//! brackets):
//!
//! ```text
//!  0 auth layer          other calls: wait until this node applied what it answered (13)
//!  1 auth layer          token or node credential decided, call counted  [pb::SubmitJobRequest]
//!  2 service             spec converted and validated (convert)           [JobSpec]
//!  3                     wrapped: Authored (ACL), WithJobOptions, Request  [Command]
//!  4 Node::propose_submit request id, sized once, a repeat answered here   [Proposal]
//!  5   follower:         forwarder → the leader's peer service → 6         (batched)
//!  6 Node::execute       the state's check (bad input takes no entry)
//!  7 batcher             queued, then many writes as one Command::Batch    [Queued]
//!  8 batcher::propose    openraft client_write; the one error mapping
//!  9 log store           appended and synced (one fdatasync per batch)     [Entry → record bytes]
//! 10 state machine       applied (apply calls the same check)              [Response]
//! 11 Node::propose_submit answer to the service once the leader applied it [(index, Response)]
//! 12   follower:         the index kept as answered before applied here
//! 13 Node::caught_up     every later call that reads this node's state waits for it
//! ```

/// The gRPC API (protos, generated code, bounds): the `cathedral-api` crate.
pub use cathedral_api as api;
mod acl_service;
mod auth;
mod batcher;
mod config;
mod convert;
mod cron_service;
mod data_dir;
pub mod edges;
mod error;
mod events;
mod forwarder;
pub mod gossip;
mod history;
mod http;
mod identity;
mod leader;
pub mod methods;
/// The metrics a node counts (public for the benchmark of what counting costs).
pub mod metrics;
mod namespace_service;
mod node;
mod openapi;
mod output;
mod peer_service;
mod proposal;
pub mod replicas;
mod rest;
mod scheduler;
mod scrape;
mod security;
mod server;
mod service;
mod tags;
mod transport;
mod worker;

pub use cathedral_consensus::requests::{
    REQUESTS_REMEMBERED_MAX, REQUEST_ID_BYTES_MAX, REQUEST_RETENTION_MS,
};
pub use cathedral_consensus::Role;
pub use config::{Args, Config, SLOTS_MAX, VOTERS_MAX};
pub use convert::DEFAULT_TIMEOUT_MS;
pub use error::{Result, ServerError};
pub use node::{Node, ENTRY_BYTES_MAX, WRITE_BYTES_MAX};
pub use scheduler::{overdue, place, Candidates, Placement, Strategy, ASSIGNMENTS_PER_ENTRY_MAX};
pub use server::{start, start_with, Running, REQUEST_BYTES_MAX};
pub use service::{LIST_PAGE_SIZE_DEFAULT, LIST_PAGE_SIZE_MAX};
pub use transport::PEER_MESSAGE_BYTES_MAX;
