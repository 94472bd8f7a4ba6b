//! Gossip over UDP with every datagram authenticated by the cluster key.
//!
//! chitchat's own `UdpTransport` sends the envelope bare; this one appends a keyed BLAKE3
//! MAC over the envelope's bytes and drops (and counts) any datagram whose MAC does not
//! verify before decoding it. Written here because chitchat has no authenticated
//! transport; the envelope's encoding is chitchat's (see [`AuthenticatedUdp`] for how it is
//! reached).
//!
//! ```text
//!   datagram = envelope bytes ‖ BLAKE3-keyed(key, envelope bytes)   (32 bytes)
//! ```
//!
//! In the crate's tests the same transport carries injected faults (`gossip::faults`): a
//! seeded drop rate and blocked destinations, applied on the sending side, so in-process
//! tests run over real loopback sockets with loss and partitions. A build for use has no
//! such hook on its send path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;

#[cfg(test)]
use super::faults::Faults;

/// Bytes of the MAC at the end of every datagram.
pub const MAC_BYTES: usize = 32;
/// Largest UDP payload over IPv4; an envelope plus its MAC past this is not sent.
pub const DATAGRAM_BYTES_MAX: usize = 65_507;
/// Context string of the key derivation (BLAKE3 `derive_key`): the MAC key is never the
/// operator's string itself.
const KEY_CONTEXT: &str = "cathedral 2026 gossip datagram MAC v1";

/// The MAC key derived from the operator's cluster key.
#[derive(Clone)]
pub struct ClusterKey {
    /// The primary key first (it signs), then older ones (they still verify), so keys
    /// change across a running cluster: add the new key as an old one everywhere, make it
    /// primary everywhere, drop the old one — a rolling restart each, no datagram refused.
    keys: Vec<[u8; 32]>,
}

impl ClusterKey {
    pub fn derive(secret: &str) -> ClusterKey {
        ClusterKey::ring(&[secret])
    }

    /// The key ring of `secrets`, primary first (at least one).
    pub fn ring<S: AsRef<str>>(secrets: &[S]) -> ClusterKey {
        let mut keys: Vec<[u8; 32]> = secrets
            .iter()
            .map(|s| blake3::derive_key(KEY_CONTEXT, s.as_ref().as_bytes()))
            .collect();
        if keys.is_empty() {
            keys.push(blake3::derive_key(KEY_CONTEXT, b""));
        }
        ClusterKey { keys }
    }

    /// Appends the MAC of `buf` (with the primary key) to it.
    pub fn seal(&self, buf: &mut Vec<u8>) {
        let mac = blake3::keyed_hash(&self.keys[0], buf);
        buf.extend_from_slice(mac.as_bytes());
    }

    /// The envelope bytes of a datagram whose MAC verifies with any key of the ring
    /// (each compared in constant time).
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let body_len = datagram.len().checked_sub(MAC_BYTES)?;
        let (body, mac) = datagram.split_at(body_len);
        let mac = blake3::Hash::from(<[u8; MAC_BYTES]>::try_from(mac).ok()?);
        self.keys
            .iter()
            .any(|k| blake3::keyed_hash(k, body) == mac)
            .then_some(body)
    }
}

/// What a node's gossip socket did, since it opened.
#[derive(Debug, Default)]
pub struct Counters {
    pub datagrams_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Datagrams dropped because their MAC did not verify (wrong key, tampered, junk).
    pub rejected_mac: AtomicU64,
    /// Datagrams with a valid MAC that did not decode (a different protocol version).
    pub malformed: AtomicU64,
    /// Envelopes not sent because they would not fit one datagram.
    pub oversized: AtomicU64,
    /// Datagrams the injected faults dropped (tests).
    #[cfg(test)]
    pub dropped_by_faults: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
    pub rejected_mac: u64,
    pub malformed: u64,
    pub oversized: u64,
    #[cfg(test)]
    pub dropped_by_faults: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CountersSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            datagrams_sent: g(&self.datagrams_sent),
            bytes_sent: g(&self.bytes_sent),
            datagrams_received: g(&self.datagrams_received),
            bytes_received: g(&self.bytes_received),
            rejected_mac: g(&self.rejected_mac),
            malformed: g(&self.malformed),
            oversized: g(&self.oversized),
            #[cfg(test)]
            dropped_by_faults: g(&self.dropped_by_faults),
        }
    }
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

/// chitchat's [`Transport`] over UDP with the cluster key's MAC on every datagram.
///
/// chitchat 0.13 keeps its envelope encoding crate-private, so this transport reaches the
/// bytes through chitchat's own UDP socket on a private loopback port (`inner`): an
/// outgoing envelope is sent by `inner` to our `capture` socket, read back as bytes, sealed
/// and sent to the peer from the public socket; an incoming datagram whose MAC verifies is
/// handed to `inner` from our `tap` socket and decoded there. Two loopback datagrams per
/// gossip datagram buy the unmodified chitchat encoding. Datagrams reaching `inner` or
/// `capture` from anywhere but our own sockets are dropped and counted.
pub struct AuthenticatedUdp {
    pub key: ClusterKey,
    pub counters: Arc<Counters>,
    #[cfg(test)]
    pub faults: Arc<Faults>,
}

/// How long a datagram handed to chitchat's decoder may take to come out; one that does
/// not was dropped by it as undecodable.
const DECODE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

#[async_trait::async_trait]
impl Transport for AuthenticatedUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind the gossip port {listen_addr}/udp: {e}"))?;
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let inner = chitchat::transport::UdpTransport.open(loopback).await?;
        let inner_addr = inner.local_addr()?;
        let capture = tokio::net::UdpSocket::bind(loopback).await?;
        let capture_addr = capture.local_addr()?;
        let tap = tokio::net::UdpSocket::bind(loopback).await?;
        let tap_addr = tap.local_addr()?;
        Ok(Box::new(AuthenticatedSocket {
            public,
            inner,
            inner_addr,
            capture,
            capture_addr,
            tap,
            tap_addr,
            pending: None,
            key: self.key.clone(),
            counters: self.counters.clone(),
            #[cfg(test)]
            faults: self.faults.clone(),
            buf: vec![0; DATAGRAM_BYTES_MAX + 1].into_boxed_slice(),
        }))
    }
}

struct AuthenticatedSocket {
    public: tokio::net::UdpSocket,
    /// chitchat's UDP socket, on a loopback port: the envelope codec.
    inner: Box<dyn Socket>,
    inner_addr: SocketAddr,
    /// Receives what `inner` encodes for sending.
    capture: tokio::net::UdpSocket,
    capture_addr: SocketAddr,
    /// Hands verified datagrams to `inner`.
    tap: tokio::net::UdpSocket,
    tap_addr: SocketAddr,
    /// The sender of the datagram handed to `inner` and not yet decoded.
    pending: Option<SocketAddr>,
    key: ClusterKey,
    counters: Arc<Counters>,
    #[cfg(test)]
    faults: Arc<Faults>,
    buf: Box<[u8]>,
}

/// Receive errors that concern one datagram (or an earlier send), not the socket.
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | OutOfMemory | Interrupted | WouldBlock
    )
}

impl AuthenticatedSocket {
    /// Encodes `envelope` with chitchat's codec into `self.buf`; returns its length.
    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<usize> {
        // Anything left over (a send abandoned half-way) is not this envelope.
        while self.capture.try_recv_from(&mut self.buf).is_ok() {}
        self.inner.send(self.capture_addr, envelope).await?;
        loop {
            let (len, from) = self.capture.recv_from(&mut self.buf).await?;
            if from == self.inner_addr {
                return Ok(len);
            }
            add(&self.counters.rejected_mac, 1);
        }
    }
}

#[async_trait::async_trait]
impl Socket for AuthenticatedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.public.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let len = self.encode(envelope).await?;
        let mut datagram = Vec::with_capacity(len + MAC_BYTES);
        datagram.extend_from_slice(&self.buf[..len]);
        self.key.seal(&mut datagram);
        let len = datagram.len();
        if len > DATAGRAM_BYTES_MAX {
            add(&self.counters.oversized, 1);
            anyhow::bail!(
                "gossip message of {len} bytes (with its MAC) exceeds DATAGRAM_BYTES_MAX ({DATAGRAM_BYTES_MAX})"
            );
        }
        #[cfg(test)]
        if self.faults.drops(to) {
            add(&self.counters.dropped_by_faults, 1);
            return Ok(SendOutcome {
                num_bytes_sent: len,
            });
        }
        let sent = self.public.send_to(&datagram, to).await?;
        add(&self.counters.datagrams_sent, 1);
        add(&self.counters.bytes_sent, sent);
        Ok(SendOutcome {
            num_bytes_sent: sent,
        })
    }

    /// Cancel-safe: every await is a single receive or send, and a datagram handed to
    /// `inner` is remembered in `pending` until it comes out (or is known dropped).
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(peer) = self.pending {
                match tokio::time::timeout(DECODE_WAIT, self.inner.recv()).await {
                    Ok(Ok(out)) if out.from_addr == self.tap_addr => {
                        self.pending = None;
                        return Ok(RecvOutcome {
                            from_addr: peer,
                            envelope: out.envelope,
                            num_bytes_received: out.num_bytes_received + MAC_BYTES,
                        });
                    }
                    // Sent to the private port by someone else: not authenticated.
                    Ok(Ok(_)) => add(&self.counters.rejected_mac, 1),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        self.pending = None;
                        add(&self.counters.malformed, 1);
                        tracing::debug!(from = %peer, "undecodable gossip datagram dropped");
                    }
                }
                continue;
            }
            let (len, from) = match self.public.recv_from(&mut self.buf).await {
                Ok(r) => r,
                Err(e) if transient(&e) => continue,
                Err(e) => return Err(anyhow::anyhow!("gossip socket: {e}")),
            };
            add(&self.counters.datagrams_received, 1);
            add(&self.counters.bytes_received, len);
            let Some(body) = self.key.open(&self.buf[..len]) else {
                add(&self.counters.rejected_mac, 1);
                tracing::debug!(from = %from, len, "gossip datagram without a valid MAC dropped");
                continue;
            };
            // A datagram whose decoding outlasted DECODE_WAIT (a starved host) may still
            // come out of `inner`: it belongs to nobody now. Left there, it would come out
            // for this datagram's sender, and every later one for the one before it.
            while let Some(late) = futures_util::FutureExt::now_or_never(self.inner.recv()) {
                late?;
                add(&self.counters.malformed, 1);
            }
            self.pending = Some(from);
            self.tap.send_to(body, self.inner_addr).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_datagram_opens_only_with_the_same_key_and_unchanged() {
        let k = ClusterKey::derive("secret");
        let mut d = b"hello gossip".to_vec();
        k.seal(&mut d);
        assert_eq!(d.len(), 12 + MAC_BYTES);
        assert_eq!(k.open(&d), Some(&b"hello gossip"[..]));
        assert_eq!(ClusterKey::derive("other").open(&d), None);
        for i in 0..d.len() {
            let mut t = d.clone();
            t[i] ^= 1;
            assert_eq!(k.open(&t), None, "flipped byte {i} accepted");
        }
        assert_eq!(k.open(&d[..MAC_BYTES - 1]), None);
        assert_eq!(k.open(&[]), None);
    }

    #[test]
    fn a_key_ring_signs_with_its_primary_and_opens_with_any() {
        let old = ClusterKey::derive("old");
        let both = ClusterKey::ring(&["new", "old"]);
        let new = ClusterKey::derive("new");
        let mut from_old = b"a".to_vec();
        old.seal(&mut from_old);
        let mut from_both = b"b".to_vec();
        both.seal(&mut from_both);
        assert!(both.open(&from_old).is_some(), "an old key still verifies");
        assert!(new.open(&from_both).is_some(), "the primary signs");
        assert!(old.open(&from_both).is_none());
        assert!(new.open(&from_old).is_none());
    }
}
