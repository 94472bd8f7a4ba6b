//! The cluster and its nodes: `cluster status|nodes|remove-node`, `node tag set|unset`,
//! `snapshot trigger`.

use std::collections::HashMap;

use cathedral_api::v1 as pb;
use clap::Subcommand;

use super::print_json;
use crate::client::{CliError, Client};
use crate::{parse, render};

#[derive(Subcommand)]
pub enum ClusterCmd {
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
pub enum NodeCmd {
    /// A node's tags.
    Tag {
        #[command(subcommand)]
        command: TagCmd,
    },
}

#[derive(Subcommand)]
pub enum TagCmd {
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
pub enum SnapshotCmd {
    /// Write a snapshot now on the node asked; prints the index it covers.
    Trigger {
        #[arg(long)]
        json: bool,
    },
}

/// `cathedral cluster ...`.
pub async fn cluster(client: &Client, command: ClusterCmd) -> Result<u8, CliError> {
    let mut cluster = client.cluster().await?;
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
    Ok(0)
}

/// `cathedral node tag ...`: prints the node's tags after the change, sorted.
pub async fn node(client: &Client, command: NodeCmd) -> Result<u8, CliError> {
    let NodeCmd::Tag { command } = command;
    let mut cluster = client.cluster().await?;
    let (node_id, set, unset) = tag_change(command)?;
    let r = cluster
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
    Ok(0)
}

/// `cathedral snapshot trigger`.
pub async fn snapshot(client: &Client, command: SnapshotCmd) -> Result<u8, CliError> {
    let SnapshotCmd::Trigger { json } = command;
    let mut cluster = client.cluster().await?;
    let r = cluster
        .trigger_snapshot(pb::TriggerSnapshotRequest {})
        .await?
        .into_inner();
    if json {
        print_json(&serde_json::json!({"snapshot_index": r.snapshot_index}));
    } else {
        println!("snapshot at index {}", r.snapshot_index);
    }
    Ok(0)
}

/// A tag change: the node, the tags to set, the keys to remove.
type TagChange = (u64, HashMap<String, String>, Vec<String>);

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
