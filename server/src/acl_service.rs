//! The public `AclService`: bootstrap, tokens, who-am-i. A token's secret is made here,
//! returned once, and never proposed: the log holds its BLAKE3 hash only.

use cathedral_consensus::acl::{secret_hash, Policy, Token, TOKEN_NAME_BYTES_MAX};
use cathedral_consensus::hex;
use cathedral_consensus::namespace::{check_grants, Capability, Grant};
use cathedral_consensus::Command;
use tonic::{Request, Response, Status};

use crate::api::v1 as pb;
use crate::api::v1::acl_service_server::AclService;
use crate::auth;
use crate::error::ServerError;
use crate::node::Proposal;
use crate::service::Api;

/// Prefix of every token secret (so a leaked one is recognisable in a scan).
pub const SECRET_PREFIX: &str = "cathedral_";

/// A fresh token: its secret (shown once) and what the state keeps.
fn new_token(name: String, policy: Policy, now_ms: u64) -> Result<(String, Token), Status> {
    if name.len() > TOKEN_NAME_BYTES_MAX {
        return Err(ServerError::invalid(
            "name",
            format!("longer than TOKEN_NAME_BYTES_MAX ({TOKEN_NAME_BYTES_MAX} bytes)"),
        )
        .into());
    }
    let secret = format!("{SECRET_PREFIX}{}", hex(&rand::random::<[u8; 32]>()));
    let token = Token {
        accessor: hex(&rand::random::<[u8; 16]>()),
        name,
        policy,
        secret_hash: secret_hash(&secret),
        created_at_ms: now_ms,
    };
    Ok((secret, token))
}

fn token_pb(t: &Token, secret: Option<String>, grants: Option<&[Grant]>) -> pb::AclToken {
    pb::AclToken {
        accessor: t.accessor.clone(),
        secret: secret.unwrap_or_default(),
        name: t.name.clone(),
        policy: t.policy.name().to_string(),
        created_at_ms: t.created_at_ms,
        grants: grants
            .unwrap_or_default()
            .iter()
            .map(|g| pb::NamespaceGrant {
                namespaces: g.namespaces.clone(),
                capabilities: g
                    .capabilities
                    .iter()
                    .map(|c| c.name().to_string())
                    .collect(),
            })
            .collect(),
    }
}

/// A request's grants, as the log records them.
fn grants_from_pb(grants: Vec<pb::NamespaceGrant>) -> Result<Vec<Grant>, Status> {
    let grants = grants
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let capabilities = g
                .capabilities
                .iter()
                .map(|c| {
                    Capability::parse(c).ok_or_else(|| {
                        ServerError::invalid(
                            &format!("grants[{i}].capabilities"),
                            format!("{c:?}: read, read-output, submit or cancel"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Grant {
                namespaces: g.namespaces,
                capabilities,
            })
        })
        .collect::<Result<Vec<_>, ServerError>>()?;
    check_grants(&grants).map_err(|e| Status::from(ServerError::from(e)))?;
    Ok(grants)
}

#[tonic::async_trait]
impl AclService for Api {
    async fn bootstrap(
        &self,
        req: Request<pb::AclBootstrapRequest>,
    ) -> Result<Response<pb::AclToken>, Status> {
        if self.node.state().read().state.acl().enforced {
            return Err(Status::failed_precondition(
                "access control is bootstrapped already; ask a management token's holder",
            ));
        }
        let name = req.into_inner().name;
        let name = if name.is_empty() {
            "bootstrap".into()
        } else {
            name
        };
        let (secret, token) = new_token(name, Policy::Management, self.node.now_ms())?;
        self.node
            .propose(Proposal::Write(Command::AclBootstrap {
                at_ms: self.node.now_ms(),
                token: token.clone(),
            }))
            .await?;
        tracing::warn!(accessor = %token.accessor, "access control bootstrapped: every call needs a token from now on");
        Ok(Response::new(token_pb(&token, Some(secret), None)))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::AclToken>, Status> {
        let req = req.into_inner();
        let policy = Policy::parse(&req.policy).ok_or_else(|| {
            ServerError::invalid(
                "policy",
                format!("{:?}: read, submit, operator or management", req.policy),
            )
        })?;
        let grants = grants_from_pb(req.grants)?;
        let (secret, token) = new_token(req.name, policy, self.node.now_ms())?;
        // One entry either way: a scoped token never exists without its grants.
        let cmd = if grants.is_empty() {
            Command::TokenCreate {
                at_ms: self.node.now_ms(),
                token: token.clone(),
            }
        } else {
            Command::TokenCreateScoped {
                at_ms: self.node.now_ms(),
                token: token.clone(),
                grants: grants.clone(),
            }
        };
        self.node.propose(Proposal::Write(cmd)).await?;
        let shown = (!grants.is_empty()).then_some(grants.as_slice());
        Ok(Response::new(token_pb(&token, Some(secret), shown)))
    }

    async fn list_tokens(
        &self,
        _req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let a = self.node.state().read();
        let acl = a.state.acl();
        Ok(Response::new(pb::ListTokensResponse {
            tokens: acl
                .tokens()
                .map(|t| token_pb(t, None, a.state.namespaces().grants(&t.accessor)))
                .collect(),
            enforced: acl.enforced,
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let accessor = req.into_inner().accessor;
        self.node
            .propose(Proposal::Write(Command::TokenRevoke {
                at_ms: self.node.now_ms(),
                accessor,
            }))
            .await?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::AclToken>, Status> {
        let caller = auth::caller(&req);
        let a = self.node.state().read();
        match caller
            .accessor
            .as_deref()
            .and_then(|x| a.state.acl().token(x))
        {
            Some(t) => Ok(Response::new(token_pb(
                t,
                None,
                a.state.namespaces().grants(&t.accessor),
            ))),
            None => Ok(Response::new(pb::AclToken {
                policy: caller.policy.name().to_string(),
                name: "(access control is off)".into(),
                ..Default::default()
            })),
        }
    }
}
