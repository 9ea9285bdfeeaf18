//! The broadcaster replicas over HTTP, from `BOIFI_BROADCASTERS`: each URL's host is resolved
//! to all its addresses on every gathering (the chart's headless Service resolves to one
//! address per ready replica, so replicas that come and go are followed), and each address is
//! asked `GET /v1/sidecars` with short timeouts and a bound on the answer.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use boifi_policy::wire::{SidecarsPage, SidecarsQuery, UnreachableReplica};
use ureq::Agent;

use super::gather::SidecarSource;

/// Connecting to a replica gets this long (they are in the same cluster).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// One page gets this long, connecting included: a replica that hangs holds up policy reads
/// no longer than this.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest page read (a page holds at most [`super::gather::PAGE_SIZE`] sidecars).
pub const MAX_PAGE_BYTES: u64 = 64 * 1024 * 1024;

/// One entry of `BOIFI_BROADCASTERS`: `http://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcasterUrl {
    host: String,
    port: u16,
}

impl BroadcasterUrl {
    /// Reads `http://host[:port]` (port 80 when left out, as in any `http` URL; a trailing
    /// `/` is fine, any other path, a query or credentials are not).
    pub fn parse(text: &str) -> Result<BroadcasterUrl, String> {
        let url = url::Url::parse(text.trim()).map_err(|e| format!("`{text}`: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!("`{text}`: expected an http:// URL"));
        }
        if !matches!(url.path(), "" | "/")
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(format!(
                "`{text}`: expected only scheme, host and port, like http://boifi-sse-broadcaster:8081"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(domain)) => domain.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("`{text}`: no host")),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("`{text}`: no port"))?;
        Ok(BroadcasterUrl { host, port })
    }

    /// Every address the host has now.
    fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        let addresses: BTreeSet<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .collect();
        if addresses.is_empty() {
            return Err(format!("{} resolves to no address", self.host));
        }
        Ok(addresses.into_iter().collect())
    }
}

impl fmt::Display for BroadcasterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "http://[{}]:{}", self.host, self.port),
            false => write!(f, "http://{}:{}", self.host, self.port),
        }
    }
}

/// Reads `BOIFI_BROADCASTERS`: a comma list of [`BroadcasterUrl`]s (blank entries skipped).
pub fn parse_broadcasters(text: &str) -> Result<Vec<BroadcasterUrl>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(BroadcasterUrl::parse)
        .collect()
}

/// The replicas behind some URLs, asked over HTTP.
pub struct Broadcasters {
    urls: Vec<BroadcasterUrl>,
    agent: Agent,
}

impl Broadcasters {
    pub fn new(urls: Vec<BroadcasterUrl>) -> Broadcasters {
        let config = Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(PAGE_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("boifi-policy-api/", env!("CARGO_PKG_VERSION")))
            .build();
        Broadcasters {
            urls,
            agent: Agent::new_with_config(config),
        }
    }
}

impl SidecarSource for Broadcasters {
    fn replicas(&self) -> Vec<Result<String, UnreachableReplica>> {
        let mut seen = BTreeSet::new();
        let mut replicas = Vec::new();
        for url in &self.urls {
            match url.resolve() {
                Ok(addresses) => replicas.extend(
                    addresses
                        .into_iter()
                        .filter(|address| seen.insert(*address))
                        .map(|address| Ok(address.to_string())),
                ),
                Err(error) => replicas.push(Err(UnreachableReplica {
                    address: url.to_string(),
                    error,
                })),
            }
        }
        replicas
    }

    fn page(&self, address: &str, query: &SidecarsQuery) -> Result<SidecarsPage, String> {
        let url = format!("http://{address}/v1/sidecars?{}", query.encode());
        let mut response = self.agent.get(&url).call().map_err(|e| reason(&e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_PAGE_BYTES)
            .read_to_vec()
            .map_err(|e| reason(&e))?;
        if status != 200 {
            let text = String::from_utf8_lossy(&body);
            let first: String = text.trim().chars().take(200).collect();
            return Err(format!("HTTP {status}: {first}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("not a sidecar table: {e}"))
    }
}

/// A failure below HTTP, in a few words.
fn reason(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(what) => format!("no answer in time ({what})"),
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::BodyExceedsLimit(limit) => format!("answer larger than {limit} bytes"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
