//! The HTTP port: `/healthz` (the process serves), `/readyz` (this node belongs to a
//! cluster with a leader, so it can take writes), `/metrics` (Prometheus) and the REST
//! API under `/v1` (see `rest`); over TLS when the node has a certificate.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::node::Node;

/// Most time a client gets to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The HTTP port's listener over TLS: axum serves what it accepts. A failed or slow
/// handshake is logged and dropped; the listener goes on.
pub struct TlsListener {
    pub tcp: tokio::net::TcpListener,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!("HTTP accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::debug!(%addr, "HTTP TLS handshake: {e}"),
                Err(_) => tracing::debug!(%addr, "HTTP TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// HTTP served on a listener of the network the node was given (`edges::Network`).
pub struct GivenListener(pub Box<dyn crate::edges::Listener>);

impl axum::serve::Listener for GivenListener {
    type Io = crate::edges::Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(conn) => {
                    let remote = conn.remote;
                    return (conn, remote);
                }
                Err(e) => {
                    tracing::debug!("HTTP accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(|| asset("index.html")))
        .route(
            "/ui/{file}",
            get(|axum::extract::Path(f): axum::extract::Path<String>| asset_named(f)),
        )
        .merge(crate::rest::routes())
        .route("/v1/{*rest}", axum::routing::any(crate::rest::not_found))
        .with_state(node)
}

async fn metrics(State(node): State<Arc<Node>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !node.config.metrics {
        return (
            StatusCode::NOT_FOUND,
            "metrics are off on this node (--metrics false)\n",
        )
            .into_response();
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::scrape::render(&node),
    )
        .into_response()
}

async fn readyz(State(node): State<Arc<Node>>) -> (StatusCode, String) {
    match node.not_ready() {
        None => (StatusCode::OK, "ready\n".into()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// The dashboard's files, embedded in the binary (no build step, no CDN): a page over the
/// REST API, kept live by the event stream. Static: no token needed to load them; the
/// page sends the one the user gives with every API call.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../assets/app.css"),
    ),
];

/// For working on the dashboard: a directory whose files are served instead of the
/// embedded ones, read at every request (so an edit shows at the next reload, without a
/// rebuild). Unset in production.
pub const UI_DIR_ENV: &str = "CATHEDRAL_UI_DIR";

async fn asset(name: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => {
            let body = match std::env::var_os(UI_DIR_ENV) {
                Some(dir) => std::fs::read_to_string(std::path::Path::new(&dir).join(name))
                    .unwrap_or_else(|e| format!("{UI_DIR_ENV}: {name}: {e}")),
                None => (*body).to_string(),
            };
            (
                [
                    (axum::http::header::CONTENT_TYPE, *kind),
                    (axum::http::header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

async fn asset_named(name: String) -> axum::response::Response {
    asset(&name).await
}
