//! `cathedral acl bootstrap|whoami|token ...`: access control.

use cathedral_api::v1 as pb;
use clap::Subcommand;

use super::print_json;
use crate::client::{CliError, Client};

#[derive(Subcommand)]
pub enum AclCmd {
    /// Turn access control on; prints the first (management) token. Its secret is shown
    /// this once: keep it.
    Bootstrap {
        #[arg(long, default_value = "bootstrap")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Tokens (needs a management token).
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// The token this call carries.
    Whoami {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token; prints its accessor and its secret (shown this once).
    Create {
        /// read, submit, operator or management.
        #[arg(long)]
        policy: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Scope the token to namespaces: `PATTERN=CAP,CAP` — PATTERN one namespace,
        /// a prefix (`ml-*`) or `*`; CAP read, read-output, submit or cancel. Repeatable.
        /// In namespaces no grant matches, the token may do nothing.
        #[arg(long, value_name = "PATTERN=CAPS")]
        grant: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its accessor; every node refuses it once the revoke is applied.
    Revoke { accessor: String },
}

/// `cathedral acl ...`.
pub async fn run(client: &Client, command: AclCmd) -> Result<u8, CliError> {
    let mut acl = client.acl().await?;
    match command {
        AclCmd::Bootstrap { name, json } => {
            let t = acl
                .bootstrap(pb::AclBootstrapRequest { name })
                .await?
                .into_inner();
            print_token(&t, json);
            if !json {
                eprintln!("access control is on: keep this secret; every call needs a token (--token or CATHEDRAL_TOKEN)");
            }
        }
        AclCmd::Whoami { json } => {
            let t = acl.who_am_i(pb::WhoAmIRequest {}).await?.into_inner();
            print_token(&t, json);
        }
        AclCmd::Token {
            command:
                TokenCmd::Create {
                    policy,
                    name,
                    grant,
                    json,
                },
        } => {
            let grants = grant
                .iter()
                .map(|g| {
                    let (pattern, caps) = g.split_once('=').ok_or_else(|| {
                        CliError::invalid(format!(
                            "--grant {g:?}: expected PATTERN=CAP,CAP (e.g. 'ml-*=read,submit')"
                        ))
                    })?;
                    Ok(pb::NamespaceGrant {
                        namespaces: pattern.trim().to_string(),
                        capabilities: caps.split(',').map(|c| c.trim().to_string()).collect(),
                    })
                })
                .collect::<Result<Vec<_>, CliError>>()?;
            let t = acl
                .create_token(pb::CreateTokenRequest {
                    name,
                    policy,
                    grants,
                })
                .await?
                .into_inner();
            print_token(&t, json);
        }
        AclCmd::Token {
            command: TokenCmd::List { json },
        } => {
            let r = acl
                .list_tokens(pb::ListTokensRequest {})
                .await?
                .into_inner();
            if json {
                print_json(&serde_json::json!({
                    "enforced": r.enforced,
                    "tokens": r.tokens.iter().map(token_json).collect::<Vec<_>>(),
                }));
            } else {
                println!("{:<32}  {:<10}  NAME", "ACCESSOR", "POLICY");
                for t in &r.tokens {
                    println!("{:<32}  {:<10}  {}", t.accessor, t.policy, t.name);
                }
            }
        }
        AclCmd::Token {
            command: TokenCmd::Revoke { accessor },
        } => {
            acl.revoke_token(pb::RevokeTokenRequest {
                accessor: accessor.clone(),
            })
            .await?;
            println!("token {accessor} revoked");
        }
    }
    Ok(0)
}

/// A token as JSON; the secret only when the answer carries it.
fn token_json(t: &pb::AclToken) -> serde_json::Value {
    let mut v = serde_json::json!({
        "accessor": t.accessor,
        "name": t.name,
        "policy": t.policy,
        "created_at_ms": t.created_at_ms,
    });
    if !t.secret.is_empty() {
        v["secret"] = t.secret.clone().into();
    }
    if !t.grants.is_empty() {
        v["grants"] = t
            .grants
            .iter()
            .map(
                |g| serde_json::json!({"namespaces": g.namespaces, "capabilities": g.capabilities}),
            )
            .collect::<Vec<_>>()
            .into();
    }
    v
}

fn print_token(t: &pb::AclToken, json: bool) {
    if json {
        print_json(&token_json(t));
        return;
    }
    println!("accessor  {}", t.accessor);
    if !t.secret.is_empty() {
        println!("secret    {}", t.secret);
    }
    println!("name      {}", t.name);
    println!("policy    {}", t.policy);
    for g in &t.grants {
        println!("grant     {}: {}", g.namespaces, g.capabilities.join(", "));
    }
}
