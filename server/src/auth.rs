//! Who may call what: one tower layer in front of every gRPC service.
//!
//! Each call's path names what it needs ([`need`]): nothing (health, bootstrap), a node
//! (the internal peer service: mutual TLS and/or the cluster key's credential, see
//! `security`), or a token with at least some [`Policy`]. Tokens are checked against the
//! applied state of the node asked — off until the cluster is bootstrapped, then on for
//! good; a revoked token is refused on a node as soon as the revocation is applied there.
//! The caller ([`Caller`]) rides in the request's extensions for the services to read
//! (the submitter recorded with a job, "cancel own jobs").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cathedral_consensus::acl::{secret_hash, Policy};
use cathedral_consensus::namespace::{Capability, Grant};
use tonic::Status;

use crate::node::Node;

pub use crate::methods::Need;

/// The caller of an authorised call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's accessor; `None` while access control is off.
    pub accessor: Option<String>,
    pub policy: Policy,
    /// The token's grants when it is scoped to namespaces; `None`: its policy counts in
    /// every namespace.
    pub grants: Option<Vec<Grant>>,
}

impl Caller {
    /// Whether this caller may do `cap` in namespace `ns`: by its grants when it is scoped
    /// to namespaces, else by its policy (read: read and read-output; submit: + submit and
    /// cancelling its own jobs; operator: + cancelling any).
    pub fn may(&self, cap: Capability, ns: &str) -> bool {
        match &self.grants {
            Some(grants) => grants.iter().any(|g| g.allows(cap, ns)),
            None => match cap {
                Capability::Cancel => self.policy >= Policy::Operator,
                cap => self.policy >= crate::methods::capability_policy(cap),
            },
        }
    }

    /// Whether this caller may cancel a job of namespace `ns` that `submitter` submitted:
    /// any with the cancel capability there, its own with submit.
    pub fn may_cancel(&self, submitter: Option<&str>, ns: &str) -> bool {
        self.may(Capability::Cancel, ns)
            || (self.may(Capability::Submit, ns)
                && self.accessor.is_some()
                && self.accessor.as_deref() == submitter)
    }

    /// PERMISSION_DENIED for `cap` in `ns`, saying what the token lacks.
    pub fn denied(&self, cap: Capability, ns: &str) -> Status {
        Status::permission_denied(format!(
            "token {} may not {} in namespace {ns}",
            self.accessor.as_deref().unwrap_or("-"),
            match cap {
                Capability::Read => "read",
                Capability::ReadOutput => "read output",
                Capability::Submit => "submit",
                Capability::Cancel => "cancel",
            }
        ))
    }

    /// `Ok` when this caller may do `cap` in `ns`, else PERMISSION_DENIED.
    pub fn require(&self, cap: Capability, ns: &str) -> Result<(), Status> {
        if self.may(cap, ns) {
            Ok(())
        } else {
            Err(self.denied(cap, ns))
        }
    }
}

/// What the call at `path` (`/package.Service/Method`) needs: what the method table
/// (`methods::METHODS`) says; health checks need nothing, reflection any token, an
/// unlisted peer call a node; anything else a management token (deny by default).
pub fn need(path: &str) -> Need {
    if let Some(m) = crate::methods::find(path) {
        return m.need;
    }
    let service = path
        .trim_start_matches('/')
        .split_once('/')
        .map_or(path, |(s, _)| s);
    match service {
        "grpc.health.v1.Health" => Need::Nothing,
        s if s.starts_with("grpc.reflection.") => Need::AnyToken,
        "cathedral.internal.v1.Peer" => Need::Node,
        _ => Need::Policy(Policy::Management),
    }
}

/// The secret of an `authorization: Bearer SECRET` header.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

/// Decides a call: the caller, or the status refusing it.
pub fn authorize<B>(node: &Node, req: &http::Request<B>) -> Result<Option<Caller>, Status> {
    let need = need(req.uri().path());
    match need {
        Need::Nothing => Ok(None),
        Need::Node => authorize_node(node, req).map(|()| None),
        _ => authorize_token(node, need, req.uri().path(), req.headers()).map(Some),
    }
}

/// The REST API's second step, after [`authorize_token`] gave `caller` and the request
/// parsed: waits until this node caught up with what it answered when the call reads its
/// state ([`catch_up`]), and decides the token again after a wait.
pub async fn caught_up(
    node: &Node,
    path: &str,
    headers: &http::HeaderMap,
    caller: Caller,
) -> Result<Caller, Status> {
    if catch_up(node, path).await? {
        return authorize_token(node, need(path), path, headers);
    }
    Ok(caller)
}

/// Read-your-writes: when a call of `path` reads this node's state
/// ([`crate::methods::reads_own_writes`]), waits until this node applied every write it
/// answered before applying it (`Node::caught_up`; at once as a rule); `true` when it
/// waited. After the token check, so a refused call waits for nothing; the caller decides
/// again after a wait (a token write this node answered before applying it, at its
/// deadline, is applied now).
pub async fn catch_up(node: &Node, path: &str) -> Result<bool, Status> {
    if crate::methods::reads_own_writes(path) {
        return node.caught_up().await.map_err(Status::from);
    }
    Ok(false)
}

/// Decides a call that needs a token (`need` is `AnyToken` or a policy) for what `path`
/// names: the gRPC layer's and the REST API's check alike.
pub fn authorize_token(
    node: &Node,
    need: Need,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<Caller, Status> {
    let a = node.state().read();
    let acl = a.state.acl();
    if !acl.enforced {
        return Ok(Caller {
            accessor: None,
            policy: Policy::Management,
            grants: None,
        });
    }
    let Some(secret) = bearer(headers) else {
        return Err(Status::unauthenticated(
            "this cluster requires a token: `authorization: Bearer SECRET` metadata (the CLI's --token or CATHEDRAL_TOKEN)",
        ));
    };
    let Some(token) = acl.by_secret_hash(&secret_hash(secret)) else {
        return Err(Status::unauthenticated("unknown or revoked token"));
    };
    let grants = a
        .state
        .namespaces()
        .grants(&token.accessor)
        .map(<[Grant]>::to_vec);
    let needed = match need {
        Need::Policy(p) => Some(p),
        // Scoped: the service checks the namespace the request names.
        Need::In(_) if grants.is_some() => None,
        Need::In(cap) => Some(crate::methods::capability_policy(cap)),
        _ => None,
    };
    if let Some(p) = needed {
        if token.policy < p {
            return Err(Status::permission_denied(format!(
                "{path} needs the {p} policy; token {} has {}",
                token.accessor, token.policy
            )));
        }
    }
    Ok(Caller {
        accessor: Some(token.accessor.clone()),
        policy: token.policy,
        grants,
    })
}

/// A peer call: a client certificate the CA signed (with mutual TLS), and the cluster
/// key's credential (with a cluster key).
fn authorize_node<B>(node: &Node, req: &http::Request<B>) -> Result<(), Status> {
    let security = &node.security;
    if security.mutual {
        let certified = req
            .extensions()
            .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
            .and_then(|i| i.peer_certs())
            .is_some_and(|c| !c.is_empty());
        if !certified {
            return Err(Status::unauthenticated(
                "calls between nodes need a client certificate signed by the cluster's CA",
            ));
        }
    }
    let credential = req
        .headers()
        .get(crate::security::NODE_CREDENTIAL_HEADER)
        .and_then(|v| v.to_str().ok());
    if !security.accepts_credential(credential) {
        return Err(Status::unauthenticated(
            "calls between nodes need the cluster key's credential (same --cluster-key)",
        ));
    }
    Ok(())
}

/// The layer: every call passes [`authorize`] first.
#[derive(Clone)]
pub struct AuthLayer {
    pub node: Arc<Node>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            node: self.node.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    node: Arc<Node>,
}

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let method = crate::metrics::method_label(req.uri().path());
        let started = std::time::Instant::now();
        let node = self.node.clone();
        // The clone takes the place of the service that was made ready.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let admitted = authorize(&node, &req);
        Box::pin(async move {
            let admitted = match admitted {
                Ok(caller) => match catch_up(&node, req.uri().path()).await {
                    Ok(true) => authorize(&node, &req),
                    Ok(false) => Ok(caller),
                    Err(s) => Err(s),
                },
                Err(s) => Err(s),
            };
            let caller = match admitted {
                Ok(caller) => caller,
                Err(status) => {
                    crate::metrics::api_call(method, code_name(status.code()), started.elapsed());
                    return Ok(status.into_http());
                }
            };
            if let Some(c) = caller {
                req.extensions_mut().insert(c);
            }
            let response = ready.call(req).await;
            if let Ok(r) = &response {
                // An error before any message is answered in the headers; an answer that
                // started (OK, or a stream's end) carries its status in the trailers,
                // counted here as OK.
                let code = r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32);
                crate::metrics::api_call(method, code_name(code), started.elapsed());
            }
            response
        })
    }
}

/// A gRPC status code's name, as gRPC spells it (a metrics label).
pub fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The caller of `req`, as [`AuthLayer`] left it (a full-access caller while access
/// control is off, or for calls that need nothing).
pub fn caller<T>(req: &tonic::Request<T>) -> Caller {
    req.extensions().get::<Caller>().cloned().unwrap_or(Caller {
        accessor: None,
        policy: Policy::Management,
        grants: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_needs_what_its_policy_says_and_unknown_calls_need_everything() {
        use Need::{AnyToken, Node, Nothing};
        let p = Need::Policy;
        for (path, want) in [
            ("/grpc.health.v1.Health/Check", Nothing),
            ("/cathedral.v1.AclService/Bootstrap", Nothing),
            ("/cathedral.internal.v1.Peer/AppendEntries", Node),
            (
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                AnyToken,
            ),
            (
                "/cathedral.v1.JobService/GetJob",
                Need::In(Capability::Read),
            ),
            (
                "/cathedral.v1.JobService/WatchJob",
                Need::In(Capability::Read),
            ),
            (
                "/cathedral.v1.JobService/SubmitJob",
                Need::In(Capability::Submit),
            ),
            (
                "/cathedral.v1.JobService/CancelJob",
                Need::In(Capability::Cancel),
            ),
            ("/cathedral.v1.ClusterService/Status", p(Policy::Read)),
            (
                "/cathedral.v1.ClusterService/ListNodes",
                p(Policy::Operator),
            ),
            (
                "/cathedral.v1.ClusterService/RemoveNode",
                p(Policy::Operator),
            ),
            (
                "/cathedral.v1.AclService/CreateToken",
                p(Policy::Management),
            ),
            ("/cathedral.v1.Nope/Nothing", p(Policy::Management)),
        ] {
            assert_eq!(need(path), want, "{path}");
        }
    }

    #[test]
    fn submit_cancels_its_own_jobs_operator_any() {
        let me = |p| Caller {
            accessor: Some("a".into()),
            policy: p,
            grants: None,
        };
        let ns = "default";
        assert!(me(Policy::Submit).may_cancel(Some("a"), ns));
        assert!(!me(Policy::Submit).may_cancel(Some("b"), ns));
        assert!(!me(Policy::Submit).may_cancel(None, ns));
        assert!(!me(Policy::Read).may_cancel(Some("a"), ns));
        assert!(me(Policy::Operator).may_cancel(Some("b"), ns));
    }

    /// The four policies are rule sets over every namespace; a scoped token has exactly
    /// its grants, whatever its policy.
    #[test]
    fn policies_span_every_namespace_and_grants_only_theirs() {
        let caller = |policy, grants| Caller {
            accessor: Some("a".into()),
            policy,
            grants,
        };
        for ns in ["default", "ml", "web"] {
            let read = caller(Policy::Read, None);
            assert!(read.may(Capability::Read, ns) && read.may(Capability::ReadOutput, ns));
            assert!(!read.may(Capability::Submit, ns) && !read.may(Capability::Cancel, ns));
            let submit = caller(Policy::Submit, None);
            assert!(submit.may(Capability::Submit, ns) && !submit.may(Capability::Cancel, ns));
            for p in [Policy::Operator, Policy::Management] {
                assert!(Capability::ALL.iter().all(|c| caller(p, None).may(*c, ns)));
            }
        }
        let scoped = caller(
            Policy::Operator,
            Some(vec![
                Grant {
                    namespaces: "ml-*".into(),
                    capabilities: vec![Capability::Read, Capability::Submit],
                },
                Grant {
                    namespaces: "web".into(),
                    capabilities: vec![Capability::Read],
                },
            ]),
        );
        assert!(scoped.may(Capability::Submit, "ml-train"));
        assert!(!scoped.may(Capability::ReadOutput, "ml-train"));
        assert!(scoped.may(Capability::Read, "web") && !scoped.may(Capability::Submit, "web"));
        assert!(
            !scoped.may(Capability::Read, "default"),
            "operator does not widen grants"
        );
        assert!(!scoped.may(Capability::Read, "webx"));
        assert!(scoped.may_cancel(Some("a"), "ml-x") && !scoped.may_cancel(Some("b"), "ml-x"));
    }
}
