//! Wiring: opens the node, serves gRPC (public API, Raft transport, health, reflection)
//! and HTTP, starts the background upkeep, and stops it all in order.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::api;
use crate::api::internal::peer_server::PeerServer;
use crate::api::v1::cluster_service_server::ClusterServiceServer;
use crate::api::v1::job_service_server::JobServiceServer;
use crate::config::Config;
use crate::error::{Result, ServerError};
use crate::node::Node;
use crate::peer_service::PeerService;
use crate::service::Api;
use crate::transport::PEER_MESSAGE_BYTES_MAX;

/// Largest public API request (tonic's default, named).
pub const REQUEST_BYTES_MAX: usize = 4 << 20;

/// A started server.
pub struct Running {
    pub node: Arc<Node>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Opens the data directory, binds both ports and starts serving; then initialises or
/// joins a cluster as the configuration says.
pub async fn start(config: Config) -> Result<Running> {
    let grpc = TcpListener::bind(config.bind).await.map_err(|e| {
        ServerError::Config(format!("cannot listen on --bind {}: {e}", config.bind))
    })?;
    let http = TcpListener::bind(config.http).await.map_err(|e| {
        ServerError::Config(format!("cannot listen on --http {}: {e}", config.http))
    })?;
    let grpc_addr = grpc
        .local_addr()
        .map_err(|e| ServerError::Internal(e.to_string()))?;
    let http_addr = http
        .local_addr()
        .map_err(|e| ServerError::Internal(e.to_string()))?;
    let node = Node::open(config).await?;
    let (stop, stop_rx) = watch::channel(false);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<JobServiceServer<Api>>().await;
    health.set_serving::<ClusterServiceServer<Api>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Internal(format!("reflection: {e}")))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServerError::Internal(format!("reflection: {e}")))?;
    let api = Api { node: node.clone() };
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            JobServiceServer::new(api.clone()).max_decoding_message_size(REQUEST_BYTES_MAX),
        )
        .add_service(ClusterServiceServer::new(api).max_decoding_message_size(REQUEST_BYTES_MAX))
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
        if let Err(e) = router
            .serve_with_incoming_shutdown(
                // Small replies must not wait for delayed ACKs (Nagle).
                TcpIncoming::from(grpc).with_nodelay(Some(true)),
                stopped,
            )
            .await
        {
            tracing::error!("gRPC server: {e}");
        }
    });
    let mut rx = stop_rx.clone();
    let app = crate::http::router(node.clone());
    let http_task = tokio::spawn(async move {
        let stopped = async move {
            let _ = rx.changed().await;
        };
        if let Err(e) = axum::serve(http, app).with_graceful_shutdown(stopped).await {
            tracing::error!("HTTP server: {e}");
        }
    });
    let mut exec_config = cathedral_executor::ExecutorConfig::new(node.data_dir().clone());
    exec_config.output_bytes_max = node.config.output_bytes_max;
    let executor = std::sync::Arc::new(cathedral_executor::Executor::new(exec_config));
    let upkeep = tokio::spawn(node.clone().upkeep(stop_rx.clone()));
    let leader = tokio::spawn(crate::leader::run(node.clone(), stop_rx.clone()));
    let worker = tokio::spawn(crate::worker::run(node.clone(), executor, stop_rx));
    node.bootstrap().await?;
    tracing::info!(
        node = node.id,
        grpc = %grpc_addr,
        http = %http_addr,
        data_dir = %node.data_dir().display(),
        role = node.config.role.name(),
        "cathedral-server started"
    );
    Ok(Running {
        node,
        grpc_addr,
        http_addr,
        stop,
        tasks: vec![grpc_task, http_task, upkeep, leader, worker],
    })
}

impl Running {
    /// Stops serving, stops Raft and closes the log.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.node.shutdown().await;
        tracing::info!(node = self.node.id, "stopped");
    }
}
