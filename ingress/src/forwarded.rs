//! Header rewriting between the client and the target: hop-by-hop headers are dropped (they
//! belong to one connection), and the `X-Forwarded-*` headers tell the target who asked.
//!
//! - `X-Forwarded-For`: the client's address appended to any the request already had;
//! - `X-Forwarded-Proto`: `http` or `https`, as the client reached the ingress (replaced);
//! - `X-Forwarded-Host`: the host the client asked for (replaced);
//! - `X-Forwarded-Port`: the ingress port the client connected to (replaced).
//!
//! An Upgrade request keeps `Upgrade` and `Connection: upgrade` so the target can switch.
//!
//! Headers are rewritten in place, and the values that depend only on the client connection
//! ([`client_value`], [`port_value`]) are made once per connection, not per request.

use std::net::IpAddr;

use http::header::{CONNECTION, Entry, HeaderMap, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};

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

/// The headers that belong to one connection (besides those `Connection` names).
const HOP_BY_HOP: [HeaderName; 6] = [CONNECTION, KEEP_ALIVE, PROXY_CONNECTION, TE, TRAILER, TRANSFER_ENCODING];

/// Drops hop-by-hop headers, and those the `Connection` header names. With `keep_upgrade`,
/// `Upgrade` stays and `Connection` becomes `upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most requests carry none: one look at the names instead of a removal per name.
    if !keep_upgrade && !headers.keys().any(|name| name == UPGRADE || HOP_BY_HOP.contains(name)) {
        return;
    }
    let listed: Vec<HeaderName> = connection_tokens(headers).filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()).collect();
    for name in listed {
        if !(keep_upgrade && name == UPGRADE) {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// The client's address as `X-Forwarded-For` writes it (an IPv4-mapped IPv6 address as IPv4).
pub fn client_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_canonical().to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The ingress port as `X-Forwarded-Port` writes it.
pub fn port_value(port: u16) -> HeaderValue {
    HeaderValue::from(port)
}

/// Adds the `X-Forwarded-*` headers for a client at `client` (see [`client_value`]) that
/// reached the ingress port `port` (see [`port_value`]) over `https` or not, asking for `host`
/// (the `Host` header as sent, port included).
pub fn add_forwarded(headers: &mut HeaderMap, client: &HeaderValue, https: bool, host: Option<&HeaderValue>, port: &HeaderValue) {
    // Room for the four at once: the map hyper parsed has none to spare, and growing it once
    // beats growing it as each goes in.
    headers.reserve(4);
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(entry) => {
            entry.insert(client.clone());
        }
        Entry::Occupied(mut entry) => {
            let previous: Vec<&str> = entry.iter().filter_map(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).collect();
            let client = client.to_str().unwrap_or_default();
            let chain = if previous.is_empty() { client.to_string() } else { format!("{}, {client}", previous.join(", ")) };
            if let Ok(value) = HeaderValue::from_str(&chain) {
                entry.insert(value);
            }
        }
    }
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match host {
        Some(value) => headers.insert(X_FORWARDED_HOST, value.clone()),
        None => headers.remove(X_FORWARDED_HOST),
    };
    headers.insert(X_FORWARDED_PORT, port.clone());
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
    fn requests_without_hop_by_hop_headers_are_left_alone() {
        let pairs = [("host", "a.example"), ("accept", "*/*"), ("x-upgraded", "no")];
        let mut map = headers(&pairs);
        strip_hop_by_hop(&mut map, false);
        assert_eq!(map, headers(&pairs));
        let mut map = headers(&[("host", "a.example"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut map, false);
        assert_eq!(map, headers(&[("host", "a.example")]), "an Upgrade without Connection: upgrade is dropped");
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
            let host = HeaderValue::from_static("Quotes.example:8443");
            add_forwarded(&mut map, &client_value(ip), true, Some(&host), &port_value(8443));
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
        add_forwarded(&mut map, &client_value(ip), false, None, &port_value(80));
        assert_eq!(map.get(X_FORWARDED_FOR).unwrap(), "127.0.0.1");
        assert_eq!(map.get(X_FORWARDED_PROTO).unwrap(), "http");
        assert!(!map.contains_key(X_FORWARDED_HOST));
    }
}
