//! Rule matching: which route a request's host and path go to. Pure, no I/O.
//!
//! Precedence (most specific wins, independent of table order):
//! 1. the host: an exact host beats a wildcard host (the longer wildcard suffix beats the
//!    shorter), which beats a rule without a host;
//! 2. then the longer path prefix, counted in bytes of whole segments.
//!
//! A path prefix matches on segments: `/api/v1` matches `/api/v1`, `/api/v1/` and
//! `/api/v1/x`, not `/api/v10`; `/` matches every path. A trailing `/` in a prefix is
//! ignored (`/api/` is `/api`). Paths are compared as sent (case-sensitive, not decoded), and
//! the query string is not part of the path.

use crate::error::RuleError;
use crate::host::HostPattern;
use crate::route_table::Route;

/// The compiled rules of one route table, most specific first.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    host: HostPattern,
    /// Without a trailing `/`; empty for `/`.
    prefix: String,
    /// Index of the route in the table the rules were built from.
    route: usize,
}

impl Rules {
    /// Compiles the routes' rules. Routes with a bad host or prefix, and the later of two
    /// routes with the same host and prefix, are left out and returned as errors.
    pub fn new(routes: &[Route]) -> (Rules, Vec<RuleError>) {
        let mut errors = Vec::new();
        let mut rules: Vec<Rule> = Vec::with_capacity(routes.len());
        for (index, route) in routes.iter().enumerate() {
            let host = match HostPattern::parse(route.host.as_deref()) {
                Ok(host) => host,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            if !route.path_prefix.starts_with('/') {
                errors.push(RuleError::BadPathPrefix(route.path_prefix.clone()));
                continue;
            }
            let prefix = route.path_prefix.trim_end_matches('/').to_string();
            if let Some(other) = rules.iter().find(|r| r.host == host && r.prefix == prefix) {
                errors.push(RuleError::Duplicate {
                    service: route.service.clone(),
                    other: routes[other.route].service.clone(),
                    host: route.host.clone().unwrap_or_else(|| "(any)".into()),
                    path_prefix: route.path_prefix.clone(),
                });
                continue;
            }
            rules.push(Rule { host, prefix, route: index });
        }
        // Stable: equal specificity cannot happen after the duplicate check, but keep the
        // table order as the last word anyway.
        rules.sort_by_key(|r| std::cmp::Reverse((r.host.specificity(), r.prefix.len())));
        (Rules { rules }, errors)
    }

    /// The index (in the table) of the route for this request, if any rule matches. `host`
    /// is normalized (see [`crate::host::normalize_host`]); `path` is the request's path
    /// without the query.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.rules.iter().find(|rule| rule.host.matches(host) && prefix_matches(&rule.prefix, path)).map(|rule| rule.route)
    }

    /// How many rules are in use.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule is in use.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Whether `path` lies under `prefix` (without a trailing `/`) on segment boundaries.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(service: &str, host: Option<&str>, prefix: &str) -> Route {
        let mut r = Route::new(service, prefix);
        r.host = host.map(str::to_string);
        r
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let cases = [
            ("/api/v1", "/api/v1", true),
            ("/api/v1", "/api/v1/", true),
            ("/api/v1", "/api/v1/quotes", true),
            ("/api/v1", "/api/v10", false),
            ("/api/v1", "/api", false),
            ("/api/v1", "/API/v1", false),
            ("", "/", true),
            ("", "/anything/at/all", true),
        ];
        for (prefix, path, want) in cases {
            assert_eq!(prefix_matches(prefix, path), want, "{prefix:?} {path:?}");
        }
    }

    #[test]
    fn most_specific_rule_wins() {
        let routes = vec![
            route("root", None, "/"),
            route("api", None, "/api"),
            route("api-v1", None, "/api/v1/"),
            route("wild", Some("*.example.com"), "/"),
            route("wild-deeper", Some("*.eu.example.com"), "/"),
            route("exact", Some("shop.example.com"), "/"),
            route("exact-api", Some("shop.example.com"), "/api"),
        ];
        let (rules, errors) = Rules::new(&routes);
        assert!(errors.is_empty(), "{errors:?}");
        let cases = [
            (None, "/", "root"),
            (Some("other.org"), "/x", "root"),
            (Some("other.org"), "/api", "api"),
            (Some("other.org"), "/api/v10", "api"),
            (Some("other.org"), "/api/v1", "api-v1"),
            (Some("other.org"), "/api/v1/quotes", "api-v1"),
            (Some("a.example.com"), "/api/v1", "wild"),
            (Some("a.eu.example.com"), "/", "wild-deeper"),
            (Some("example.com"), "/", "root"),
            (Some("shop.example.com"), "/", "exact"),
            (Some("shop.example.com"), "/api/x", "exact-api"),
            (Some("shop.example.com"), "/apix", "exact"),
        ];
        for (host, path, want) in cases {
            let got = rules.find(host, path).map(|i| routes[i].service.as_str());
            assert_eq!(got, Some(want), "{host:?} {path:?}");
        }
    }

    #[test]
    fn an_exact_host_falls_through_where_its_prefixes_do_not_match() {
        let routes =
            vec![route("exact-api", Some("quotes.example"), "/api"), route("wild", Some("*.example"), "/"), route("root", None, "/")];
        let (rules, _) = Rules::new(&routes);
        let cases = [
            (Some("quotes.example"), "/api/x", "exact-api"),
            (Some("quotes.example"), "/other", "wild"),
            (Some("other.org"), "/api", "root"),
        ];
        for (host, path, want) in cases {
            let got = rules.find(host, path).map(|i| routes[i].service.as_str());
            assert_eq!(got, Some(want), "{host:?} {path:?}");
        }
    }

    #[test]
    fn no_rule_matches_without_a_catch_all() {
        let routes = vec![route("api", Some("quotes.example"), "/api")];
        let (rules, _) = Rules::new(&routes);
        assert_eq!(rules.find(Some("quotes.example"), "/"), None);
        assert_eq!(rules.find(Some("other"), "/api"), None);
        assert_eq!(rules.find(None, "/api"), None);
        assert_eq!(rules.find(Some("quotes.example"), "/api"), Some(0));
    }

    #[test]
    fn bad_and_duplicate_routes_are_left_out_naming_the_other_service() {
        let routes = vec![
            route("first", Some("a.example"), "/api"),
            route("second", Some("A.example"), "/api/"),
            route("bad-prefix", None, "api"),
            route("bad-host", Some("a_b"), "/"),
        ];
        let (rules, errors) = Rules::new(&routes);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules.find(Some("a.example"), "/api"), Some(0));
        assert_eq!(errors.len(), 3);
        assert!(matches!(&errors[0], RuleError::Duplicate { service, other, .. } if service == "second" && other == "first"), "{errors:?}");
        assert_eq!(errors[1], RuleError::BadPathPrefix("api".into()));
        assert_eq!(errors[2], RuleError::BadHost("a_b".into()));
    }
}
