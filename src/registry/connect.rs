//! Which addresses the registry client may connect to. The registry in an
//! image reference is written by whoever writes the workload: unguarded,
//! pinning would have the operator send requests to the cloud metadata
//! service, the API server's own loopback port or anything else on the pod
//! network. The check runs after DNS resolution (a public name may resolve
//! to a private address) and on IP literals, which skip resolution.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Which hosts the client may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Reach {
    /// Any address: `probity pin`, run by a person on their own manifests.
    #[default]
    Any,
    /// Public addresses only, except the named hosts, which may resolve to
    /// any address: the operator, whose names come from
    /// `--registry-allow` (the cluster admin's word, not a workload's).
    Public {
        /// Host names (no port), lower case.
        named: Vec<String>,
    },
}

impl Reach {
    /// Public addresses, and these `host[:port]` registries anywhere.
    pub fn public_except(registries: &[String]) -> Self {
        let named = registries
            .iter()
            .map(|r| host_of(r).to_ascii_lowercase())
            .collect();
        Self::Public { named }
    }

    /// Whether `host` may be reached at `ip`.
    pub fn permits(&self, host: &str, ip: IpAddr) -> bool {
        match self {
            Self::Any => true,
            Self::Public { named } => {
                is_public(ip) || named.iter().any(|n| n.eq_ignore_ascii_case(host))
            }
        }
    }
}

/// The host of `host[:port]` or `[v6]:port`, without brackets or port.
pub(crate) fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    }
}

/// Whether `ip` is an address on the public internet: not loopback,
/// private (RFC 1918), link-local (169.254.0.0/16, where cloud metadata
/// lives; fe80::/10), carrier-grade NAT (100.64.0.0/10), unique-local
/// (fc00::/7), unspecified, broadcast, multicast, or reserved for
/// documentation and benchmarks. IPv4-mapped IPv6 is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8)
}

/// A DNS resolver that drops the addresses `reach` forbids, and fails when
/// none is left.
#[derive(Debug, Clone)]
pub(crate) struct Resolver {
    reach: Arc<Reach>,
}

impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = BoxFuture<Result<Self::Response, io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let reach = Arc::clone(&self.reach);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| reach.permits(&host, a.ip()))
                .collect();
            if allowed.is_empty() && !found.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{host} resolves only to non-public addresses; list it in \
                         --registry-allow to reach it"
                    ),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// The TCP connector of the registry client: IP literals are checked
/// here, names by the [`Resolver`].
#[derive(Debug, Clone)]
pub(crate) struct Guarded {
    inner: HttpConnector<Resolver>,
    reach: Arc<Reach>,
}

impl Guarded {
    pub(crate) fn new(reach: Reach) -> Self {
        let reach = Arc::new(reach);
        let mut inner = HttpConnector::new_with_resolver(Resolver {
            reach: Arc::clone(&reach),
        });
        inner.enforce_http(false);
        inner.set_nodelay(true);
        inner.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        Self { inner, reach }
    }
}

impl tower::Service<Uri> for Guarded {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if let Ok(ip) = host.parse::<IpAddr>()
            && !self.reach.permits(&host, ip)
        {
            return Box::pin(async move {
                Err(format!(
                    "{host} is not a public address; list it in --registry-allow to reach it"
                )
                .into())
            });
        }
        let connecting = tower::Service::call(&mut self.inner, uri);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "2001:db8::1",
        ] {
            let parsed: IpAddr = ip.parse().expect("ip");
            assert!(!is_public(parsed), "{ip} is not public");
        }
        for ip in [
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            let parsed: IpAddr = ip.parse().expect("ip");
            assert!(is_public(parsed), "{ip} is public");
        }
    }

    #[test]
    fn named_hosts_may_resolve_anywhere() {
        let reach = Reach::public_except(&[
            "Registry.Internal:5000".to_owned(),
            "127.0.0.1:5000".to_owned(),
        ]);
        let private: IpAddr = "10.0.0.5".parse().expect("ip");
        assert!(reach.permits("registry.internal", private));
        assert!(!reach.permits("evil.example", private));
        assert!(reach.permits("127.0.0.1", "127.0.0.1".parse().expect("ip")));
        assert!(Reach::Any.permits("anything", private));
        assert_eq!(host_of("[::1]:5000"), "::1");
        assert_eq!(host_of("ghcr.io"), "ghcr.io");
        assert_eq!(host_of("localhost:5000"), "localhost");
    }

    #[tokio::test]
    async fn the_connector_refuses_what_reach_forbids() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((_stream, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let mut guarded = Guarded::new(Reach::public_except(&[]));
        for host in ["127.0.0.1", "localhost"] {
            let uri: Uri = format!("http://{host}:{port}/v2/").parse().expect("uri");
            let err = tower::Service::call(&mut guarded, uri)
                .await
                .expect_err("loopback is not public");
            let mut chain = err.to_string();
            let mut source = err.source();
            while let Some(e) = source {
                chain.push_str(&format!(": {e}"));
                source = e.source();
            }
            assert!(chain.contains("--registry-allow"), "{host}: {chain}");
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "never contacted"
        );

        let mut allowed = Guarded::new(Reach::public_except(&[format!("127.0.0.1:{port}")]));
        let uri: Uri = format!("http://127.0.0.1:{port}/v2/").parse().expect("uri");
        tower::Service::call(&mut allowed, uri)
            .await
            .expect("a named registry is reached");
    }
}
