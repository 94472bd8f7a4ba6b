//! Connecting to a server, and turning failures into one clear line and an exit code.

use std::time::Duration;

use cathedral_server::api::v1::cluster_service_client::ClusterServiceClient;
use cathedral_server::api::v1::job_service_client::JobServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Where the CLI connects when neither `--server` nor `CATHEDRAL_ADDR` says.
pub const DEFAULT_SERVER: &str = "127.0.0.1:50051";
/// How long to wait for the TCP connection.
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;

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
        let code = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => exit::INVALID,
            Code::NotFound => exit::NOT_FOUND,
            Code::Unavailable | Code::DeadlineExceeded => exit::UNAVAILABLE,
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

/// Connects to `addr` (`host:port`, or a full `http://` URI).
pub async fn connect(addr: &str) -> Result<Channel, CliError> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| CliError::invalid(format!("bad server address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true);
    endpoint.connect().await.map_err(|e| {
        CliError::new(
            exit::UNAVAILABLE,
            format!("cannot connect to {addr}: {}", source_chain(&e)),
        )
    })
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

pub fn jobs(ch: Channel) -> JobServiceClient<Channel> {
    JobServiceClient::new(ch)
}

pub fn cluster(ch: Channel) -> ClusterServiceClient<Channel> {
    ClusterServiceClient::new(ch)
}

/// Follows job `id` with WatchJob until it ends; returns the last event (the final state).
pub async fn watch_until_end(
    jobs: &mut JobServiceClient<Channel>,
    id: u64,
) -> Result<cathedral_server::api::v1::JobEvent, tonic::Status> {
    use tokio_stream::StreamExt;
    let mut s = jobs
        .watch_job(cathedral_server::api::v1::WatchJobRequest { job_id: id })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(ev) = s.next().await {
        last = Some(ev?);
    }
    last.ok_or_else(|| tonic::Status::unavailable("the watch ended without an event"))
}
