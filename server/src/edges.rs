//! What a node takes from its surroundings, given to it as values: the clock its entries
//! carry (`at_ms`), the network its servers and peer calls use, gossip's transport, and
//! what starts its attempts.
//!
//! A production node is given the system's ([`Edges::system`]: the wall clock, TCP with
//! TLS where configured, the executor); a test that runs a whole cluster in one process on
//! simulated time gives each node its own — a clock on the simulation's time, skewed per
//! node as the run's seed says, the simulation's network, attempts that take simulated
//! time, gossip over its transport. Randomness is the other edge; it is the thread's
//! (`cathedral_consensus::rng`), which a simulation seeds.

use std::fmt::Debug;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cathedral_executor::AttemptStarter;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The proposer's clock: what a node's commands carry as `at_ms` (apply never reads a
/// clock; it reads these).
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::proposal::now_ms()
    }
}

/// A clock `offset_ms` ahead of (or, negative, behind) another: a node whose clock is off.
#[derive(Debug, Clone)]
pub struct Skewed<C> {
    pub base: C,
    pub offset_ms: i64,
}

impl<C: Clock> Clock for Skewed<C> {
    fn now_ms(&self) -> u64 {
        self.base.now_ms().saturating_add_signed(self.offset_ms)
    }
}

/// A byte stream the network edge hands out: a connection accepted or made.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A connection on a given network, with its two ends' addresses (what tonic's servers
/// record of a caller).
pub struct Conn {
    pub io: Box<dyn Stream>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: Some(self.local),
            remote_addr: Some(self.remote),
        }
    }
}

/// Where a node's servers accept connections on a given network.
pub trait Listener: Send + 'static {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Conn>>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A network other than the host's TCP (a simulation's): where the node listens and how
/// it reaches a peer. Peer calls and HTTP over it carry no TLS (give a node with a
/// certificate no network of this kind).
pub trait Network: Send + Sync + Debug + 'static {
    /// Listens at `addr` (the node's `--bind` or `--http`).
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>>;
    /// Connects to `addr` (`host:port`, as peers advertise themselves).
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Conn>>;
}

/// The edges a node is given (see the module docs).
#[derive(Clone)]
pub struct Edges {
    pub clock: Arc<dyn Clock>,
    /// `None`: the host's TCP (with TLS where configured).
    pub network: Option<Arc<dyn Network>>,
    /// `None`: the executor, built from the node's settings.
    pub starter: Option<Arc<dyn AttemptStarter>>,
    /// Gossip's transport; `None`: authenticated UDP on the host.
    pub gossip: Option<Arc<dyn chitchat::transport::Transport>>,
    /// The log writes on the caller's thread (`Options::inline_writer`): no storage
    /// thread wakes the node from outside (a simulation's); `false`: the writer threads.
    pub inline_storage: bool,
}

impl Debug for Edges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edges")
            .field("clock", &self.clock)
            .field("network", &self.network)
            .field("starter", &self.starter.as_ref().map(|_| "given"))
            .field("gossip", &self.gossip.as_ref().map(|_| "given"))
            .field("inline_storage", &self.inline_storage)
            .finish()
    }
}

impl Edges {
    /// A production node's: the system's clock, the host's TCP, the executor.
    pub fn system() -> Edges {
        Edges {
            clock: Arc::new(SystemClock),
            network: None,
            starter: None,
            gossip: None,
            inline_storage: false,
        }
    }
}

impl Default for Edges {
    fn default() -> Self {
        Edges::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(u64);
    impl Clock for Fixed {
        fn now_ms(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn a_skewed_clock_is_off_by_its_offset_and_never_before_the_epoch() {
        assert_eq!(
            Skewed {
                base: Fixed(10_000),
                offset_ms: 2_500
            }
            .now_ms(),
            12_500
        );
        assert_eq!(
            Skewed {
                base: Fixed(10_000),
                offset_ms: -2_500
            }
            .now_ms(),
            7_500
        );
        assert_eq!(
            Skewed {
                base: Fixed(10),
                offset_ms: -2_500
            }
            .now_ms(),
            0
        );
        let wall = SystemClock.now_ms();
        assert!(wall > 1_600_000_000_000, "{wall}");
    }
}
