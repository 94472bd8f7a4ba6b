//! Every API method, once: its gRPC path, what a caller needs, whether it writes to the
//! log, and its REST routes. Access control (`auth::need`), the metrics label
//! (`metrics::method_label`), the REST API (`rest`, whose calls name the method they
//! stand for) and the OpenAPI document (`openapi`, whose routes take their verb and path
//! from here) read it. Tests hold it against the proto's descriptor set (a method the
//! proto has and the table does not fails them) and against the REST router.

use cathedral_consensus::acl::Policy;
use cathedral_consensus::namespace::Capability;

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Nothing,
    /// A peer node's credentials.
    Node,
    /// Any valid token (reflection, who-am-i).
    AnyToken,
    Policy(Policy),
    /// A capability in the namespace the request names: a token scoped to namespaces
    /// passes the gate and the service checks its grants for that namespace; any other
    /// token needs the policy that carries the capability everywhere
    /// ([`capability_policy`]).
    In(Capability),
}

/// The policy that gives `cap` in every namespace, to a token without grants: read for
/// reading (output too), submit for submitting and for cancelling (its own jobs; any job
/// takes operator, which the service checks).
pub fn capability_policy(cap: Capability) -> Policy {
    match cap {
        Capability::Read | Capability::ReadOutput => Policy::Read,
        Capability::Submit | Capability::Cancel => Policy::Submit,
    }
}

/// One gRPC method.
#[derive(Debug)]
pub struct Method {
    /// `/package.Service/Method`, as gRPC names it.
    pub path: &'static str,
    /// What a caller needs.
    pub need: Need,
    /// Whether it proposes a log entry (changes the replicated state).
    pub writes: bool,
    /// Its REST routes, if any.
    pub rest: &'static [Rest],
}

/// One REST route.
#[derive(Debug)]
pub struct Rest {
    /// The HTTP method, lower case (as OpenAPI writes it).
    pub verb: &'static str,
    /// The path, with `{parameters}`.
    pub path: &'static str,
    /// The OpenAPI operation id.
    pub operation: &'static str,
}

impl Method {
    /// `Service/Method`: the metrics label.
    pub fn label(&self) -> &'static str {
        let p = self.path;
        &p[p.rfind('.').map_or(1, |i| i + 1)..]
    }

    /// The gRPC service, `package.Service`.
    pub fn service(&self) -> &'static str {
        let p = self.path.trim_start_matches('/');
        p.split_once('/').map_or(p, |(s, _)| s)
    }

    /// The method's name.
    pub fn name(&self) -> &'static str {
        self.path.rsplit_once('/').map_or(self.path, |(_, m)| m)
    }
}

const fn m(path: &'static str, need: Need, writes: bool, rest: &'static [Rest]) -> Method {
    Method {
        path,
        need,
        writes,
        rest,
    }
}

const fn r(verb: &'static str, path: &'static str, operation: &'static str) -> Rest {
    Rest {
        verb,
        path,
        operation,
    }
}

const READ: Need = Need::Policy(Policy::Read);
const IN_READ: Need = Need::In(Capability::Read);
const IN_OUTPUT: Need = Need::In(Capability::ReadOutput);
const IN_SUBMIT: Need = Need::In(Capability::Submit);
const IN_CANCEL: Need = Need::In(Capability::Cancel);
const OPERATOR: Need = Need::Policy(Policy::Operator);
const MANAGEMENT: Need = Need::Policy(Policy::Management);
const NODE: Need = Need::Node;

/// Every method of the public API (`cathedral.v1`) and of the peer service.
#[rustfmt::skip]
pub const METHODS: &[Method] = &[
    m("/cathedral.v1.JobService/SubmitJob", IN_SUBMIT, true, &[r("post", "/v1/jobs", "SubmitJob")]),
    m("/cathedral.v1.JobService/SubmitWorkflow", IN_SUBMIT, true, &[r("post", "/v1/workflows", "SubmitWorkflow")]),
    m("/cathedral.v1.JobService/GetJob", IN_READ, false, &[r("get", "/v1/jobs/{id}", "GetJob")]),
    m("/cathedral.v1.JobService/ListJobs", IN_READ, false, &[r("get", "/v1/jobs", "ListJobs")]),
    m("/cathedral.v1.JobService/CancelJob", IN_CANCEL, true, &[r("post", "/v1/jobs/{id}/cancel", "CancelJob")]),
    m("/cathedral.v1.JobService/WatchJob", IN_READ, false, &[]),
    m("/cathedral.v1.JobService/GetJobOutput", IN_OUTPUT, false, &[r("get", "/v1/jobs/{id}/output", "GetJobOutput")]),
    // Not filtered by namespace yet: a token scoped to namespaces needs read on "*".
    m("/cathedral.v1.JobService/WatchEvents", READ, false, &[r("get", "/v1/events", "WatchEvents")]),
    m("/cathedral.v1.JobService/ExplainJob", IN_READ, false, &[r("get", "/v1/jobs/{id}/explain", "ExplainJob")]),
    m("/cathedral.v1.JobService/RerunWorkflow", IN_SUBMIT, true, &[r("post", "/v1/workflows/{id}/rerun", "RerunWorkflow")]),
    m("/cathedral.v1.JobService/ListWorkflows", IN_READ, false, &[r("get", "/v1/workflows", "ListWorkflows")]),
    m("/cathedral.v1.JobService/GetWorkflow", IN_READ, false, &[r("get", "/v1/workflows/{id}", "GetWorkflow")]),
    m("/cathedral.v1.ClusterService/Status", READ, false, &[r("get", "/v1/cluster", "Status")]),
    m("/cathedral.v1.ClusterService/RemoveNode", OPERATOR, true, &[r("delete", "/v1/nodes/{id}", "RemoveNode")]),
    m("/cathedral.v1.ClusterService/TriggerSnapshot", OPERATOR, false, &[r("post", "/v1/snapshots", "TriggerSnapshot")]),
    m("/cathedral.v1.ClusterService/ListNodes", OPERATOR, false, &[r("get", "/v1/nodes", "ListNodes")]),
    m("/cathedral.v1.ClusterService/SetNodeTags", OPERATOR, false, &[r("post", "/v1/nodes/{id}/tags", "SetNodeTags")]),
    m("/cathedral.v1.ClusterService/ReadLog", OPERATOR, false, &[r("get", "/v1/log", "ReadLog")]),
    m("/cathedral.v1.CronService/CreateCron", IN_SUBMIT, true, &[r("post", "/v1/crons", "CreateCron")]),
    m("/cathedral.v1.CronService/ListCrons", IN_READ, false, &[r("get", "/v1/crons", "ListCrons")]),
    m("/cathedral.v1.CronService/GetCron", IN_READ, false, &[r("get", "/v1/crons/{name}", "GetCron")]),
    m(
        "/cathedral.v1.CronService/SetCronPaused",
        IN_SUBMIT,
        true,
        &[
            r("post", "/v1/crons/{name}/pause", "PauseCron"),
            r("post", "/v1/crons/{name}/resume", "ResumeCron"),
        ],
    ),
    m("/cathedral.v1.CronService/DeleteCron", IN_SUBMIT, true, &[r("delete", "/v1/crons/{name}", "DeleteCron")]),
    m("/cathedral.v1.CronService/PreviewCron", IN_READ, false, &[]),
    m("/cathedral.v1.NamespaceService/CreateNamespace", OPERATOR, true, &[]),
    m("/cathedral.v1.NamespaceService/ListNamespaces", IN_READ, false, &[r("get", "/v1/namespaces", "ListNamespaces")]),
    m("/cathedral.v1.NamespaceService/GetNamespace", IN_READ, false, &[r("get", "/v1/namespaces/{name}", "GetNamespace")]),
    m("/cathedral.v1.NamespaceService/UpdateNamespace", OPERATOR, true, &[]),
    m("/cathedral.v1.NamespaceService/DeleteNamespace", OPERATOR, true, &[]),
    m("/cathedral.v1.AclService/Bootstrap", Need::Nothing, true, &[]),
    m("/cathedral.v1.AclService/CreateToken", MANAGEMENT, true, &[]),
    m("/cathedral.v1.AclService/ListTokens", MANAGEMENT, false, &[]),
    m("/cathedral.v1.AclService/RevokeToken", MANAGEMENT, true, &[]),
    m("/cathedral.v1.AclService/WhoAmI", Need::AnyToken, false, &[]),
    m("/cathedral.internal.v1.Peer/AppendEntries", NODE, false, &[]),
    m("/cathedral.internal.v1.Peer/AppendEntriesStream", NODE, false, &[]),
    m("/cathedral.internal.v1.Peer/Vote", NODE, false, &[]),
    m("/cathedral.internal.v1.Peer/InstallSnapshot", NODE, false, &[]),
    m("/cathedral.internal.v1.Peer/ForwardBatch", NODE, true, &[]),
    m("/cathedral.internal.v1.Peer/ForwardStream", NODE, true, &[]),
    m("/cathedral.internal.v1.Peer/Join", NODE, true, &[]),
    m("/cathedral.internal.v1.Peer/FetchOutput", NODE, false, &[]),
    m("/cathedral.internal.v1.Peer/GossipSeeds", NODE, false, &[]),
    m("/cathedral.internal.v1.Peer/SetTags", NODE, false, &[]),
    m("/cathedral.internal.v1.Peer/ReadIndex", NODE, false, &[]),
];

/// The writes answered once the leader applied them, before this node applied them
/// (`Node::propose_submit`). Their calls read nothing of this node's state that another
/// such write changes, so they do not wait for this node to catch up with them.
pub const ANSWERED_BY_LEADER: &[&str] = &[
    "/cathedral.v1.JobService/SubmitJob",
    "/cathedral.v1.JobService/SubmitWorkflow",
];

/// The reads that report this node's own view of the cluster (its applied index, its
/// log, the nodes as it sees them): answered at once, so an operator can look at a node
/// that is behind, cut off, or waiting to apply what it answered.
pub const NODE_VIEW: &[&str] = &[
    "/cathedral.v1.ClusterService/Status",
    "/cathedral.v1.ClusterService/ListNodes",
    "/cathedral.v1.ClusterService/ReadLog",
];

/// Whether a call of `path` first waits until this node applied the writes it answered
/// before applying them (`Node::caught_up`), so that its caller reads its own writes:
/// every call with a token (all of them read this node's state) but the writes in
/// [`ANSWERED_BY_LEADER`] and the reads in [`NODE_VIEW`]; not the peer service's,
/// health's or bootstrap's.
pub fn reads_own_writes(path: &str) -> bool {
    matches!(
        crate::auth::need(path),
        Need::AnyToken | Need::Policy(_) | Need::In(_)
    ) && !ANSWERED_BY_LEADER.contains(&path)
        && !NODE_VIEW.contains(&path)
}

/// REST routes that stand for no gRPC method: the method whose need they take.
pub const REST_ONLY: &[(Rest, &str)] = &[(
    r("get", "/v1/dashboard/history", "DashboardHistory"),
    "/cathedral.v1.ClusterService/Status",
)];

/// The method at `path` (`/package.Service/Method`).
pub fn find(path: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.path == path)
}

/// Every REST route: the method's (or, for a REST-only route, the one whose need it
/// takes) and the route.
pub fn rest_routes() -> impl Iterator<Item = (&'static Method, &'static Rest)> {
    METHODS
        .iter()
        .flat_map(|m| m.rest.iter().map(move |r| (m, r)))
        .chain(
            REST_ONLY
                .iter()
                .map(|(r, of)| (find(of).expect("REST_ONLY names a method"), r)),
        )
}

/// The REST route with OpenAPI operation id `operation`.
pub fn rest(operation: &str) -> Option<&'static Rest> {
    rest_routes()
        .map(|(_, r)| r)
        .find(|r| r.operation == operation)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;

    #[test]
    fn the_table_names_every_method_of_the_proto_and_no_other() {
        let fds = FileDescriptorSet::decode(crate::api::FILE_DESCRIPTOR_SET).unwrap();
        let mut proto = BTreeSet::new();
        for file in &fds.file {
            for s in &file.service {
                for m in &s.method {
                    proto.insert(format!("/{}.{}/{}", file.package(), s.name(), m.name()));
                }
            }
        }
        let table: BTreeSet<String> = METHODS.iter().map(|m| m.path.to_string()).collect();
        assert_eq!(
            proto.difference(&table).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "methods the proto has and the table lacks"
        );
        assert_eq!(
            table.difference(&proto).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "methods the table has and the proto lacks"
        );
        assert_eq!(table.len(), METHODS.len(), "a method listed twice");
    }

    #[test]
    fn every_call_reading_the_state_waits_for_what_the_node_answered_but_submits_and_node_views() {
        for path in ANSWERED_BY_LEADER {
            let m = find(path).unwrap_or_else(|| panic!("{path} is not a method"));
            assert!(m.writes, "{path} answered early but proposes nothing");
            assert!(!reads_own_writes(path), "{path}");
        }
        for path in NODE_VIEW {
            let m = find(path).unwrap_or_else(|| panic!("{path} is not a method"));
            assert!(!m.writes, "{path} is a node's view but writes");
        }
        for m in METHODS {
            let token = !matches!(m.need, Need::Nothing | Need::Node);
            let expected =
                token && !ANSWERED_BY_LEADER.contains(&m.path) && !NODE_VIEW.contains(&m.path);
            assert_eq!(reads_own_writes(m.path), expected, "{}", m.path);
        }
        // Reads, and writes that read the state first, wait; so does reflection.
        for path in [
            "/cathedral.v1.JobService/ListJobs",
            "/cathedral.v1.JobService/CancelJob",
            "/cathedral.v1.AclService/CreateToken",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(reads_own_writes(path), "{path}");
        }
        for path in [
            "/grpc.health.v1.Health/Check",
            "/cathedral.internal.v1.Peer/ForwardStream",
            "/cathedral.v1.AclService/Bootstrap",
            "/cathedral.v1.ClusterService/Status",
        ] {
            assert!(!reads_own_writes(path), "{path}");
        }
    }

    #[test]
    fn labels_operations_and_routes_are_unique() {
        let labels: BTreeSet<&str> = METHODS.iter().map(Method::label).collect();
        assert_eq!(labels.len(), METHODS.len());
        assert_eq!(
            find("/cathedral.v1.JobService/SubmitJob").unwrap().label(),
            "JobService/SubmitJob"
        );
        assert_eq!(
            find("/cathedral.internal.v1.Peer/Vote").unwrap().label(),
            "Peer/Vote"
        );
        let m = find("/cathedral.v1.CronService/SetCronPaused").unwrap();
        assert_eq!(
            (m.service(), m.name()),
            ("cathedral.v1.CronService", "SetCronPaused")
        );
        let ops: BTreeSet<&str> = rest_routes().map(|(_, r)| r.operation).collect();
        let routes: BTreeSet<(&str, &str)> = rest_routes().map(|(_, r)| (r.verb, r.path)).collect();
        assert_eq!(ops.len(), rest_routes().count());
        assert_eq!(routes.len(), rest_routes().count());
        // Whatever writes needs at least `submit` (or is the bootstrap, or a node's).
        for m in METHODS.iter().filter(|m| m.writes) {
            assert!(
                matches!(m.need, Need::Nothing | Need::Node)
                    || matches!(m.need, Need::Policy(p) if p >= Policy::Submit)
                    || matches!(m.need, Need::In(c) if capability_policy(c) >= Policy::Submit),
                "{} writes with {:?}",
                m.path,
                m.need
            );
        }
    }
}
