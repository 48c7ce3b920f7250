//! The client address every rate limit keys on. Without `--trusted-proxies`
//! it is the TCP peer and `X-Forwarded-For` is ignored (anyone can send it).
//! When the peer is a trusted proxy, it is the right-most `X-Forwarded-For`
//! entry that is not itself trusted: entries to its left were written by the
//! client and prove nothing. Behind the reverse proxy SECURITY.md asks for,
//! every client used to share the proxy's address, so one abusive client
//! locked everyone out of the tracking page and the board.

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An IPv4 or IPv6 network, `ADDR/PREFIX` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True for `/0`: every address, so every client could name its own.
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is not an IP network like 10.0.0.0/8, 192.0.2.7 or fd00::/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { net, prefix })
    }
}

/// `::ffff:a.b.c.d` is the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// At most this many `X-Forwarded-For` entries are looked at, from the right.
const MAX_HOPS: usize = 32;

/// One `X-Forwarded-For` entry: an address, optionally `[v6]:port` or `v4:port`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    s.parse::<SocketAddr>().ok().map(|a| canonical(a.ip()))
}

/// The client address for a request from `peer` with `headers`.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.iter().any(|c| c.contains(peer)) {
        return peer;
    }
    // Several header lines count as one list, in order; walk it from the
    // right without collecting it (a header can hold thousands of entries).
    let mut client = peer;
    let mut hops = 0;
    for line in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(line) = line.to_str() else {
            return client;
        };
        for hop in line.rsplit(',') {
            hops += 1;
            if hops > MAX_HOPS {
                return client;
            }
            match parse_hop(hop) {
                Some(ip) if trusted.iter().any(|c| c.contains(ip)) => client = ip,
                Some(ip) => return ip,
                // A proxy we trust wrote garbage: the last proxy is all we know.
                None => return client,
            }
        }
    }
    client
}

/// The resolved client address, in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// Middleware: sets [`ClientAddr`] from the peer (`ConnectInfo`) and the
/// headers, per `trusted`. Without a peer (in-process `oneshot` calls) it is
/// loopback.
pub async fn layer(
    axum::extract::State(trusted): axum::extract::State<std::sync::Arc<Vec<Cidr>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let client = resolve(peer, req.headers(), &trusted);
    req.extensions_mut().insert(ClientAddr(client));
    next.run(req).await
}

/// The key a per-client limit counts under: the IPv4 address, or the /64 an
/// IPv6 address is in (one subscriber usually holds a whole /64, so keying
/// on single v6 addresses would give one attacker 2^64 buckets).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let h = xff(&["203.0.113.9"]);
        assert_eq!(
            resolve(ip("198.51.100.1"), &h, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(resolve(ip("10.0.0.1"), &h, &[]), ip("10.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_entry_is_the_client() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let proxy = ip("10.0.0.1");
        // The client forged the left-most entry; the proxy appended the real one.
        let h = xff(&["1.2.3.4, 203.0.113.9"]);
        assert_eq!(resolve(proxy, &h, &trusted), ip("203.0.113.9"));
        // Two trusted proxies in a row, across two header lines.
        let h = xff(&["1.2.3.4, 203.0.113.9", "10.0.0.7"]);
        assert_eq!(resolve(proxy, &h, &trusted), ip("203.0.113.9"));
        // With ports and IPv6 brackets.
        let h = xff(&["[2001:db8::1]:4711"]);
        assert_eq!(resolve(proxy, &h, &trusted), ip("2001:db8::1"));
        let h = xff(&["203.0.113.9:80"]);
        assert_eq!(resolve(proxy, &h, &trusted), ip("203.0.113.9"));
        // No header: the proxy itself.
        assert_eq!(resolve(proxy, &HeaderMap::new(), &trusted), proxy);
        // Garbage right of the trusted hops: the nearest proxy.
        let h = xff(&["203.0.113.9, nonsense, 10.0.0.9"]);
        assert_eq!(resolve(proxy, &h, &trusted), ip("10.0.0.9"));
        // Everything trusted: the left-most (farthest) hop.
        let h = xff(&["10.1.1.1, 10.2.2.2"]);
        assert_eq!(resolve(proxy, &h, &trusted), ip("10.1.1.1"));
    }

    #[test]
    fn odd_and_huge_forwarded_for_headers_fall_back_to_the_nearest_proxy() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy = ip("10.0.0.1");
        // Not UTF-8 (control bytes cannot even be sent in a header value).
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"203.0.113.9\xff").unwrap(),
        );
        assert_eq!(resolve(proxy, &h, &trusted), proxy);
        // Empty entries, trailing commas.
        assert_eq!(resolve(proxy, &xff(&["203.0.113.9,"]), &trusted), proxy);
        // Ten thousand trusted hops: only the right-most 32 are looked at.
        let many = vec!["10.0.0.2"; 10_000].join(",");
        assert_eq!(resolve(proxy, &xff(&[&many]), &trusted), ip("10.0.0.2"));
        // A trusted proxy written as an IPv4-mapped IPv6 address is the same proxy.
        let h = xff(&["203.0.113.9, ::ffff:10.0.0.5"]);
        assert_eq!(
            resolve(ip("::ffff:10.0.0.1"), &h, &trusted),
            ip("203.0.113.9")
        );
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().is_everything());
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa::1")),
            limit_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
