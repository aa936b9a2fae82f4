//! Host names: how a request's host is normalized and how a rule's host pattern matches it.
//!
//! A request's host comes from the `Host` header (HTTP/1.1) or the `:authority` (HTTP/2). It
//! is compared lowercase, without its port and without a trailing dot. A rule's host is
//! absent (any host), exact (`quotes.example`) or a wildcard (`*.example.com`, which matches
//! one label or more before `.example.com` but not `example.com` itself).

use std::borrow::Cow;

use crate::error::RuleError;

/// A rule's host, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// No host in the rule: every host matches.
    Any,
    /// Exactly this host (lowercase).
    Exact(String),
    /// Hosts ending in this suffix, which starts with `.` (lowercase): `.example.com`.
    Wildcard(String),
}

impl HostPattern {
    /// Parses a rule's host: `None` is any host; `*.` at the start makes a wildcard; the rest
    /// must be labels of letters, digits and `-` joined by `.`.
    pub fn parse(host: Option<&str>) -> Result<Self, RuleError> {
        let Some(raw) = host else {
            return Ok(HostPattern::Any);
        };
        let lower = raw.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if !is_host_name(name) {
            return Err(RuleError::BadHost(raw.to_string()));
        }
        Ok(if wildcard { HostPattern::Wildcard(format!(".{name}")) } else { HostPattern::Exact(name.to_string()) })
    }

    /// Whether `host` (already normalized with [`normalize_host`]) matches. A request without
    /// a host matches only [`HostPattern::Any`].
    pub fn matches(&self, host: Option<&str>) -> bool {
        match (self, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Exact(want), Some(host)) => host == want,
            (HostPattern::Wildcard(suffix), Some(host)) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
            (_, None) => false,
        }
    }

    /// How specific the pattern is; greater wins: exact, then the wildcard with the longer
    /// suffix, then any host.
    pub fn specificity(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(_) => (2, 0),
            HostPattern::Wildcard(suffix) => (1, suffix.len()),
            HostPattern::Any => (0, 0),
        }
    }
}

/// A request's host as rules compare it: lowercase, without the port or a trailing dot.
/// IPv6 literals keep their brackets (`[::1]:8080` becomes `[::1]`). `None` for an empty host.
/// Borrowed from `raw` when it is already lowercase (the usual case: no copy).
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let raw = raw.trim();
    let without_port = if raw.starts_with('[') {
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => raw,
        }
    };
    let host = without_port.trim_end_matches('.');
    if host.is_empty() {
        None
    } else if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

/// Labels of 1-63 letters, digits and `-` (not at either end), joined by `.`.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hosts_are_lowercased_without_port_or_trailing_dot() {
        let cases = [
            ("Quotes.Example", Some("quotes.example")),
            ("quotes.example:8080", Some("quotes.example")),
            ("quotes.example.", Some("quotes.example")),
            ("QUOTES.example.:443", Some("quotes.example")),
            ("127.0.0.1:8080", Some("127.0.0.1")),
            ("[::1]:8080", Some("[::1]")),
            ("[::1]", Some("[::1]")),
            ("", None),
            (":80", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_host(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn patterns_parse_exact_wildcard_or_refuse() {
        let cases: [(Option<&str>, Result<HostPattern, ()>); 8] = [
            (None, Ok(HostPattern::Any)),
            (Some("Quotes.Example"), Ok(HostPattern::Exact("quotes.example".into()))),
            (Some("*.example.com"), Ok(HostPattern::Wildcard(".example.com".into()))),
            (Some("a-b.c"), Ok(HostPattern::Exact("a-b.c".into()))),
            (Some("*"), Err(())),
            (Some("a.*.com"), Err(())),
            (Some("-a.com"), Err(())),
            (Some("a..com"), Err(())),
        ];
        for (raw, want) in cases {
            assert_eq!(HostPattern::parse(raw).map_err(|_| ()), want, "{raw:?}");
        }
    }

    #[test]
    fn patterns_match_hosts() {
        let exact = HostPattern::parse(Some("quotes.example")).unwrap();
        let wild = HostPattern::parse(Some("*.example.com")).unwrap();
        let cases = [
            (&exact, Some("quotes.example"), true),
            (&exact, Some("api.quotes.example"), false),
            (&exact, None, false),
            (&wild, Some("a.example.com"), true),
            (&wild, Some("a.b.example.com"), true),
            (&wild, Some("example.com"), false),
            (&wild, Some("aexample.com"), false),
            (&wild, None, false),
            (&HostPattern::Any, None, true),
            (&HostPattern::Any, Some("x"), true),
        ];
        for (pattern, host, want) in cases {
            assert_eq!(pattern.matches(host), want, "{pattern:?} {host:?}");
        }
    }
}
