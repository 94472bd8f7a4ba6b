//! Connecting to a server ([`Client`]: the servers, the credentials, the write retry), and
//! turning failures into one clear line and an exit code.

use std::future::Future;
use std::time::{Duration, Instant};

use cathedral_api::v1::acl_service_client::AclServiceClient;
use cathedral_api::v1::cluster_service_client::ClusterServiceClient;
use cathedral_api::v1::cron_service_client::CronServiceClient;
use cathedral_api::v1::job_service_client::JobServiceClient;
use cathedral_api::v1::namespace_service_client::NamespaceServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A connection to a server; every call carries the token, if one was given.
pub type Conn = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer SECRET` to every call.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

/// What a client presents: a token (`--token`, `CATHEDRAL_TOKEN`) and TLS (`--tls-ca`,
/// and a client certificate with `--tls-cert` and `--tls-key`).
#[derive(Clone, Default)]
pub struct Credentials {
    bearer: Bearer,
    tls: Option<ClientTlsConfig>,
}

impl Credentials {
    /// Reads the files; errors name the flag and the file.
    pub fn new(
        token: Option<&str>,
        ca: Option<&std::path::Path>,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<Credentials, CliError> {
        let read = |flag: &str, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| CliError::invalid(format!("{flag} {}: {e}", p.display())))
        };
        let bearer = match token.filter(|t| !t.is_empty()) {
            Some(t) => Bearer(Some(format!("Bearer {t}").parse().map_err(|_| {
                CliError::invalid("--token holds characters a header cannot carry")
            })?)),
            None => Bearer(None),
        };
        let tls = match (ca, cert, key) {
            (None, None, None) => None,
            (ca, cert, key) => {
                let mut t = ClientTlsConfig::new();
                if let Some(ca) = ca {
                    t = t.ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?));
                }
                match (cert, key) {
                    (Some(c), Some(k)) => {
                        t = t.identity(Identity::from_pem(
                            read("--tls-cert", c)?,
                            read("--tls-key", k)?,
                        ))
                    }
                    (None, None) => {}
                    _ => return Err(CliError::invalid("--tls-cert and --tls-key go together")),
                }
                Some(t)
            }
        };
        Ok(Credentials { bearer, tls })
    }
}

/// Where the CLI connects when neither `--server` nor `CATHEDRAL_ADDR` says.
pub const DEFAULT_SERVER: &str = "127.0.0.1:50051";
/// How long to wait for the TCP connection.
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// How long one try of a write may take before the next server is tried: longer than a
/// server's own write timeout (10 s by default), so a server that answers is heard.
pub const WRITE_TRY_TIMEOUT_MS: u64 = 15_000;
/// HTTP/2 pings on every connection this often, and a server that does not answer one
/// within `KEEPALIVE_TIMEOUT_MS` counts as gone: a frozen server fails a call in seconds
/// (and a write moves on to the next server) instead of holding it.
pub const KEEPALIVE_INTERVAL_MS: u64 = 1_000;
pub const KEEPALIVE_TIMEOUT_MS: u64 = 2_000;
/// Pause after every server was tried once, before trying them again.
pub const WRITE_RETRY_PAUSE_MS: u64 = 200;

/// Exit codes of the CLI.
pub mod exit {
    /// Something failed on the server's side, or the job did not succeed (`wait`).
    pub const FAILED: u8 = 1;
    /// Bad input: a flag, a file, or a request the server refused as invalid.
    pub const INVALID: u8 = 2;
    /// The job or node does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// The server cannot be reached or has no leader.
    pub const UNAVAILABLE: u8 = 4;
    /// No valid token (unauthenticated), or the token's policy does not allow the call.
    pub const DENIED: u8 = 5;
    /// The namespace is at a quota (pending jobs, submit rate): nothing was accepted.
    pub const QUOTA: u8 = 6;
}

/// A failure to report: one line, one exit code.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: u8,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code,
        }
    }

    pub fn invalid(message: impl Into<String>) -> CliError {
        CliError::new(exit::INVALID, message)
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        // The connection broke under the call — plaintext HTTP/2 to a TLS port (the
        // server's TLS alert is not HTTP/2), a TLS handshake refused: not the server's
        // answer, so "unavailable", with the likely cause.
        if matches!(s.code(), Code::Unknown | Code::Internal)
            && (s.message().starts_with("h2 protocol error") || s.message() == "transport error")
        {
            return CliError::new(
                exit::UNAVAILABLE,
                format!(
                    "{}: the connection failed; if the server serves TLS, give --tls-ca (and a client certificate if it requires one)",
                    s.message()
                ),
            );
        }
        let code = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => exit::INVALID,
            Code::NotFound => exit::NOT_FOUND,
            Code::Unavailable | Code::DeadlineExceeded => exit::UNAVAILABLE,
            Code::Unauthenticated | Code::PermissionDenied => exit::DENIED,
            Code::ResourceExhausted => exit::QUOTA,
            _ => exit::FAILED,
        };
        let msg = if s.message().is_empty() {
            format!("{:?}", s.code())
        } else {
            s.message().to_string()
        };
        CliError::new(code, msg)
    }
}

/// The servers of `--server`: one address, or several separated by commas.
pub fn addresses(list: &str) -> Result<Vec<String>, CliError> {
    let all: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    if all.is_empty() {
        return Err(no_server());
    }
    Ok(all)
}

/// A new request id for a write: 128 random bits in hex. Retries of the write carry it, so
/// the cluster applies the write once however often it is sent.
pub fn new_request_id() -> String {
    format!("cli-{:032x}", rand::random::<u128>())
}

/// Whether a failed call may not have reached the cluster's decision (so the same request,
/// under the same request id, is tried again).
pub fn outcome_unknown(s: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        s.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}

/// Where and how a command connects: the servers of `--server`, the credentials, and how
/// long a write whose outcome is unknown is tried again (`--write-retry`).
#[derive(Clone)]
pub struct Client {
    servers: Vec<String>,
    credentials: Credentials,
    write_retry: Duration,
    namespace: String,
}

impl Client {
    /// A client of `servers` (see `addresses`) presenting `credentials`; writes are tried
    /// once (see `with_write_retry`).
    pub fn new(servers: Vec<String>, credentials: Credentials) -> Client {
        Client {
            servers,
            credentials,
            write_retry: Duration::ZERO,
            namespace: String::new(),
        }
    }

    /// Acts in namespace `ns` (empty: the server's default; `*`: every namespace, for
    /// reads).
    pub fn with_namespace(mut self, ns: String) -> Client {
        self.namespace = ns;
        self
    }

    /// The namespace requests name (see [`with_namespace`](Self::with_namespace)).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Tries a write whose outcome is unknown again until `retry_for` has passed.
    pub fn with_write_retry(mut self, retry_for: Duration) -> Client {
        self.write_retry = retry_for;
        self
    }

    /// The servers, in the order they are tried.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// How long a write whose outcome is unknown is tried again (and how long `events
    /// --follow` looks for a server to go on at).
    pub fn write_retry(&self) -> Duration {
        self.write_retry
    }

    /// Connects to `addr` (`host:port`, or a full `http://`/`https://` URI; TLS when the
    /// credentials hold it).
    pub async fn connect(&self, addr: &str) -> Result<Conn, CliError> {
        let creds = &self.credentials;
        let uri = if addr.contains("://") {
            addr.to_string()
        } else if creds.tls.is_some() {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| CliError::invalid(format!("bad server address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .http2_keep_alive_interval(Duration::from_millis(KEEPALIVE_INTERVAL_MS))
            .keep_alive_timeout(Duration::from_millis(KEEPALIVE_TIMEOUT_MS))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        if let Some(tls) = &creds.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| CliError::invalid(format!("TLS: {}", source_chain(&e))))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            CliError::new(
                exit::UNAVAILABLE,
                format!("cannot connect to {addr}: {}", source_chain(&e)),
            )
        })?;
        Ok(InterceptedService::new(channel, creds.bearer.clone()))
    }

    /// Connects to the first of the servers that accepts a connection.
    pub async fn connect_any(&self) -> Result<Conn, CliError> {
        let mut last = None;
        for addr in &self.servers {
            match self.connect(addr).await {
                Ok(ch) => return Ok(ch),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(no_server))
    }

    /// Sends a write with `call`, trying the servers in turn while the outcome is unknown (a
    /// server down, frozen, without a leader, or a broken connection) until the write retry
    /// has passed. Safe only for a request that carries a request id (see
    /// `new_request_id`): the cluster applies it at most once and answers a retry with the
    /// first answer.
    pub async fn write<T, F, Fut>(&self, mut call: F) -> Result<T, CliError>
    where
        F: FnMut(JobServiceClient<Conn>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let servers = &self.servers;
        if servers.is_empty() {
            return Err(no_server());
        }
        let deadline = Instant::now() + self.write_retry;
        let mut tries = 0usize;
        loop {
            let addr = &servers[tries % servers.len()];
            tries += 1;
            let failed = match self.connect(addr).await {
                Err(e) => e,
                Ok(ch) => {
                    let wait = Duration::from_millis(WRITE_TRY_TIMEOUT_MS);
                    match tokio::time::timeout(wait, call(JobServiceClient::new(ch))).await {
                        Ok(Ok(r)) => return Ok(r.into_inner()),
                        Ok(Err(s)) if outcome_unknown(&s) => CliError::from(s),
                        Ok(Err(s)) => return Err(s.into()),
                        Err(_) => CliError::new(
                            exit::UNAVAILABLE,
                            format!("{addr} did not answer within {WRITE_TRY_TIMEOUT_MS} ms"),
                        ),
                    }
                }
            };
            if Instant::now() >= deadline {
                return Err(failed);
            }
            if tries.is_multiple_of(servers.len()) {
                tokio::time::sleep(Duration::from_millis(WRITE_RETRY_PAUSE_MS)).await;
            }
        }
    }

    /// `JobService` at the first server that accepts a connection.
    pub async fn jobs(&self) -> Result<JobServiceClient<Conn>, CliError> {
        Ok(JobServiceClient::new(self.connect_any().await?))
    }

    /// `ClusterService` at the first server that accepts a connection.
    pub async fn cluster(&self) -> Result<ClusterServiceClient<Conn>, CliError> {
        Ok(ClusterServiceClient::new(self.connect_any().await?))
    }

    /// `AclService` at the first server that accepts a connection.
    pub async fn acl(&self) -> Result<AclServiceClient<Conn>, CliError> {
        Ok(AclServiceClient::new(self.connect_any().await?))
    }

    /// `NamespaceService` at the first server that accepts a connection.
    pub async fn namespaces(&self) -> Result<NamespaceServiceClient<Conn>, CliError> {
        Ok(NamespaceServiceClient::new(self.connect_any().await?))
    }

    /// `CronService` at the first server that accepts a connection.
    pub async fn crons(&self) -> Result<CronServiceClient<Conn>, CliError> {
        Ok(CronServiceClient::new(self.connect_any().await?))
    }
}

/// The error for a server list without an address.
pub(crate) fn no_server() -> CliError {
    CliError::invalid("--server names no address")
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Follows job `id` with WatchJob until it ends; returns the last event (the final state).
pub async fn watch_until_end(
    jobs: &mut JobServiceClient<Conn>,
    id: u64,
    namespace: &str,
) -> Result<cathedral_api::v1::JobEvent, tonic::Status> {
    use tokio_stream::StreamExt;
    let mut s = jobs
        .watch_job(cathedral_api::v1::WatchJobRequest {
            job_id: id,
            namespace: namespace.into(),
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(ev) = s.next().await {
        last = Some(ev?);
    }
    last.ok_or_else(|| tonic::Status::unavailable("the watch ended without an event"))
}
