//! Conversions between [`ServiceSpec`] and the wire type `sched.v1.ServiceSpec`.
//!
//! `from_proto` is where a gRPC request enters the domain: it checks what the wire type cannot
//! express (ports above 65535, an unspecified health kind) and then runs [`validate`].

use proto::sched::v1 as pb;

use super::{Autoscale, Deploy, FieldError, HealthCheck, HealthKind, Route, Seccomp, Security, ServiceSpec, UserNamespace, validate};

impl ServiceSpec {
    /// Builds and validates a spec from a request. Errors name fields by their TOML path.
    pub fn from_proto(spec: pb::ServiceSpec) -> Result<ServiceSpec, Vec<FieldError>> {
        let mut errors = Vec::new();
        let ports = spec.ports.iter().map(|p| port(&mut errors, "ports", *p)).collect();
        let health = match spec.health {
            None => None,
            Some(h) => {
                let kind = match pb::HealthKind::try_from(h.kind) {
                    Ok(pb::HealthKind::Http) => Some(HealthKind::Http),
                    Ok(pb::HealthKind::Tcp) => Some(HealthKind::Tcp),
                    Ok(pb::HealthKind::Cmd) => Some(HealthKind::Cmd),
                    _ => None,
                };
                let port = port(&mut errors, "health.port", h.port);
                match kind {
                    Some(kind) => Some(HealthCheck {
                        kind,
                        path: h.path,
                        port,
                        command: h.command,
                        interval_ms: h.interval_ms,
                        timeout_ms: h.timeout_ms,
                        retries: h.retries,
                        grace_ms: h.grace_ms,
                    }),
                    None => {
                        errors.push(FieldError { field: "health.kind".into(), message: "must be HTTP, TCP or CMD".into() });
                        None
                    }
                }
            }
        };
        let routes = spec
            .routes
            .into_iter()
            .enumerate()
            .map(|(i, r)| Route {
                path_prefix: r.path_prefix,
                host: r.host,
                port: port(&mut errors, &format!("route[{i}].port"), r.port),
                timeout_ms: r.timeout_ms.unwrap_or(super::DEFAULT_ROUTE_TIMEOUT_MS),
            })
            .collect();
        let security = match spec.security {
            None => Security::default(),
            Some(s) => Security {
                seccomp: match pb::SeccompProfile::try_from(s.seccomp) {
                    Ok(pb::SeccompProfile::Unspecified | pb::SeccompProfile::Default) => Seccomp::Default,
                    Ok(pb::SeccompProfile::Unconfined) => Seccomp::Unconfined,
                    Err(_) => {
                        errors.push(FieldError {
                            field: "security.seccomp".into(),
                            message: format!("must be DEFAULT or UNCONFINED, got {}", s.seccomp),
                        });
                        Seccomp::Default
                    }
                },
                userns: match pb::UserNamespaceMode::try_from(s.userns) {
                    Ok(pb::UserNamespaceMode::Unspecified | pb::UserNamespaceMode::Auto) => UserNamespace::Auto,
                    Ok(pb::UserNamespaceMode::Host) => UserNamespace::Host,
                    Err(_) => {
                        errors.push(FieldError {
                            field: "security.userns".into(),
                            message: format!("must be AUTO or HOST, got {}", s.userns),
                        });
                        UserNamespace::Auto
                    }
                },
            },
        };
        let domain = ServiceSpec {
            name: spec.name,
            image: spec.image,
            command: spec.command,
            env: spec.env.into_iter().collect(),
            cpu_millis: spec.cpu_millis,
            memory_mib: spec.memory_mib,
            ports,
            count: spec.count,
            autoscale: spec.autoscale.map(|a| Autoscale {
                min: a.min,
                max: a.max,
                target_cpu_percent: a.target_cpu_percent,
                scale_out_cooldown_ms: a.scale_out_cooldown_ms,
                scale_in_cooldown_ms: a.scale_in_cooldown_ms,
            }),
            health,
            deploy: spec
                .deploy
                .map_or_else(Deploy::default, |d| Deploy { min_healthy_percent: d.min_healthy_percent, max_percent: d.max_percent }),
            routes,
            constraints: spec.constraints.into_iter().collect(),
            drain_ms: spec.drain_ms.unwrap_or(super::DEFAULT_DRAIN_MS),
            security,
        };
        if let Err(more) = validate(&domain) {
            // A field already reported (an out-of-range port read as 0) is not reported twice.
            let reported: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
            errors.extend(more.into_iter().filter(|e| !reported.contains(&e.field)));
        }
        if errors.is_empty() { Ok(domain) } else { Err(errors) }
    }

    /// The wire form of this spec.
    pub fn to_proto(&self) -> pb::ServiceSpec {
        pb::ServiceSpec {
            name: self.name.clone(),
            image: self.image.clone(),
            command: self.command.clone(),
            env: self.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            cpu_millis: self.cpu_millis,
            memory_mib: self.memory_mib,
            ports: self.ports.iter().map(|p| u32::from(*p)).collect(),
            count: self.count,
            autoscale: self.autoscale.as_ref().map(|a| pb::Autoscale {
                min: a.min,
                max: a.max,
                target_cpu_percent: a.target_cpu_percent,
                scale_out_cooldown_ms: a.scale_out_cooldown_ms,
                scale_in_cooldown_ms: a.scale_in_cooldown_ms,
            }),
            health: self.health.as_ref().map(|h| pb::HealthCheck {
                kind: match h.kind {
                    HealthKind::Http => pb::HealthKind::Http,
                    HealthKind::Tcp => pb::HealthKind::Tcp,
                    HealthKind::Cmd => pb::HealthKind::Cmd,
                } as i32,
                path: h.path.clone(),
                port: u32::from(h.port),
                command: h.command.clone(),
                interval_ms: h.interval_ms,
                timeout_ms: h.timeout_ms,
                retries: h.retries,
                grace_ms: h.grace_ms,
            }),
            deploy: Some(pb::Deploy { min_healthy_percent: self.deploy.min_healthy_percent, max_percent: self.deploy.max_percent }),
            routes: self
                .routes
                .iter()
                .map(|r| pb::Route {
                    path_prefix: r.path_prefix.clone(),
                    host: r.host.clone(),
                    port: u32::from(r.port),
                    timeout_ms: Some(r.timeout_ms),
                })
                .collect(),
            constraints: self.constraints.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            drain_ms: Some(self.drain_ms),
            security: Some(pb::Security {
                seccomp: match self.security.seccomp {
                    Seccomp::Default => pb::SeccompProfile::Default,
                    Seccomp::Unconfined => pb::SeccompProfile::Unconfined,
                } as i32,
                userns: match self.security.userns {
                    UserNamespace::Auto => pb::UserNamespaceMode::Auto,
                    UserNamespace::Host => pb::UserNamespaceMode::Host,
                } as i32,
            }),
        }
    }
}

/// A wire port as u16; out of range is recorded as an error on `field`.
fn port(errors: &mut Vec<FieldError>, field: &str, value: u32) -> u16 {
    u16::try_from(value).unwrap_or_else(|_| {
        errors.push(FieldError { field: field.into(), message: format!("ports must be 1 to 65535, got {value}") });
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_service_toml;

    #[test]
    fn round_trips_the_example() {
        let spec = parse_service_toml("s", include_str!("../../../examples/quotes/service.toml")).unwrap();
        assert_eq!(ServiceSpec::from_proto(spec.to_proto()), Ok(spec));
    }

    #[test]
    fn round_trips_constraints_and_validates_them() {
        let text = "name = \"a\"\nimage = \"busybox\"\nconstraints = { zone = \"b\", disk = \"ssd\" }\n";
        let spec = parse_service_toml("s", text).unwrap();
        let mut wire = spec.to_proto();
        assert_eq!(wire.constraints.get("zone").map(String::as_str), Some("b"));
        assert_eq!(ServiceSpec::from_proto(wire.clone()), Ok(spec));
        wire.constraints.insert("zone".into(), "".into());
        let fields: Vec<_> = ServiceSpec::from_proto(wire).unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["constraints.zone"]);
    }

    #[test]
    fn round_trips_the_seccomp_opt_out_and_reads_its_absence_as_default() {
        let text = "name = \"a\"\nimage = \"busybox\"\n[security]\nseccomp = \"unconfined\"\n";
        let spec = parse_service_toml("s", text).unwrap();
        assert_eq!(spec.security.seccomp, Seccomp::Unconfined);
        let wire = spec.to_proto();
        assert_eq!(ServiceSpec::from_proto(wire.clone()), Ok(spec));
        // An older client sends no security message (or an unspecified profile): the default.
        for security in [None, Some(pb::Security { seccomp: 0, userns: 0 })] {
            let old = pb::ServiceSpec { security, ..wire.clone() };
            assert_eq!(ServiceSpec::from_proto(old).unwrap().security.seccomp, Seccomp::Default);
        }
        let unknown = pb::ServiceSpec { security: Some(pb::Security { seccomp: 7, userns: 0 }), ..wire };
        let fields: Vec<_> = ServiceSpec::from_proto(unknown).unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["security.seccomp"]);
    }

    #[test]
    fn round_trips_the_userns_opt_out_and_reads_its_absence_as_auto() {
        let text = "name = \"a\"\nimage = \"busybox\"\n[security]\nuserns = \"host\"\n";
        let spec = parse_service_toml("s", text).unwrap();
        assert_eq!(spec.security.userns, UserNamespace::Host);
        let wire = spec.to_proto();
        assert_eq!(ServiceSpec::from_proto(wire.clone()), Ok(spec));
        for security in [None, Some(pb::Security { seccomp: 0, userns: 0 })] {
            let old = pb::ServiceSpec { security, ..wire.clone() };
            assert_eq!(ServiceSpec::from_proto(old).unwrap().security.userns, UserNamespace::Auto);
        }
        let unknown = pb::ServiceSpec { security: Some(pb::Security { seccomp: 0, userns: 9 }), ..wire };
        let fields: Vec<_> = ServiceSpec::from_proto(unknown).unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["security.userns"]);
    }

    #[test]
    fn rejects_what_the_wire_type_cannot_stop() {
        let mut wire = parse_service_toml("s", "name = \"a\"\nimage = \"busybox\"\nports = [80]\n").unwrap().to_proto();
        wire.ports = vec![70_000];
        wire.health = Some(pb::HealthCheck { kind: 0, ..Default::default() });
        let fields: Vec<_> = ServiceSpec::from_proto(wire).unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["ports", "health.kind"]);
    }
}
