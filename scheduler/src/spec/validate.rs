//! The rules every [`ServiceSpec`] must meet, whichever way it arrived (TOML file or gRPC).
//!
//! Each broken rule becomes a [`FieldError`] naming the field by its TOML path
//! (`health.port`, `route[1].path_prefix`, `env.MY_VAR`) and saying what is allowed, so the
//! TOML parser can add the line and column and the gRPC API can return it as is.

use std::collections::BTreeSet;
use std::fmt;

use super::{HealthKind, ServiceSpec};

/// Largest CPU limit accepted, in millicores (256 cores).
pub const MAX_CPU_MILLIS: u32 = 256_000;
/// Smallest memory limit accepted, in MiB: below this a runtime cannot start a process.
pub const MIN_MEMORY_MIB: u32 = 4;
/// Largest memory limit accepted, in MiB (1 TiB).
pub const MAX_MEMORY_MIB: u32 = 1_048_576;
/// Largest desired task count of one service.
pub const MAX_COUNT: u32 = 10_000;
/// Autoscaler cooldowns: at least a second (the metrics' own period), at most an hour.
pub const MIN_COOLDOWN_MS: u64 = 1_000;
pub const MAX_COOLDOWN_MS: u64 = 3_600_000;
/// A route's timeout and a stopping task's drain time.
pub const MIN_ROUTE_TIMEOUT_MS: u64 = 1_000;
pub const MAX_ROUTE_TIMEOUT_MS: u64 = 3_600_000;
pub const MAX_DRAIN_MS: u64 = 600_000;
/// Longest route path prefix.
pub const MAX_PATH_PREFIX_LEN: usize = 1024;
/// Longest node label key (room for a `domain/` prefix, as Kubernetes allows).
pub const MAX_LABEL_KEY_LEN: usize = 253;
/// Longest node label value.
pub const MAX_LABEL_VALUE_LEN: usize = 63;

/// One broken rule: which field, and what is wrong with it and allowed instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's TOML path, e.g. `health.port`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}

/// Checks every rule and returns all broken ones (not just the first).
pub fn validate(spec: &ServiceSpec) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: String| errors.push(FieldError { field: field.to_string(), message });

    if let Err(why) = check_name(&spec.name) {
        fail("name", why);
    }
    if let Err(why) = check_image(&spec.image) {
        fail("image", why);
    }
    if let Some(first) = spec.command.first() {
        if first.is_empty() {
            fail("command", "the first element (the program) must not be empty".into());
        } else if first.starts_with('-') {
            fail("command", format!("the first element (the program) must not start with '-', got \"{first}\""));
        }
    }
    for key in spec.env.keys() {
        let valid = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            fail(
                &format!("env.{key}"),
                format!("\"{key}\" is not a variable name: use letters, digits and '_', not starting with a digit"),
            );
        }
    }
    if spec.cpu_millis == 0 || spec.cpu_millis > MAX_CPU_MILLIS {
        fail("cpu", format!("must be 1 to {MAX_CPU_MILLIS} millicores (1000 = one core), got {}", spec.cpu_millis));
    }
    if spec.memory_mib < MIN_MEMORY_MIB || spec.memory_mib > MAX_MEMORY_MIB {
        fail("memory", format!("must be {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB, got {}", spec.memory_mib));
    }
    let mut seen = BTreeSet::new();
    for port in &spec.ports {
        if *port == 0 {
            fail("ports", "ports must be 1 to 65535, got 0".into());
        } else if !seen.insert(*port) {
            fail("ports", format!("port {port} is listed twice"));
        }
    }
    if spec.count > MAX_COUNT {
        fail("count", format!("must be 0 to {MAX_COUNT}, got {}", spec.count));
    }
    if let Some(auto) = &spec.autoscale {
        if auto.max == 0 || auto.max > MAX_COUNT {
            fail("autoscale.max", format!("must be 1 to {MAX_COUNT}, got {}", auto.max));
        }
        if auto.min == 0 {
            fail("autoscale.min", "must be at least 1: with no task there is no CPU to call for a first one".into());
        } else if auto.min > auto.max {
            fail("autoscale.min", format!("must not exceed autoscale.max ({}), got {}", auto.max, auto.min));
        }
        for (field, ms) in
            [("autoscale.scale_out_cooldown", auto.scale_out_cooldown_ms), ("autoscale.scale_in_cooldown", auto.scale_in_cooldown_ms)]
        {
            if !(MIN_COOLDOWN_MS..=MAX_COOLDOWN_MS).contains(&ms) {
                fail(field, format!("must be 1s to 1h, got {}", super::format_duration_ms(ms)));
            }
        }
        if spec.count < auto.min || spec.count > auto.max {
            fail("count", format!("must lie between autoscale.min ({}) and autoscale.max ({}), got {}", auto.min, auto.max, spec.count));
        }
        if auto.target_cpu_percent == 0 || auto.target_cpu_percent > 100 {
            fail("autoscale.target_cpu_percent", format!("must be 1 to 100, got {}", auto.target_cpu_percent));
        }
    }
    if let Some(health) = &spec.health {
        let port_needed = matches!(health.kind, HealthKind::Http | HealthKind::Tcp);
        if port_needed && !spec.ports.contains(&health.port) {
            fail("health.port", format!("must be one of the service's ports {:?}, got {}", spec.ports, health.port));
        }
        if health.kind == HealthKind::Http && !health.path.starts_with('/') {
            fail("health.path", format!("an http check needs a path starting with '/', got \"{}\"", health.path));
        }
        if health.kind == HealthKind::Cmd && health.command.first().is_none_or(|c| c.is_empty()) {
            fail("health.command", "a cmd check needs a command, e.g. [\"/bin/check\"]".into());
        } else if health.command.first().is_some_and(|c| c.starts_with('-')) {
            fail(
                "health.command",
                format!(
                    "the program must not start with '-', got \"{}\": name the program first, e.g. [\"/bin/check\", \"--quick\"]",
                    health.command[0]
                ),
            );
        }
        if health.interval_ms == 0 {
            fail("health.interval", "must be longer than 0s".into());
        }
        if health.timeout_ms == 0 || health.timeout_ms > health.interval_ms {
            fail(
                "health.timeout",
                format!("must be longer than 0s and at most health.interval ({}ms), got {}ms", health.interval_ms, health.timeout_ms),
            );
        }
        if health.retries == 0 {
            fail("health.retries", "must be at least 1".into());
        }
    }
    if spec.deploy.min_healthy_percent > 100 {
        fail("deploy.min_healthy_percent", format!("must be 0 to 100, got {}", spec.deploy.min_healthy_percent));
    }
    if spec.deploy.max_percent < 100 || spec.deploy.max_percent > 400 {
        fail("deploy.max_percent", format!("must be 100 to 400, got {}", spec.deploy.max_percent));
    } else if spec.deploy.max_percent == 100 && spec.deploy.min_healthy_percent == 100 {
        fail("deploy.max_percent", "with min_healthy_percent = 100 it must exceed 100, or a deployment could never replace a task".into());
    }
    for (key, value) in &spec.constraints {
        if let Err(why) = check_label(key, value) {
            fail(&format!("constraints.{key}"), why);
        }
    }
    for (i, route) in spec.routes.iter().enumerate() {
        if let Err(why) = check_path_prefix(&route.path_prefix) {
            fail(&format!("route[{i}].path_prefix"), why);
        }
        if !route.host.is_empty() && check_route_host(&route.host).is_err() {
            fail(
                &format!("route[{i}].host"),
                format!(
                    "\"{}\" is not a host name: lowercase letters, digits and '-' in labels joined by '.', optionally starting with \"*.\" for every host under a domain",
                    route.host
                ),
            );
        }
        if !spec.ports.contains(&route.port) {
            fail(&format!("route[{i}].port"), format!("must be one of the service's ports {:?}, got {}", spec.ports, route.port));
        }
        if !(MIN_ROUTE_TIMEOUT_MS..=MAX_ROUTE_TIMEOUT_MS).contains(&route.timeout_ms) {
            fail(&format!("route[{i}].timeout"), format!("must be 1s to 1h, got {}", super::format_duration_ms(route.timeout_ms)));
        }
        if let Some(j) = spec.routes[..i].iter().position(|r| r.host == route.host && r.path_prefix == route.path_prefix) {
            fail(&format!("route[{i}]"), format!("has the same host and path_prefix as route[{j}]: each rule once"));
        }
    }
    if spec.drain_ms > MAX_DRAIN_MS {
        fail("drain", format!("must be 0s to 10m, got {}", super::format_duration_ms(spec.drain_ms)));
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Service names become parts of host names and file names: DNS labels.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not allowed: use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-'"
        ))
    }
}

/// A loose check of an OCI reference: the registry client does the strict parse at pull time.
fn check_image(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("must name an image, e.g. \"registry.local:5000/quotes:1.2\"".into());
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("\"{image}\" contains whitespace"));
    }
    let name = image.split('@').next().unwrap_or(image);
    let repository = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => {
            let tag_ok = !tag.is_empty() && tag.len() <= 128 && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !tag_ok {
                return Err(format!("tag \"{tag}\" is not allowed: use letters, digits, '_', '.' and '-'"));
            }
            repo
        }
        _ => name,
    };
    let path = repository
        .split_once('/')
        .map_or(repository, |(first, rest)| if first.contains(['.', ':']) || first == "localhost" { rest } else { repository });
    if path.is_empty() || path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("repository \"{path}\" must be non-empty and lowercase"));
    }
    Ok(())
}

/// A node label as a placement constraint names it (`sched-agent --labels key=value`): key
/// and value are non-empty and use only letters, digits, '.', '_', '-' and '/'; the key is at
/// most [`MAX_LABEL_KEY_LEN`] characters and the value at most [`MAX_LABEL_VALUE_LEN`].
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    let allowed = |text: &str| text.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    if key.is_empty() || key.len() > MAX_LABEL_KEY_LEN || !allowed(key) {
        return Err(format!("label key \"{key}\" is not allowed: use 1-{MAX_LABEL_KEY_LEN} letters, digits, '.', '_', '-' and '/'"));
    }
    if value.is_empty() || value.len() > MAX_LABEL_VALUE_LEN || !allowed(value) {
        return Err(format!("label value \"{value}\" is not allowed: use 1-{MAX_LABEL_VALUE_LEN} letters, digits, '.', '_', '-' and '/'"));
    }
    Ok(())
}

/// A route's host: a lowercase DNS name, or `*.` and one (a wildcard for every host under it).
fn check_route_host(host: &str) -> Result<(), ()> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if ok { Ok(()) } else { Err(()) }
}

/// A route's path prefix: `/`, or `/` and segments, each non-empty, without `.`/`..` segments,
/// a trailing `/`, a query, a fragment, whitespace or control characters.
fn check_path_prefix(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("must start with '/', got \"{path}\""));
    }
    if path.len() > MAX_PATH_PREFIX_LEN {
        return Err(format!("must be at most {MAX_PATH_PREFIX_LEN} characters, got {}", path.len()));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#') {
        return Err(format!("\"{path}\" has whitespace, a control character, '?' or '#': give the path only"));
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(format!("\"{path}\" ends with '/': write \"{}\", prefixes match whole segments", path.trim_end_matches('/')));
    }
    if path[1..].split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
        return Err(format!("\"{path}\" has an empty, '.' or '..' segment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Autoscale, Deploy, HealthCheck, Route};

    fn minimal() -> ServiceSpec {
        ServiceSpec {
            name: "quotes".into(),
            image: "127.0.0.1:5000/quotes:1.0".into(),
            command: vec![],
            env: Default::default(),
            cpu_millis: 250,
            memory_mib: 128,
            ports: vec![8080],
            count: 2,
            autoscale: None,
            health: None,
            deploy: Deploy::default(),
            routes: vec![],
            constraints: Default::default(),
            drain_ms: crate::spec::DEFAULT_DRAIN_MS,
            security: Default::default(),
        }
    }

    fn fields(spec: &ServiceSpec) -> Vec<String> {
        validate(spec).err().unwrap_or_default().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn minimal_spec_is_valid() {
        assert_eq!(validate(&minimal()), Ok(()));
    }

    #[test]
    fn names_must_be_dns_labels() {
        for bad in ["", "Quotes", "9lives", "a_b", "end-", &"x".repeat(64)] {
            let spec = ServiceSpec { name: bad.into(), ..minimal() };
            assert_eq!(fields(&spec), ["name"], "{bad:?}");
        }
    }

    #[test]
    fn images_need_lowercase_repository_and_valid_tag() {
        for good in ["busybox", "library/busybox:1.36", "localhost:5000/a/b:v1", "r.io/x@sha256:abc"] {
            assert_eq!(fields(&ServiceSpec { image: good.into(), ..minimal() }), Vec::<String>::new(), "{good}");
        }
        for bad in ["", "Busybox", "busybox:", "busy box", "r.io/x:t!g"] {
            assert_eq!(fields(&ServiceSpec { image: bad.into(), ..minimal() }), ["image"], "{bad}");
        }
    }

    #[test]
    fn reports_every_broken_rule_at_once() {
        let spec = ServiceSpec { cpu_millis: 0, memory_mib: 1, ports: vec![80, 80], ..minimal() };
        assert_eq!(fields(&spec), ["cpu", "memory", "ports"]);
    }

    #[test]
    fn health_and_routes_must_use_declared_ports() {
        let spec = ServiceSpec {
            health: Some(HealthCheck {
                kind: HealthKind::Http,
                path: "health".into(),
                port: 9090,
                command: vec![],
                interval_ms: 1000,
                timeout_ms: 2000,
                retries: 0,
                grace_ms: 0,
            }),
            routes: vec![Route { path_prefix: "/api".into(), host: "bad host".into(), port: 1, timeout_ms: 60_000 }],
            ..minimal()
        };
        assert_eq!(fields(&spec), ["health.port", "health.path", "health.timeout", "health.retries", "route[0].host", "route[0].port"]);
    }

    #[test]
    fn routes_need_a_clean_path_a_host_name_a_known_port_and_each_rule_once() {
        let route = |host: &str, path: &str, port: u16| Route { path_prefix: path.into(), host: host.into(), port, timeout_ms: 60_000 };
        let with = |routes: Vec<Route>| ServiceSpec { routes, ..minimal() };
        let ok = [
            route("", "/", 8080),
            route("quotes.example", "/api/v1", 8080),
            route("*.example.com", "/a-b/c_d.e/~x", 8080),
            route("xn--bcher-kva.example", "/", 8080),
        ];
        assert_eq!(fields(&with(ok.to_vec())), Vec::<String>::new());
        // (host, path_prefix) -> the field refused
        let bad = [
            ("", "api", "route[0].path_prefix"),
            ("", "/api/", "route[0].path_prefix"),
            ("", "/api//v1", "route[0].path_prefix"),
            ("", "/api/../etc", "route[0].path_prefix"),
            ("", "/api?x=1", "route[0].path_prefix"),
            ("", "/a b", "route[0].path_prefix"),
            ("Quotes.Example", "/", "route[0].host"),
            ("quotes..example", "/", "route[0].host"),
            ("*", "/", "route[0].host"),
            ("a.*.example", "/", "route[0].host"),
            ("-quotes.example", "/", "route[0].host"),
            ("quotes.example:8080", "/", "route[0].host"),
        ];
        for (host, path, field) in bad {
            assert_eq!(fields(&with(vec![route(host, path, 8080)])), [field], "host {host:?} path {path:?}");
        }
        let message = validate(&with(vec![route("", "/api/", 8080)])).unwrap_err()[0].message.clone();
        assert!(message.contains("write \"/api\""), "{message}");
        assert_eq!(fields(&with(vec![route("", "/", 9999)])), ["route[0].port"]);
        let twice = vec![route("q.example", "/api", 8080), route("", "/api", 8080), route("q.example", "/api", 8080)];
        let errors = validate(&with(twice)).unwrap_err();
        assert_eq!(errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["route[2]"]);
        assert!(errors[0].message.contains("same host and path_prefix as route[0]"), "{}", errors[0].message);
        let slow = Route { timeout_ms: 0, ..route("", "/", 8080) };
        assert_eq!(fields(&with(vec![slow])), ["route[0].timeout"]);
        assert_eq!(fields(&ServiceSpec { drain_ms: 600_001, ..minimal() }), ["drain"]);
    }

    #[test]
    fn a_program_never_starts_with_a_dash() {
        let check = |command: &[&str]| HealthCheck {
            kind: HealthKind::Cmd,
            path: String::new(),
            port: 0,
            command: command.iter().map(|c| c.to_string()).collect(),
            interval_ms: 1000,
            timeout_ms: 1000,
            retries: 1,
            grace_ms: 0,
        };
        assert_eq!(fields(&ServiceSpec { health: Some(check(&["--help"])), ..minimal() }), ["health.command"]);
        assert_eq!(fields(&ServiceSpec { health: Some(check(&["--cap", "CAP_SYS_ADMIN", "sh"])), ..minimal() }), ["health.command"]);
        assert_eq!(fields(&ServiceSpec { health: Some(check(&["/bin/check", "--quick"])), ..minimal() }), Vec::<String>::new());
        assert_eq!(fields(&ServiceSpec { command: vec!["-x".into()], ..minimal() }), ["command"]);
    }

    #[test]
    fn count_must_lie_within_autoscale_bounds() {
        let auto = Autoscale { min: 3, max: 5, target_cpu_percent: 70, scale_out_cooldown_ms: 1_000, scale_in_cooldown_ms: 1_000 };
        let spec = ServiceSpec { count: 2, autoscale: Some(auto), ..minimal() };
        let errors = validate(&spec).unwrap_err();
        assert_eq!(errors[0].field, "count");
        assert!(errors[0].message.contains("between autoscale.min (3) and autoscale.max (5)"));
    }

    #[test]
    fn autoscale_bounds_targets_and_cooldowns_are_checked() {
        let with = |min: u32, max: u32, target: u32, out_ms: u64, in_ms: u64| ServiceSpec {
            count: min.max(1).min(max.max(1)),
            autoscale: Some(Autoscale { min, max, target_cpu_percent: target, scale_out_cooldown_ms: out_ms, scale_in_cooldown_ms: in_ms }),
            ..minimal()
        };
        // (min, max, target, out, in) -> the fields refused
        type Bounds = (u32, u32, u32, u64, u64);
        let table: [(Bounds, &[&str]); 8] = [
            ((2, 8, 70, 5_000, 20_000), &[]),
            ((1, 1, 1, 1_000, 3_600_000), &[]),
            ((0, 8, 70, 5_000, 20_000), &["autoscale.min"]),
            ((9, 8, 70, 5_000, 20_000), &["count", "autoscale.min"]),
            ((2, 8, 0, 5_000, 20_000), &["autoscale.target_cpu_percent"]),
            ((2, 8, 101, 5_000, 20_000), &["autoscale.target_cpu_percent"]),
            ((2, 8, 70, 0, 20_000), &["autoscale.scale_out_cooldown"]),
            ((2, 8, 70, 999, 3_600_001), &["autoscale.scale_out_cooldown", "autoscale.scale_in_cooldown"]),
        ];
        for ((min, max, target, out_ms, in_ms), want) in table {
            let mut got = fields(&with(min, max, target, out_ms, in_ms));
            got.sort();
            let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(got, want, "min {min} max {max} target {target} cooldowns {out_ms}/{in_ms}");
        }
        let spec = with(2, 8, 70, 0, 20_000);
        let message = validate(&spec).unwrap_err()[0].message.clone();
        assert_eq!(message, "must be 1s to 1h, got 0s");
    }

    #[test]
    fn deploy_that_can_never_progress_is_rejected() {
        let spec = ServiceSpec { deploy: Deploy { min_healthy_percent: 100, max_percent: 100 }, ..minimal() };
        assert_eq!(fields(&spec), ["deploy.max_percent"]);
    }

    #[test]
    fn constraints_need_label_shaped_keys_and_values() {
        let with = |pairs: &[(&str, &str)]| ServiceSpec {
            constraints: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..minimal()
        };
        let good = [("zone", "eu-1"), ("disk", "ssd"), ("sched.io/gpu", "nvidia_a100"), ("k", &"v".repeat(63))];
        assert_eq!(fields(&with(&good)), Vec::<String>::new());
        let long_value = "v".repeat(64);
        let long_key = "k".repeat(254);
        for (key, value) in
            [("", "a"), ("my zone", "a"), ("zone", ""), ("zone", "eu 1"), ("zone", "a=b"), ("zone", &long_value), (&long_key, "a")]
        {
            assert_eq!(fields(&with(&[(key, value)])), [format!("constraints.{key}")], "{key:?} = {value:?}");
        }
        let errors = validate(&with(&[("zone", "eu 1")])).unwrap_err();
        assert!(errors[0].message.contains("label value \"eu 1\" is not allowed"), "{}", errors[0].message);
    }
}
