//! Access control: tokens and their policies, kept in the replicated state.
//!
//! Off until bootstrapped: `AclBootstrap` records the first (management) token and turns
//! enforcement on for good. A token is an accessor (public, names it in listings and in
//! the jobs it submitted) and a secret (shown once, to whoever created it); the state keeps
//! only the secret's BLAKE3 hash, so the log, snapshots, `cathedral-log dump` and every
//! replay carry no secret.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::JobId;
use crate::error::Invalid;

/// Most tokens a cluster holds.
pub const TOKENS_MAX: usize = 10_000;
/// Longest token name, in bytes.
pub const TOKEN_NAME_BYTES_MAX: usize = 128;
/// Length of an accessor (hex).
pub const ACCESSOR_CHARS: usize = 32;

/// What a token may do; each policy includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Policy {
    /// Status, list, get, logs, watch.
    Read,
    /// + submit jobs and workflows, cancel its own jobs.
    Submit,
    /// + nodes, tags, snapshots, remove node, cancel any job.
    Operator,
    /// + tokens.
    Management,
}

impl Policy {
    pub const ALL: [Policy; 4] = [
        Policy::Read,
        Policy::Submit,
        Policy::Operator,
        Policy::Management,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Read => "read",
            Policy::Submit => "submit",
            Policy::Operator => "operator",
            Policy::Management => "management",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == s)
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A token as the state keeps it: no secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub accessor: String,
    pub name: String,
    pub policy: Policy,
    /// BLAKE3 of the secret.
    pub secret_hash: [u8; 32],
    pub created_at_ms: u64,
}

impl Token {
    /// Checks the fields a proposer chose.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.accessor.len() != ACCESSOR_CHARS
            || !self.accessor.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Invalid::new(
                "accessor",
                format!("must be {ACCESSOR_CHARS} hex digits"),
            ));
        }
        if self.name.len() > TOKEN_NAME_BYTES_MAX || self.name.contains('\0') {
            return Err(Invalid::new(
                "name",
                format!(
                    "{} bytes; at most TOKEN_NAME_BYTES_MAX ({TOKEN_NAME_BYTES_MAX}), no NUL",
                    self.name.len()
                ),
            ));
        }
        Ok(())
    }
}

/// The hash the state keeps of a token secret.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

/// The access-control part of the state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    /// Set once, by the bootstrap; from then on every API call needs a token.
    pub enforced: bool,
    tokens: BTreeMap<String, Token>,
    /// The accessor of the token that submitted each job (while enforced). Persistent
    /// (O(1) to copy for a snapshot, like the jobs); encoded as the `BTreeMap` it was.
    submitted_by: imbl::OrdMap<JobId, String>,
    /// Derived: accessor by secret hash.
    #[serde(skip)]
    by_secret: BTreeMap<[u8; 32], String>,
}

impl Acl {
    /// Whether nothing was ever recorded (hashes and snapshots leave an empty ACL out).
    pub fn is_empty(&self) -> bool {
        !self.enforced && self.tokens.is_empty() && self.submitted_by.is_empty()
    }

    /// Rebuilds the derived lookup after a snapshot load.
    pub fn reindex(&mut self) {
        self.by_secret = self
            .tokens
            .values()
            .map(|t| (t.secret_hash, t.accessor.clone()))
            .collect();
    }

    /// The token whose secret hashes to `hash`.
    pub fn by_secret_hash(&self, hash: &[u8; 32]) -> Option<&Token> {
        self.by_secret.get(hash).and_then(|a| self.tokens.get(a))
    }

    pub fn token(&self, accessor: &str) -> Option<&Token> {
        self.tokens.get(accessor)
    }

    pub fn tokens(&self) -> impl Iterator<Item = &Token> {
        self.tokens.values()
    }

    /// Forgets who submitted `job` (collected).
    pub(crate) fn forget_job(&mut self, job: JobId) {
        self.submitted_by.remove(&job);
    }

    /// Whether enforced and the tokens, encoded (the state hash's part of access control
    /// without the submitters, which the job digests cover).
    pub(crate) fn tokens_encoded(&self) -> Vec<u8> {
        postcard::to_stdvec(&(self.enforced, &self.tokens)).expect("tokens always encode")
    }

    /// The accessor that submitted `job`, when one did.
    pub fn submitter(&self, job: JobId) -> Option<&str> {
        self.submitted_by.get(&job).map(String::as_str)
    }

    /// Why `token` cannot be added (bootstrap: `first`), if it cannot.
    pub fn check_add(&self, token: &Token, first: bool) -> Result<(), Invalid> {
        token.check()?;
        if first && self.enforced {
            return Err(Invalid::new(
                "acl",
                "already bootstrapped; create tokens with a management token",
            ));
        }
        if !first && !self.enforced {
            return Err(Invalid::new(
                "acl",
                "not bootstrapped; run `cathedral acl bootstrap` first",
            ));
        }
        if first && token.policy != Policy::Management {
            return Err(Invalid::new(
                "policy",
                "the bootstrap token is a management token",
            ));
        }
        if self.tokens.contains_key(&token.accessor)
            || self.by_secret.contains_key(&token.secret_hash)
        {
            return Err(Invalid::new(
                "accessor",
                "a token with this accessor or secret exists",
            ));
        }
        if self.tokens.len() >= TOKENS_MAX {
            return Err(Invalid::new(
                "tokens",
                format!("the cluster holds TOKENS_MAX ({TOKENS_MAX}) tokens; revoke some"),
            ));
        }
        Ok(())
    }

    /// Adds `token` (checked with [`check_add`](Self::check_add) first).
    pub fn add(&mut self, token: Token, first: bool) -> Result<(), Invalid> {
        self.check_add(&token, first)?;
        if first {
            self.enforced = true;
        }
        self.by_secret
            .insert(token.secret_hash, token.accessor.clone());
        self.tokens.insert(token.accessor.clone(), token);
        Ok(())
    }

    /// Removes the token `accessor`.
    pub fn revoke(&mut self, accessor: &str) -> Result<Token, Invalid> {
        let t = self
            .tokens
            .remove(accessor)
            .ok_or_else(|| Invalid::new("accessor", format!("no token {accessor}")))?;
        self.by_secret.remove(&t.secret_hash);
        Ok(t)
    }

    /// Records that `accessor` submitted `jobs` (a repeat keeps the first submitter).
    pub fn record_submitter(&mut self, accessor: &str, jobs: &[JobId]) {
        for j in jobs {
            self.submitted_by
                .entry(*j)
                .or_insert_with(|| accessor.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterState, Command, JobSpec, Response};

    fn token(n: u8, policy: Policy) -> (String, Token) {
        let secret = format!("secret-{n}");
        let t = Token {
            accessor: format!("{n:032x}"),
            name: format!("t{n}"),
            policy,
            secret_hash: secret_hash(&secret),
            created_at_ms: 1,
        };
        (secret, t)
    }

    fn done(r: Response) {
        assert_eq!(r, Response::Done);
    }

    #[test]
    fn bootstrap_once_then_tokens_come_and_go_and_never_hold_a_secret() {
        let mut s = ClusterState::new();
        assert!(!s.acl().enforced);
        let before = s.hash();
        let (_, op) = token(2, Policy::Operator);
        let early = s.apply(
            1,
            &Command::TokenCreate {
                at_ms: 1,
                token: op.clone(),
            },
        );
        assert!(matches!(early, Response::Rejected(e) if e.reason.contains("not bootstrapped")));
        let (root_secret, root) = token(1, Policy::Management);
        done(s.apply(
            2,
            &Command::AclBootstrap {
                at_ms: 1,
                token: root.clone(),
            },
        ));
        assert!(s.acl().enforced);
        assert_ne!(s.hash(), before, "access control is part of the state hash");
        let again = s.apply(
            3,
            &Command::AclBootstrap {
                at_ms: 1,
                token: token(3, Policy::Management).1,
            },
        );
        assert!(
            matches!(again, Response::Rejected(e) if e.reason.contains("already bootstrapped"))
        );
        done(s.apply(
            4,
            &Command::TokenCreate {
                at_ms: 1,
                token: op.clone(),
            },
        ));
        let dup = s.apply(
            5,
            &Command::TokenCreate {
                at_ms: 1,
                token: op.clone(),
            },
        );
        assert!(matches!(dup, Response::Rejected(_)));
        assert_eq!(
            s.acl()
                .by_secret_hash(&secret_hash(&root_secret))
                .map(|t| t.policy),
            Some(Policy::Management)
        );
        done(s.apply(
            6,
            &Command::TokenRevoke {
                at_ms: 1,
                accessor: op.accessor.clone(),
            },
        ));
        assert!(s.acl().by_secret_hash(&secret_hash("secret-2")).is_none());
        assert!(s
            .check(&Command::TokenRevoke {
                at_ms: 1,
                accessor: op.accessor.clone()
            })
            .is_err());
        // The snapshot carries the tokens (and the lookup is rebuilt), never a secret.
        let bytes = s.to_snapshot();
        assert!(!bytes.windows(8).any(|w| w == b"secret-1"));
        let back = ClusterState::from_snapshot(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.hash(), s.hash());
        assert!(back
            .acl()
            .by_secret_hash(&secret_hash(&root_secret))
            .is_some());
    }

    #[test]
    fn an_authored_submission_records_its_submitter_and_wraps_nothing_else() {
        let mut s = ClusterState::new();
        let (_, root) = token(1, Policy::Management);
        done(s.apply(
            1,
            &Command::AclBootstrap {
                at_ms: 1,
                token: root.clone(),
            },
        ));
        let submit = Command::Authored {
            accessor: root.accessor.clone(),
            command: Box::new(Command::SubmitJobs {
                at_ms: 2,
                jobs: vec![JobSpec::new("j", &["true"])],
            }),
        };
        assert_eq!(submit.kind(), "submit_jobs");
        let Response::Submitted { jobs } = s.apply(2, &submit) else {
            panic!("submitted")
        };
        assert_eq!(s.acl().submitter(jobs[0]), Some(root.accessor.as_str()));
        let wrong = Command::Authored {
            accessor: root.accessor.clone(),
            command: Box::new(Command::Checkpoint { at_ms: 3 }),
        };
        assert!(s.check(&wrong).is_err());
        assert!(matches!(s.apply(3, &wrong), Response::Rejected(_)));
    }

    #[test]
    fn a_token_names_its_fields_bounds() {
        let (_, mut t) = token(1, Policy::Read);
        t.accessor = "xyz".into();
        assert_eq!(t.check().unwrap_err().field, "accessor");
        let (_, mut t) = token(1, Policy::Read);
        t.name = "n".repeat(TOKEN_NAME_BYTES_MAX + 1);
        assert!(t
            .check()
            .unwrap_err()
            .reason
            .contains("TOKEN_NAME_BYTES_MAX"));
        assert!(Policy::Read < Policy::Submit && Policy::Operator < Policy::Management);
        for p in Policy::ALL {
            assert_eq!(Policy::parse(p.name()), Some(p));
        }
    }
}
