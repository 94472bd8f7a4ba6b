//! Datagram loss for gossip: chitchat's in-process transport with every datagram dropped
//! with a set probability, decided by a generator seeded from the run (the draws happen in
//! the order the simulation sends, so a seed loses the same datagrams every time).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chitchat::transport::{ChannelTransport, RecvOutcome, SendOutcome, Socket, Transport};

/// chitchat's [`ChannelTransport`] behind a lossy link. Clones share the rate and the
/// generator.
#[derive(Clone)]
pub struct Lossy {
    inner: ChannelTransport,
    loss_permille: Arc<AtomicU64>,
    state: Arc<AtomicU64>,
}

impl Lossy {
    /// `inner` losing `loss_permille` datagrams in a thousand, drawn from `seed`.
    pub fn new(inner: ChannelTransport, loss_permille: u64, seed: u64) -> Lossy {
        Lossy {
            inner,
            loss_permille: Arc::new(AtomicU64::new(loss_permille)),
            state: Arc::new(AtomicU64::new(seed)),
        }
    }

    /// Changes the loss rate (datagrams in a thousand).
    pub fn set_loss_permille(&self, loss_permille: u64) {
        self.loss_permille.store(loss_permille, Ordering::Relaxed);
    }

    /// The transport underneath (its links and statistics).
    pub fn inner(&self) -> &ChannelTransport {
        &self.inner
    }

    /// Whether the next datagram is lost.
    fn loses(&self) -> bool {
        let loss = self.loss_permille.load(Ordering::Relaxed);
        loss > 0 && crate::entropy::next_shared(&self.state) % 1000 < loss
    }
}

struct LossySocket {
    inner: Box<dyn Socket>,
    link: Lossy,
}

#[async_trait::async_trait]
impl Transport for Lossy {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(LossySocket {
            inner: self.inner.open(listen_addr).await?,
            link: self.clone(),
        }))
    }
}

#[async_trait::async_trait]
impl Socket for LossySocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: chitchat::ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        if self.link.loses() {
            // Lost on the way: the sender cannot tell.
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        self.inner.send(to, envelope).await
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.inner.recv().await
    }
}
