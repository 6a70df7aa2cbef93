//! Who is calling: the socket's address, or the client behind a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client's address, worked out once per request by the log's middleware and read from
/// the request's extensions by the handlers that need it.
#[derive(Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// The client's address: the socket's, or, when the socket's is a trusted proxy, the last
/// address in `X-Forwarded-For` that is not itself a trusted proxy. Addresses a client put
/// further left are never believed.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.ip().to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    // Split as bytes: a client's non-ASCII entry must not cost the whole line the address a
    // proxy appended after it.
    let hops: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
        .map(<[u8]>::trim_ascii)
        // An empty entry (a trailing comma, an empty header) names nobody.
        .filter(|hop| !hop.is_empty())
        .collect();
    for hop in hops.iter().rev() {
        match std::str::from_utf8(hop).ok().and_then(parse_hop) {
            Some(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    return client;
                }
            }
            // Garbage from beyond the last trusted proxy: that proxy is the client we know.
            None => return client,
        }
    }
    client
}

/// An address as proxies write it: bare, with a port (`1.2.3.4:5`, `[::1]:5`), in brackets
/// (`[::1]`), or with an IPv6 zone (`fe80::1%eth0`, which names the proxy's interface, not
/// another host).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    let bare = hop
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(hop);
    let bare = bare.split_once('%').map_or(bare, |(ip, _zone)| ip);
    bare.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().expect("header"));
        headers
    }

    #[test]
    fn the_client_ip_comes_from_forwarded_for_only_through_trusted_proxies() {
        let proxy: SocketAddr = "10.0.0.2:443".parse().expect("addr");
        let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().expect("net")];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let headers = forwarded("203.0.113.9, 198.51.100.4");
        // No trusted proxies: the socket's address, whatever the header says.
        assert_eq!(client_ip(proxy, &headers, &[]), ip("10.0.0.2"));
        // Through a trusted proxy: the last hop it saw; the client-written part is ignored.
        assert_eq!(client_ip(proxy, &headers, &trusted), ip("198.51.100.4"));
        // Several trusted proxies in a row are skipped.
        let chain = forwarded("198.51.100.4, 10.0.0.7");
        assert_eq!(client_ip(proxy, &chain, &trusted), ip("198.51.100.4"));
        // A direct client is never believed.
        let direct: SocketAddr = "192.0.2.1:5555".parse().expect("addr");
        assert_eq!(client_ip(direct, &headers, &trusted), ip("192.0.2.1"));
        // No header, or garbage: the proxy itself.
        assert_eq!(
            client_ip(proxy, &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(proxy, &forwarded("nonsense"), &trusted),
            ip("10.0.0.2")
        );
        // The forms proxies write, and empty entries skipped.
        for (written, client) in [
            ("198.51.100.4:5555", "198.51.100.4"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("fe80::1%eth0", "fe80::1"),
            ("198.51.100.4,", "198.51.100.4"),
            ("198.51.100.4, ,10.0.0.7", "198.51.100.4"),
            ("::ffff:198.51.100.4", "198.51.100.4"),
        ] {
            let seen = client_ip(proxy, &forwarded(written), &trusted);
            assert_eq!(seen, ip(client), "{written}");
        }
        // A client's non-ASCII entry does not hide the address the proxy appended after it.
        let mut headers = HeaderMap::new();
        let written = HeaderValue::from_bytes(b"\xe9, 198.51.100.4").expect("header");
        headers.insert("x-forwarded-for", written);
        assert_eq!(client_ip(proxy, &headers, &trusted), ip("198.51.100.4"));
        let written = HeaderValue::from_bytes(b"198.51.100.\xe9").expect("header");
        headers.insert("x-forwarded-for", written);
        assert_eq!(client_ip(proxy, &headers, &trusted), ip("10.0.0.2"));
    }
}
