//! Gossip seeds: `HOST:PORT` (an address, or a name the system resolver looks up, as
//! chitchat does) or `dns:NAME:PORT`, every A and AAAA record of NAME (a Kubernetes
//! headless service names one record per ready pod) with PORT. Seeds are resolved again
//! at every join attempt, so pods that come up later are found.

use std::net::SocketAddr;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

/// Most bytes of a seed's DNS name.
pub const SEED_NAME_BYTES_MAX: usize = 253;

/// One seed as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed {
    /// `HOST:PORT`, resolved by the system resolver.
    Host(String),
    /// `dns:NAME:PORT`: every A/AAAA record of NAME, at PORT.
    Dns { name: String, port: u16 },
}

impl Seed {
    pub fn parse(s: &str) -> Result<Seed, String> {
        let Some(rest) = s.strip_prefix("dns:") else {
            if s.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(format!("seed {s:?}: expected HOST:PORT or dns:NAME:PORT"));
            }
            return Ok(Seed::Host(s.to_string()));
        };
        let (name, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("seed {s:?}: expected dns:NAME:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("seed {s:?}: {port:?} is not a port"))?;
        if name.is_empty()
            || name.len() > SEED_NAME_BYTES_MAX
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return Err(format!(
                "seed {s:?}: {name:?} is not a DNS name (letters, digits, - _ and dots, at most {SEED_NAME_BYTES_MAX} bytes)"
            ));
        }
        Ok(Seed::Dns {
            name: name.to_string(),
            port,
        })
    }

    /// Whether chitchat can take the seed as it is (it resolves `HOST:PORT` itself).
    pub fn for_chitchat(&self) -> Option<&str> {
        match self {
            Seed::Host(h) => Some(h),
            Seed::Dns { .. } => None,
        }
    }
}

/// A resolver for `dns:` seeds: the system's settings (/etc/resolv.conf: servers, search
/// domains, ndots), or only `server` when one is given.
pub fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let builder = match server {
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("the system's resolver settings: {e}"))?,
        Some(addr) => {
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut c| {
                    c.port = addr.port();
                    c
                })
                .collect();
            let ns = NameServerConfig::new(addr.ip(), true, connections);
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
    };
    let mut builder = builder;
    let opts = builder.options_mut();
    opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
    // A seed list changes as pods come and go: ask every time.
    opts.cache_size = 0;
    builder.build().map_err(|e| e.to_string())
}

/// The addresses of every seed now (a seed that does not resolve is logged and skipped).
pub async fn resolve(seeds: &[String], dns_server: Option<SocketAddr>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let mut dns = None;
    for s in seeds {
        match Seed::parse(s) {
            Ok(Seed::Host(h)) => match tokio::net::lookup_host(h.as_str()).await {
                Ok(found) => out.extend(found),
                Err(e) => tracing::debug!(seed = %s, "cannot resolve seed: {e}"),
            },
            Ok(Seed::Dns { name, port }) => {
                if dns.is_none() {
                    match resolver(dns_server) {
                        Ok(r) => dns = Some(r),
                        Err(e) => {
                            tracing::warn!(seed = %s, "no DNS resolver: {e}");
                            continue;
                        }
                    }
                }
                let r = dns.as_ref().expect("made above");
                match r.lookup_ip(name.as_str()).await {
                    Ok(ips) => out.extend(ips.iter().map(|ip| SocketAddr::new(ip, port))),
                    Err(e) => tracing::debug!(seed = %s, "cannot resolve seed: {e}"),
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_or_say_why_not() {
        assert_eq!(
            Seed::parse("10.0.0.1:7000").unwrap(),
            Seed::Host("10.0.0.1:7000".into())
        );
        assert_eq!(
            Seed::parse("dns:cathedral.default.svc.cluster.local:50051").unwrap(),
            Seed::Dns {
                name: "cathedral.default.svc.cluster.local".into(),
                port: 50051
            }
        );
        for (bad, want) in [
            ("dns:cathedral", "dns:NAME:PORT"),
            ("dns:cathedral:http", "not a port"),
            ("dns::80", "not a DNS name"),
            ("dns:a b:80", "not a DNS name"),
            ("no-port", "HOST:PORT"),
        ] {
            let e = Seed::parse(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
