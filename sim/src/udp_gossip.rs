//! Gossip over turmoil's UDP: every datagram chitchat sends crosses the simulated network,
//! so partitions (both ways and one way), held links, latency and crashed hosts reach
//! gossip exactly as they reach gRPC, from the same generator, and a seeded share of the
//! datagrams is lost on top.
//!
//! The datagram carries a ticket, not the envelope's bytes: the envelope waits in a table
//! the run's sockets share, and the receiver takes it out with the ticket. chitchat's
//! codec is its own (the server's transport, and its tests, run it on real sockets);
//! encoding and decoding every envelope here cost a seventh of a run's time (each
//! compresses with a fresh zstd context) and decided nothing the network does not.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;

/// Bytes of a ticket: what crosses the network for one envelope.
const TICKET_BYTES: usize = 8;

/// The gossip transport of one run; clones share its envelopes, its loss and its tickets.
#[derive(Clone)]
pub struct UdpGossip {
    shared: Arc<Shared>,
}

struct Shared {
    /// Envelopes in flight, by ticket (one a partition dropped stays: the run is short).
    envelopes: Mutex<HashMap<u64, ChitchatEnvelope>>,
    next_ticket: AtomicU64,
    loss_permille: u64,
    /// The loss's generator, drawn in the order the simulation sends.
    state: AtomicU64,
}

impl UdpGossip {
    /// A transport losing `loss_permille` datagrams in a thousand, drawn from `seed`.
    pub fn new(loss_permille: u64, seed: u64) -> UdpGossip {
        UdpGossip {
            shared: Arc::new(Shared {
                envelopes: Mutex::default(),
                next_ticket: AtomicU64::new(1),
                loss_permille,
                state: AtomicU64::new(seed),
            }),
        }
    }

    fn loses(&self) -> bool {
        let loss = self.shared.loss_permille;
        loss > 0 && crate::entropy::next_shared(&self.shared.state) % 1000 < loss
    }
}

struct UdpGossipSocket {
    socket: turmoil::net::UdpSocket,
    /// The address the node listens on (its host's).
    addr: SocketAddr,
    link: UdpGossip,
}

#[async_trait::async_trait]
impl Transport for UdpGossip {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        // turmoil binds the unspecified address (or loopback) only; the host's address is
        // its own all the same.
        let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), listen_addr.port());
        let socket = turmoil::net::UdpSocket::bind(any)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind the gossip port {any}/udp: {e}"))?;
        Ok(Box::new(UdpGossipSocket {
            socket,
            addr: listen_addr,
            link: self.clone(),
        }))
    }
}

#[async_trait::async_trait]
impl Socket for UdpGossipSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        if self.link.loses() {
            // Lost on the way: the sender cannot tell.
            return Ok(SendOutcome {
                num_bytes_sent: TICKET_BYTES,
            });
        }
        let ticket = self.link.shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.link
            .shared
            .envelopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ticket, envelope);
        // UDP does not tell the sender: a datagram the network cannot carry is lost.
        if let Err(e) = self.socket.send_to(&ticket.to_le_bytes(), to).await {
            tracing::debug!(%to, "gossip datagram not sent: {e}");
        }
        Ok(SendOutcome {
            num_bytes_sent: TICKET_BYTES,
        })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let mut buf = [0u8; TICKET_BYTES];
        loop {
            let (len, from) = self.socket.recv_from(&mut buf).await?;
            if len != TICKET_BYTES {
                continue;
            }
            let ticket = u64::from_le_bytes(buf);
            let envelope = self
                .link
                .shared
                .envelopes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ticket);
            if let Some(envelope) = envelope {
                return Ok(RecvOutcome {
                    from_addr: from,
                    envelope,
                    num_bytes_received: TICKET_BYTES,
                });
            }
        }
    }
}
