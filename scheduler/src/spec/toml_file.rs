//! `service.toml` -> [`ServiceSpec`], with errors that point into the file.
//!
//! Two passes: serde (with `deny_unknown_fields`, so a typo such as `cpus` is an error that
//! lists the allowed keys) reads the file into raw structs whose values keep their byte spans;
//! then defaults are filled in, durations parsed, and [`validate`] runs. Every error of either
//! pass is reported with the field, its line and column, and what is allowed. The format is
//! documented in `docs/service-toml.md`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;

// Health probe timing when the `[health]` table leaves it out: the same values the agents read
// an unset field as.
use proto::defaults::{HEALTH_INTERVAL_MS, HEALTH_RETRIES, HEALTH_TIMEOUT_MS};
use serde::Deserialize;
use toml::Spanned;

use super::{
    Autoscale, DEFAULT_CPU_MILLIS, DEFAULT_MEMORY_MIB, Deploy, HealthCheck, HealthKind, Route, Seccomp, Security, ServiceSpec,
    UserNamespace, parse_duration_ms, validate,
};

/// Autoscaler cooldowns when the `[autoscale]` table leaves them out (30 s and 300 s).
const DEFAULT_SCALE_OUT_COOLDOWN_MS: u64 = 30_000;
const DEFAULT_SCALE_IN_COOLDOWN_MS: u64 = 300_000;

/// Why a service file was rejected: one entry per problem, in file order.
#[derive(Debug, thiserror::Error)]
pub struct SpecFileError {
    /// The file name used in messages.
    pub file: String,
    pub problems: Vec<Problem>,
}

/// One problem of a service file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The TOML path of the field (`health.port`), when known.
    pub field: Option<String>,
    /// 1-based line and column of the offending value.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SpecFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{} is not a valid service file ({n} problem{}):", self.file, if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  {}:{}:{}: ", self.file, p.line, p.column)?;
            if let Some(field) = &p.field {
                write!(f, "`{field}`: ")?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    image: Spanned<String>,
    command: Option<Spanned<Vec<String>>>,
    env: Option<Spanned<BTreeMap<Spanned<String>, String>>>,
    cpu: Option<Spanned<u32>>,
    memory: Option<Spanned<u32>>,
    ports: Option<Spanned<Vec<u16>>>,
    count: Option<Spanned<u32>>,
    autoscale: Option<Spanned<RawAutoscale>>,
    health: Option<Spanned<RawHealth>>,
    deploy: Option<Spanned<RawDeploy>>,
    route: Option<Vec<Spanned<RawRoute>>>,
    drain: Option<Spanned<String>>,
    /// Values are read as any TOML value so a number or a nested table (an unquoted dotted
    /// key) is reported under `constraints.<key>` instead of as a bare serde type error.
    constraints: Option<Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>>,
    security: Option<Spanned<RawSecurity>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    /// Read as a string so an unknown word is reported under `security.seccomp`.
    seccomp: Option<Spanned<String>>,
    /// Read as a string so an unknown word is reported under `security.userns`.
    userns: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutoscale {
    min: Option<Spanned<u32>>,
    max: Spanned<u32>,
    target_cpu_percent: Spanned<u32>,
    scale_out_cooldown: Option<Spanned<String>>,
    scale_in_cooldown: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    kind: Spanned<HealthKind>,
    path: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    command: Option<Spanned<Vec<String>>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<u32>>,
    grace: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeploy {
    min_healthy_percent: Option<Spanned<u32>>,
    max_percent: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path_prefix: Spanned<String>,
    host: Option<Spanned<String>>,
    port: Spanned<u16>,
    timeout: Option<Spanned<String>>,
}

/// Where each field's value sits in the file, to locate validation errors.
#[derive(Default)]
struct Spans(HashMap<String, Range<usize>>);

impl Spans {
    fn take<T>(&mut self, field: &str, value: Spanned<T>) -> T {
        self.0.insert(field.to_string(), value.span());
        value.into_inner()
    }

    fn take_opt<T>(&mut self, field: &str, value: Option<Spanned<T>>) -> Option<T> {
        value.map(|v| self.take(field, v))
    }

    /// The span of `field`, else of its nearest enclosing table, else the file's start.
    fn find(&self, field: &str) -> Range<usize> {
        let mut path = field;
        loop {
            if let Some(span) = self.0.get(path) {
                return span.clone();
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return 0..0,
            }
        }
    }
}

/// Parses and validates a service file. `file` names it in messages.
pub fn parse_service_toml(file: &str, text: &str) -> Result<ServiceSpec, SpecFileError> {
    let located = |span: Range<usize>, field: Option<String>, message: String| {
        let (line, column) = line_column(text, span.start);
        Problem { field, line, column, message }
    };
    let fail = |problems: Vec<Problem>| SpecFileError { file: file.to_string(), problems };

    let raw: RawService = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        let key = text.get(span.clone()).filter(|k| is_bare_key(k)).map(str::to_string);
        fail(vec![located(span, key, message)])
    })?;

    let mut spans = Spans::default();
    let mut problems = Vec::new();
    let mut duration = |spans: &mut Spans, field: &str, value: Option<Spanned<String>>, default_ms: u64| {
        let Some(value) = value else { return default_ms };
        let span = value.span();
        spans.0.insert(field.to_string(), span.clone());
        parse_duration_ms(value.get_ref()).unwrap_or_else(|why| {
            problems.push(located(span, Some(field.to_string()), why));
            // Validate the rest as if the default had been written, so one typo does not
            // cascade into errors about the fields compared with it.
            default_ms
        })
    };

    let autoscale = raw.autoscale.map(|a| {
        spans.0.insert("autoscale".into(), a.span());
        let a = a.into_inner();
        let max = spans.take("autoscale.max", a.max);
        Autoscale {
            min: spans.take_opt("autoscale.min", a.min).unwrap_or(1),
            max,
            target_cpu_percent: spans.take("autoscale.target_cpu_percent", a.target_cpu_percent),
            scale_out_cooldown_ms: duration(
                &mut spans,
                "autoscale.scale_out_cooldown",
                a.scale_out_cooldown,
                DEFAULT_SCALE_OUT_COOLDOWN_MS,
            ),
            scale_in_cooldown_ms: duration(&mut spans, "autoscale.scale_in_cooldown", a.scale_in_cooldown, DEFAULT_SCALE_IN_COOLDOWN_MS),
        }
    });
    let health = raw.health.map(|h| {
        spans.0.insert("health".into(), h.span());
        let h = h.into_inner();
        HealthCheck {
            kind: spans.take("health.kind", h.kind),
            path: spans.take_opt("health.path", h.path).unwrap_or_default(),
            port: spans.take_opt("health.port", h.port).unwrap_or(0),
            command: spans.take_opt("health.command", h.command).unwrap_or_default(),
            interval_ms: duration(&mut spans, "health.interval", h.interval, HEALTH_INTERVAL_MS),
            timeout_ms: duration(&mut spans, "health.timeout", h.timeout, HEALTH_TIMEOUT_MS),
            retries: spans.take_opt("health.retries", h.retries).unwrap_or(HEALTH_RETRIES),
            grace_ms: duration(&mut spans, "health.grace", h.grace, 0),
        }
    });
    let deploy = raw.deploy.map_or_else(Deploy::default, |d| {
        spans.0.insert("deploy".into(), d.span());
        let d = d.into_inner();
        let defaults = Deploy::default();
        Deploy {
            min_healthy_percent: spans
                .take_opt("deploy.min_healthy_percent", d.min_healthy_percent)
                .unwrap_or(defaults.min_healthy_percent),
            max_percent: spans.take_opt("deploy.max_percent", d.max_percent).unwrap_or(defaults.max_percent),
        }
    });
    let routes = raw
        .route
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            spans.0.insert(format!("route[{i}]"), r.span());
            let r = r.into_inner();
            Route {
                path_prefix: spans.take(&format!("route[{i}].path_prefix"), r.path_prefix),
                host: spans.take_opt(&format!("route[{i}].host"), r.host).unwrap_or_default(),
                port: spans.take(&format!("route[{i}].port"), r.port),
                timeout_ms: duration(&mut spans, &format!("route[{i}].timeout"), r.timeout, super::DEFAULT_ROUTE_TIMEOUT_MS),
            }
        })
        .collect();
    let drain_ms = duration(&mut spans, "drain", raw.drain, super::DEFAULT_DRAIN_MS);
    let env = raw.env.map_or_else(BTreeMap::new, |env| {
        spans.0.insert("env".into(), env.span());
        env.into_inner().into_iter().map(|(k, v)| (spans.take(&format!("env.{}", k.get_ref()), k), v)).collect()
    });
    let constraints = raw.constraints.map_or_else(BTreeMap::new, |table| {
        spans.0.insert("constraints".into(), table.span());
        let mut constraints = BTreeMap::new();
        for (key, value) in table.into_inner() {
            let field = format!("constraints.{}", key.get_ref());
            let key = spans.take(&field, key);
            let value_span = value.span();
            match value.into_inner() {
                toml::Value::String(value) => {
                    constraints.insert(key, value);
                }
                other => problems.push(located(
                    value_span,
                    Some(field),
                    format!(
                        "must be a string (the label value), got {}; quote a key that has '.' or '/', e.g. \"disk.type\" = \"ssd\"",
                        other.type_str()
                    ),
                )),
            }
        }
        constraints
    });
    let security = raw.security.map_or_else(Security::default, |table| {
        spans.0.insert("security".into(), table.span());
        let table = table.into_inner();
        let userns = match table.userns {
            None => UserNamespace::Auto,
            Some(word) => {
                let span = word.span();
                let word = spans.take("security.userns", word);
                UserNamespace::parse(&word).unwrap_or_else(|| {
                    problems.push(located(
                        span,
                        Some("security.userns".into()),
                        format!("must be \"auto\" (a user namespace of its own) or \"host\" (root in the task is root on the host), got {word:?}"),
                    ));
                    UserNamespace::Auto
                })
            }
        };
        let seccomp = match table.seccomp {
            None => Seccomp::Default,
            Some(word) => {
                let span = word.span();
                let word = spans.take("security.seccomp", word);
                Seccomp::parse(&word).unwrap_or_else(|| {
                    problems.push(located(
                        span,
                        Some("security.seccomp".into()),
                        format!("must be \"default\" (Docker's default profile) or \"unconfined\" (no filter), got {word:?}"),
                    ));
                    Seccomp::Default
                })
            }
        };
        Security { seccomp, userns }
    });
    let count = match raw.count {
        Some(c) => spans.take("count", c),
        None => autoscale.as_ref().map_or(1, |a| a.min),
    };
    let spec = ServiceSpec {
        name: spans.take("name", raw.name),
        image: spans.take("image", raw.image),
        command: spans.take_opt("command", raw.command).unwrap_or_default(),
        env,
        cpu_millis: spans.take_opt("cpu", raw.cpu).unwrap_or(DEFAULT_CPU_MILLIS),
        memory_mib: spans.take_opt("memory", raw.memory).unwrap_or(DEFAULT_MEMORY_MIB),
        ports: spans.take_opt("ports", raw.ports).unwrap_or_default(),
        count,
        autoscale,
        health,
        deploy,
        routes,
        constraints,
        drain_ms,
        security,
    };
    if let Err(errors) = validate(&spec) {
        let reported: Vec<Option<String>> = problems.iter().map(|p| p.field.clone()).collect();
        problems.extend(
            errors
                .into_iter()
                .filter(|e| !reported.contains(&Some(e.field.clone())))
                .map(|e| located(spans.find(&e.field), Some(e.field), e.message)),
        );
    }
    if problems.is_empty() {
        Ok(spec)
    } else {
        problems.sort_by_key(|p| (p.line, p.column));
        Err(fail(problems))
    }
}

fn is_bare_key(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/quotes/service.toml");

    fn problems(text: &str) -> Vec<Problem> {
        parse_service_toml("service.toml", text).unwrap_err().problems
    }

    #[test]
    fn parses_the_documented_example() {
        let spec = parse_service_toml("service.toml", EXAMPLE).unwrap();
        assert_eq!(spec.name, "quotes");
        assert_eq!(spec.command, ["/bin/httpd", "-f", "-p", "8080"]);
        assert_eq!(spec.env.get("GREETING").map(String::as_str), Some("hi"));
        assert_eq!((spec.cpu_millis, spec.memory_mib, spec.count), (250, 128, 2));
        assert_eq!(spec.ports, [8080]);
        let auto = spec.autoscale.unwrap();
        assert_eq!((auto.min, auto.max, auto.target_cpu_percent), (2, 50, 70));
        assert_eq!((auto.scale_out_cooldown_ms, auto.scale_in_cooldown_ms), (10_000, 60_000));
        let health = spec.health.unwrap();
        assert_eq!(health.kind, HealthKind::Http);
        assert_eq!((health.path.as_str(), health.port, health.retries), ("/health", 8080, 3));
        assert_eq!((health.interval_ms, health.timeout_ms, health.grace_ms), (5_000, 2_000, 10_000));
        assert_eq!(spec.deploy, Deploy { min_healthy_percent: 100, max_percent: 200 });
        assert_eq!(spec.routes, [Route { path_prefix: "/".into(), host: String::new(), port: 8080, timeout_ms: 60_000 }]);
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let spec = parse_service_toml("s.toml", "name = \"a\"\nimage = \"busybox\"\n").unwrap();
        assert_eq!((spec.cpu_millis, spec.memory_mib, spec.count), (DEFAULT_CPU_MILLIS, DEFAULT_MEMORY_MIB, 1));
        assert!(spec.health.is_none() && spec.autoscale.is_none() && spec.routes.is_empty());
    }

    #[test]
    fn unknown_key_is_an_error_that_lists_allowed_keys() {
        let p = problems("name = \"a\"\nimage = \"busybox\"\ncpus = 100\n");
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].line, p[0].column), (3, 1));
        assert_eq!(p[0].field.as_deref(), Some("cpus"));
        assert!(p[0].message.contains("unknown field `cpus`"), "{}", p[0].message);
        assert!(p[0].message.contains("`cpu`"), "{}", p[0].message);
    }

    #[test]
    fn unknown_key_in_a_table_is_an_error() {
        let p = problems("name = \"a\"\nimage = \"busybox\"\nports = [80]\n[health]\nkind = \"tcp\"\nport = 80\nintervall = \"1s\"\n");
        assert_eq!((p[0].line, p[0].column), (7, 1));
        assert!(p[0].message.contains("unknown field `intervall`"));
    }

    #[test]
    fn wrong_type_names_line_and_column() {
        let p = problems("name = \"a\"\nimage = \"busybox\"\nmemory = \"lots\"\n");
        assert_eq!((p[0].line, p[0].column), (3, 10));
        assert!(p[0].message.contains("expected u32"), "{}", p[0].message);
    }

    #[test]
    fn rule_violations_point_at_their_values() {
        let text = "name = \"Quotes\"\nimage = \"busybox\"\nports = [8080]\ncount = 3\n[health]\nkind = \"http\"\npath = \"/h\"\nport = 9090\ninterval = \"5\"\n";
        let p = problems(text);
        let summary: Vec<_> = p.iter().map(|p| (p.field.clone().unwrap(), p.line, p.column)).collect();
        assert_eq!(summary, [("name".to_string(), 1, 8), ("health.port".to_string(), 8, 8), ("health.interval".to_string(), 9, 12)]);
        assert!(p[2].message.contains("no unit"));
    }

    #[test]
    fn seccomp_is_default_unless_the_file_opts_out_and_unknown_words_name_the_key() {
        let base = "name = \"a\"\nimage = \"busybox\"\n";
        let seccomp = |extra: &str| parse_service_toml("s", &format!("{base}{extra}")).map(|s| s.security.seccomp);
        assert_eq!(seccomp("").unwrap(), Seccomp::Default);
        assert_eq!(seccomp("[security]\n").unwrap(), Seccomp::Default);
        assert_eq!(seccomp("[security]\nseccomp = \"default\"\n").unwrap(), Seccomp::Default);
        assert_eq!(seccomp("[security]\nseccomp = \"unconfined\"\n").unwrap(), Seccomp::Unconfined);
        let p = problems(&format!("{base}[security]\nseccomp = \"Unconfined\"\n"));
        assert_eq!((p[0].field.as_deref(), p[0].line, p[0].column), (Some("security.seccomp"), 4, 11));
        assert!(p[0].message.contains("\"unconfined\"") && p[0].message.contains("\"Unconfined\""), "{}", p[0].message);
        let p = problems(&format!("{base}[security]\nseccomp_profile = \"x\"\n"));
        assert!(p[0].message.contains("seccomp"), "{}", p[0].message);
    }

    #[test]
    fn tasks_get_their_own_user_namespace_unless_the_file_says_host() {
        let base = "name = \"a\"\nimage = \"busybox\"\n";
        let userns = |extra: &str| parse_service_toml("s", &format!("{base}{extra}")).map(|s| s.security.userns);
        assert_eq!(userns("").unwrap(), UserNamespace::Auto);
        assert_eq!(userns("[security]\nseccomp = \"unconfined\"\n").unwrap(), UserNamespace::Auto);
        assert_eq!(userns("[security]\nuserns = \"auto\"\n").unwrap(), UserNamespace::Auto);
        assert_eq!(userns("[security]\nuserns = \"host\"\n").unwrap(), UserNamespace::Host);
        let p = problems(&format!("{base}[security]\nuserns = \"keep-id\"\n"));
        assert_eq!((p[0].field.as_deref(), p[0].line, p[0].column), (Some("security.userns"), 4, 10));
        assert!(p[0].message.contains("\"host\"") && p[0].message.contains("\"keep-id\""), "{}", p[0].message);
    }

    #[test]
    fn invalid_kind_lists_the_allowed_kinds() {
        let p = problems("name = \"a\"\nimage = \"busybox\"\n[health]\nkind = \"grpc\"\n");
        assert_eq!(p[0].line, 4);
        assert!(p[0].message.contains("`http`") && p[0].message.contains("`cmd`"), "{}", p[0].message);
    }

    #[test]
    fn syntax_error_is_located() {
        let p = problems("name = \"a\"\nimage = busybox\n");
        assert_eq!(p[0].line, 2);
    }

    #[test]
    fn display_lists_every_problem_with_position() {
        let err = parse_service_toml("q.toml", "name = \"a\"\nimage = \"busybox\"\ncpu = 0\nmemory = 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("q.toml is not a valid service file (2 problems):"), "{text}");
        assert!(text.contains("q.toml:3:7: `cpu`: must be 1 to 256000 millicores"), "{text}");
        assert!(text.contains("q.toml:4:10: `memory`: must be 4 to 1048576 MiB, got 1"), "{text}");
    }

    const HEAD: &str = "name = \"a\"\nimage = \"busybox\"\n";

    #[test]
    fn constraints_are_labels_every_one_of_which_a_node_must_have() {
        let text = format!("{HEAD}constraints = {{ zone = \"eu-1\", disk = \"ssd\", \"sched.io/gpu\" = \"a100\" }}\n");
        let spec = parse_service_toml("s.toml", &text).unwrap();
        let pairs: Vec<_> = spec.constraints.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(pairs, [("disk", "ssd"), ("sched.io/gpu", "a100"), ("zone", "eu-1")]);
        let none = parse_service_toml("s.toml", HEAD).unwrap();
        assert!(none.constraints.is_empty());
    }

    #[test]
    fn constraint_with_a_bad_key_or_value_points_at_it() {
        let p = problems(&format!("{HEAD}constraints = {{ zone = \"eu 1\" }}\n"));
        let summary: Vec<_> = p.iter().map(|p| (p.field.clone().unwrap(), p.line, p.column)).collect();
        assert_eq!(summary, [("constraints.zone".to_string(), 3, 17)]);
        assert!(p[0].message.contains("label value \"eu 1\" is not allowed"), "{}", p[0].message);

        let p = problems(&format!("{HEAD}[constraints]\n\"my zone\" = \"a\"\n"));
        assert_eq!((p[0].field.as_deref(), p[0].line, p[0].column), (Some("constraints.my zone"), 4, 1));
        assert!(p[0].message.contains("label key \"my zone\" is not allowed"), "{}", p[0].message);
    }

    #[test]
    fn constraint_of_the_wrong_type_is_an_error() {
        let p = problems(&format!("{HEAD}constraints = {{ zone = 1 }}\n"));
        assert_eq!((p[0].field.as_deref(), p[0].line, p[0].column), (Some("constraints.zone"), 3, 24));
        assert!(p[0].message.contains("must be a string (the label value), got integer"), "{}", p[0].message);

        // An unquoted dotted key makes a nested table: the message says to quote it.
        let p = problems(&format!("{HEAD}constraints = {{ disk.type = \"ssd\" }}\n"));
        assert_eq!(p[0].field.as_deref(), Some("constraints.disk"));
        assert!(p[0].message.contains("quote a key"), "{}", p[0].message);

        let p = problems(&format!("{HEAD}constraints = \"zone=b\"\n"));
        assert_eq!(p[0].line, 3);
        assert!(p[0].message.contains("expected a map"), "{}", p[0].message);
    }
}
