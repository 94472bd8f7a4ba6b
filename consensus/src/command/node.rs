//! What a node is and registers as.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::NodeId;

/// What a node is in the cluster: the one form of it, in the log, in the server's
/// `--role` and on the wire (by [`Role::name`]). The variants' order is part of the
/// entry format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A Raft voter (or a learner waiting for promotion).
    Coordinator,
    /// A Raft learner that runs jobs; never promoted.
    Worker,
    /// A one-voter cluster of its own, initialised on first start.
    Standalone,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Standalone, Role::Coordinator, Role::Worker];

    /// The role's name in flags, files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
        }
    }

    /// The role named `s` (as [`Role::name`] writes it).
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::parse(s)
            .ok_or_else(|| format!("{s:?} is not a role: standalone, coordinator or worker"))
    }
}

/// How much work a node takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub slots: u32,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
}

/// A node as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    pub address: String,
    pub role: Role,
    pub tags: BTreeMap<String, String>,
    pub capacity: Capacity,
}
