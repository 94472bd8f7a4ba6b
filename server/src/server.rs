//! Wiring: opens the node, serves gRPC (public API, Raft transport, health, reflection)
//! and HTTP, starts the background upkeep, and stops it all in order.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::api;
use crate::api::internal::peer_server::PeerServer;
use crate::api::v1::acl_service_server::AclServiceServer;
use crate::api::v1::cluster_service_server::ClusterServiceServer;
use crate::api::v1::cron_service_server::CronServiceServer;
use crate::api::v1::job_service_server::JobServiceServer;
use crate::api::v1::namespace_service_server::NamespaceServiceServer;
use crate::config::Config;
use crate::error::{Result, ServerError};
use crate::node::Node;
use crate::peer_service::PeerService;
use crate::service::Api;
use crate::transport::PEER_MESSAGE_BYTES_MAX;

/// Largest public API request (tonic's default, named).
pub const REQUEST_BYTES_MAX: usize = 4 << 20;
/// HTTP/2 streams one connection may have open at once (watches, forwarded writes, calls).
pub const HTTP2_CONCURRENT_STREAMS_MAX: u32 = 1024;
/// Streams a client may open and cancel before the server has taken them up, per
/// connection, before the connection is closed as a rapid-reset attack
/// (CVE-2023-44487). h2's default (20) closes connections of ordinary clients that open
/// and cancel many watches in a row; this bound still closes an attacker's connection after
/// this many, while `HTTP2_CONCURRENT_STREAMS_MAX` bounds what any connection holds at
/// once and h2 still bounds the streams it must reset itself (1024 per connection).
pub const HTTP2_PENDING_RESET_STREAMS_MAX: usize = 1024;

/// A started server.
pub struct Running {
    pub node: Arc<Node>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Opens the data directory, binds both ports and starts serving; then initialises or
/// joins a cluster as the configuration says. The node is given the system's edges (its
/// wall clock).
pub async fn start(config: Config) -> Result<Running> {
    start_with(config, crate::edges::Edges::system()).await
}

/// `make()` the first time in this process, a clone of that after. For the reflection
/// services: each decodes the API's whole descriptor set when built, the largest part of a
/// node's start-up CPU where one process starts many nodes (the simulator). The cell holds
/// `T` as `Any` because the services' types cannot be named (`impl ServerReflection`).
/// Built on a thread of its own: the maps it fills draw hash keys from the building
/// thread's sequence (std's `RandomState`), and the simulator's runs must not depend on
/// whether an earlier run in the process built it.
fn once_per_process<T: Clone + Send + Sync + 'static>(
    cell: &'static OnceLock<Box<dyn Any + Send + Sync>>,
    make: impl FnOnce() -> T + Send,
) -> T {
    cell.get_or_init(|| {
        let made = std::thread::scope(|s| s.spawn(make).join())
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        Box::new(made)
    })
    .downcast_ref::<T>()
    .expect("one cell per call site, so one type")
    .clone()
}

/// [`start`] with the edges a node is given (its clock): a simulation's, or a test's.
///
/// Long on purpose: it is the composition root — every task the node runs is started
/// here, in dependency order, and handed to [`Running`] for shutdown; one list is the
/// easiest place to check that nothing is started that shutdown does not stop.
pub async fn start_with(config: Config, edges: crate::edges::Edges) -> Result<Running> {
    let grpc = Bound::listen(edges.network.as_ref(), config.bind, "--bind").await?;
    let http = Bound::listen(edges.network.as_ref(), config.http, "--http").await?;
    let grpc_addr = grpc.local_addr()?;
    let http_addr = http.local_addr()?;
    let starter = edges.starter.clone();
    let node = Node::open(config, edges).await?;
    if node.config.metrics {
        node.spawn_until_stop(crate::scrape::follow_events(node.clone()));
        node.spawn_until_stop(crate::scrape::sample_history(node.clone()));
    }
    let (stop, stop_rx) = watch::channel(false);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<JobServiceServer<Api>>().await;
    health.set_serving::<ClusterServiceServer<Api>>().await;
    static REFLECTION: OnceLock<Box<dyn Any + Send + Sync>> = OnceLock::new();
    static REFLECTION_ALPHA: OnceLock<Box<dyn Any + Send + Sync>> = OnceLock::new();
    let reflection = once_per_process(&REFLECTION, || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| format!("reflection: {e}"))
    })
    .map_err(ServerError::Internal)?;
    let reflection_alpha = once_per_process(&REFLECTION_ALPHA, || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| format!("reflection: {e}"))
    })
    .map_err(ServerError::Internal)?;
    let api = Api { node: node.clone() };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = node.security.server_tls.clone() {
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServerError::Config(format!("TLS: {e}")))?;
    }
    if node.security.accepted_credentials.is_empty() && !node.security.mutual {
        tracing::warn!(
            "calls between nodes are not authenticated: set --cluster-key (and --tls-ca for mutual TLS)"
        );
    }
    let router = builder
        .layer(crate::auth::AuthLayer { node: node.clone() })
        .max_concurrent_streams(HTTP2_CONCURRENT_STREAMS_MAX)
        .http2_max_pending_accept_reset_streams(Some(HTTP2_PENDING_RESET_STREAMS_MAX))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            JobServiceServer::new(api.clone()).max_decoding_message_size(REQUEST_BYTES_MAX),
        )
        .add_service(
            ClusterServiceServer::new(api.clone()).max_decoding_message_size(REQUEST_BYTES_MAX),
        )
        .add_service(
            AclServiceServer::new(api.clone()).max_decoding_message_size(REQUEST_BYTES_MAX),
        )
        .add_service(
            CronServiceServer::new(api.clone()).max_decoding_message_size(REQUEST_BYTES_MAX),
        )
        .add_service(NamespaceServiceServer::new(api).max_decoding_message_size(REQUEST_BYTES_MAX))
        .add_service(
            PeerServer::new(PeerService { node: node.clone() })
                .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX),
        );
    let mut rx = stop_rx.clone();
    let grpc_task = tokio::spawn(async move {
        let stopped = async move {
            let _ = rx.changed().await;
        };
        let served = match grpc {
            Bound::Tcp(l) => {
                router
                    .serve_with_incoming_shutdown(
                        // Small replies must not wait for delayed ACKs (Nagle).
                        TcpIncoming::from(l).with_nodelay(Some(true)),
                        stopped,
                    )
                    .await
            }
            Bound::Given(l) => {
                let incoming = futures_util::stream::unfold(l, |mut l| async move {
                    let conn = l.accept().await;
                    Some((conn, l))
                });
                router.serve_with_incoming_shutdown(incoming, stopped).await
            }
        };
        if let Err(e) = served {
            tracing::error!("gRPC server: {e}");
        }
    });
    let mut rx = stop_rx.clone();
    let app = crate::http::router(node.clone());
    let tls = node.security.http_tls.clone();
    let http_task = tokio::spawn(async move {
        let stopped = async move {
            let _ = rx.changed().await;
        };
        let served = match (http, tls) {
            (Bound::Tcp(tcp), Some(config)) => {
                let listener = crate::http::TlsListener {
                    tcp,
                    acceptor: tokio_rustls::TlsAcceptor::from(config),
                };
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }
            (Bound::Tcp(tcp), None) => axum::serve(tcp, app).with_graceful_shutdown(stopped).await,
            (Bound::Given(l), _) => {
                axum::serve(crate::http::GivenListener(l), app)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!("HTTP server: {e}");
        }
    });
    let mut exec_config = cathedral_executor::ExecutorConfig::new(node.data_dir());
    exec_config.output_bytes_max = node.config.output.bytes_max;
    exec_config.docker_host = node.config.docker_host.clone();
    exec_config.node_label = node.id.to_string();
    exec_config.docker_nproc = node.config.docker_nproc_limit;
    let executor = std::sync::Arc::new(cathedral_executor::Executor::new(exec_config));
    let starter: std::sync::Arc<dyn cathedral_executor::AttemptStarter> =
        starter.unwrap_or_else(|| std::sync::Arc::new(executor.clone()));
    let upkeep = tokio::spawn(node.clone().upkeep(stop_rx.clone()));
    let leader = tokio::spawn(crate::leader::run(node.clone(), stop_rx.clone()));
    let worker = tokio::spawn(crate::worker::run(
        node.clone(),
        executor,
        starter,
        stop_rx.clone(),
    ));
    let replicas = tokio::spawn(crate::replicas::run(node.clone(), stop_rx.clone()));
    node.bootstrap().await?;
    let gossip_join = tokio::spawn(join_gossip(node.clone(), stop_rx.clone()));
    let peers = tokio::spawn(remember_peers(node.clone(), stop_rx));
    tracing::info!(
        node = node.id,
        grpc = %grpc_addr,
        http = %http_addr,
        gossip = %node.gossip.gossip_addr(),
        data_dir = %node.data_dir().display(),
        role = node.config.role.name(),
        "cathedral-server started"
    );
    Ok(Running {
        node,
        grpc_addr,
        http_addr,
        stop,
        tasks: vec![
            grpc_task,
            http_task,
            upkeep,
            leader,
            worker,
            replicas,
            gossip_join,
            peers,
        ],
    })
}

/// A server's listening socket: the host's TCP, or one on the network the node was given.
enum Bound {
    Tcp(TcpListener),
    Given(Box<dyn crate::edges::Listener>),
}

impl Bound {
    async fn listen(
        network: Option<&std::sync::Arc<dyn crate::edges::Network>>,
        addr: SocketAddr,
        flag: &str,
    ) -> Result<Bound> {
        let bound = match network {
            None => TcpListener::bind(addr).await.map(Bound::Tcp),
            Some(n) => n.listen(addr).await.map(Bound::Given),
        };
        bound.map_err(|e| ServerError::Config(format!("cannot listen on {flag} {addr}: {e}")))
    }

    fn local_addr(&self) -> Result<SocketAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr(),
            Bound::Given(l) => l.local_addr(),
        }
        .map_err(|e| ServerError::Internal(e.to_string()))
    }
}

/// How long a shutdown waits for the servers (their calls in flight) and the node's loops
/// (the worker's reports) before stopping them.
pub const SHUTDOWN_SERVE_WAIT: Duration = Duration::from_secs(8);

/// Attempts at asking the `--join` member for gossip seeds, a second apart.
const SEED_FETCH_ATTEMPTS: u32 = 10;
/// How often the live peers' gossip addresses are saved for the next start.
const PEERS_SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// Joins gossip through the configured seeds, the peers of the last run, and those the
/// `--join` member names. A failure is logged and shown by `cathedral cluster nodes`;
/// chitchat keeps contacting the configured seeds every round regardless.
async fn join_gossip(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut seeds = node.gossip.settings().seeds.clone();
    if let Some(addr) = node.config.join.clone() {
        for attempt in 1..=SEED_FETCH_ATTEMPTS {
            match node.fetch_gossip_seeds(&addr).await {
                Ok(found) => {
                    for s in found {
                        if !seeds.contains(&s) {
                            seeds.push(s);
                        }
                    }
                    break;
                }
                Err(e) if attempt == SEED_FETCH_ATTEMPTS => {
                    tracing::warn!(via = %addr, "cannot get gossip seeds from the --join member: {e}")
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
    tokio::select! {
        _ = stop.changed() => {}
        r = node.gossip.join(&seeds) => {
            if let Err(e) = r {
                tracing::error!("{e}");
            }
        }
    }
}

/// Saves the live peers' gossip addresses whenever they change.
async fn remember_peers(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut saved: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(PEERS_SAVE_INTERVAL) => {}
        }
        let mut peers = node.gossip_seeds();
        peers.remove(0); // this node's own
        peers.sort();
        if !peers.is_empty() && peers != saved {
            node.save_known_peers(&peers);
            saved = peers;
        }
    }
}

impl Running {
    /// Resolves once the node cannot go on (its log's disk failed: [`Node::failed`]),
    /// with the cause.
    pub async fn failed(&self) -> String {
        self.node.failed().await
    }

    /// Leaves gossip (announcing it), stops serving and the loops (the worker waits for the
    /// reports of the attempts it kills), waits for the node's own tasks, stops Raft and
    /// closes the log.
    pub async fn shutdown(self) {
        self.node.gossip.leave().await;
        let _ = self.stop.send(true);
        self.node.begin_shutdown();
        // Bounded: a peer that froze mid-call keeps a graceful server shutdown waiting on
        // its connection for ever; what has not stopped by then is stopped.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_SERVE_WAIT;
        const NAMES: [&str; 8] = [
            "gRPC server",
            "HTTP server",
            "upkeep",
            "leader loop",
            "worker",
            "output copies",
            "gossip join",
            "peer list",
        ];
        for (t, name) in self.tasks.into_iter().zip(NAMES) {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                tracing::warn!(
                    task = name,
                    "still running {} s after the shutdown began; stopping it",
                    SHUTDOWN_SERVE_WAIT.as_secs()
                );
                abort.abort();
            }
        }
        self.node.shutdown().await;
        tracing::info!(node = self.node.id, "stopped");
    }
}
