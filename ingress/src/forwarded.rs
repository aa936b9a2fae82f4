//! Header rewriting between the client and the target: hop-by-hop headers are dropped (they
//! belong to one connection), and the `X-Forwarded-*` headers tell the target who asked.
//!
//! - `X-Forwarded-For`: the client's address appended to any the request already had;
//! - `X-Forwarded-Proto`: `http` or `https`, as the client reached the ingress (replaced);
//! - `X-Forwarded-Host`: the host the client asked for (replaced);
//! - `X-Forwarded-Port`: the ingress port the client connected to (replaced).
//!
//! An Upgrade request keeps `Upgrade` and `Connection: upgrade` so the target can switch.

use std::net::IpAddr;

use http::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether the request asks to switch protocols (`Connection: upgrade` and an `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// Drops hop-by-hop headers, and those the `Connection` header names. With `keep_upgrade`,
/// `Upgrade` stays and `Connection` becomes `upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = connection_tokens(headers).filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()).collect();
    for name in listed {
        if !(keep_upgrade && name == UPGRADE) {
            headers.remove(name);
        }
    }
    for name in [CONNECTION, KEEP_ALIVE, PROXY_CONNECTION, TE, TRAILER, TRANSFER_ENCODING] {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// Adds the `X-Forwarded-*` headers for a client at `client` that reached port `port` over
/// `https` or not, asking for `host` (as sent, port included).
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, https: bool, host: Option<&str>, port: u16) {
    let client = client.to_canonical().to_string();
    let previous: Vec<&str> =
        headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).collect();
    let chain = if previous.is_empty() { client } else { format!("{}, {client}", previous.join(", ")) };
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match host.and_then(|h| HeaderValue::from_str(h).ok()) {
        Some(value) => headers.insert(X_FORWARDED_HOST, value),
        None => headers.remove(X_FORWARDED_HOST),
    };
    headers.insert(X_FORWARDED_PORT, HeaderValue::from(port));
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut map, false);
        let left: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn upgrade_requests_keep_upgrade() {
        let mut map = headers(&[("connection", "Upgrade, x-secret"), ("upgrade", "websocket"), ("x-secret", "1")]);
        assert!(is_upgrade(&map));
        strip_hop_by_hop(&mut map, true);
        assert_eq!(map.get(CONNECTION).unwrap(), "upgrade");
        assert_eq!(map.get(UPGRADE).unwrap(), "websocket");
        assert!(!map.contains_key("x-secret"));
        assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
        assert!(!is_upgrade(&headers(&[("connection", "upgrade")])));
    }

    #[test]
    fn forwarded_headers_append_the_client() {
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let cases = [
            (vec![], "10.0.0.9"),
            (vec![("x-forwarded-for", "1.2.3.4")], "1.2.3.4, 10.0.0.9"),
            (vec![("x-forwarded-for", "1.2.3.4, 5.6.7.8"), ("x-forwarded-for", "9.9.9.9")], "1.2.3.4, 5.6.7.8, 9.9.9.9, 10.0.0.9"),
        ];
        for (before, want) in cases {
            let mut map = headers(&before);
            map.insert(X_FORWARDED_PROTO, HeaderValue::from_static("forged"));
            add_forwarded(&mut map, ip, true, Some("Quotes.example:8443"), 8443);
            assert_eq!(map.get(X_FORWARDED_FOR).unwrap(), want);
            assert_eq!(map.get_all(X_FORWARDED_FOR).iter().count(), 1);
            assert_eq!(map.get(X_FORWARDED_PROTO).unwrap(), "https");
            assert_eq!(map.get(X_FORWARDED_HOST).unwrap(), "Quotes.example:8443");
            assert_eq!(map.get(X_FORWARDED_PORT).unwrap(), "8443");
        }
    }

    #[test]
    fn ipv4_mapped_clients_are_written_as_ipv4() {
        let mut map = HeaderMap::new();
        let ip: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        add_forwarded(&mut map, ip, false, None, 80);
        assert_eq!(map.get(X_FORWARDED_FOR).unwrap(), "127.0.0.1");
        assert_eq!(map.get(X_FORWARDED_PROTO).unwrap(), "http");
        assert!(!map.contains_key(X_FORWARDED_HOST));
    }
}
