//! An OCI bundle: a directory with `config.json` and a root filesystem. Loading one checks
//! everything that can be checked before any process or namespace exists, so that bad input fails
//! with a clear error and leaves nothing behind.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};
use crate::idmap::{IdMap, IdMapError, MapKind, Mappings};

/// A loaded, validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute path of the bundle directory.
    pub dir: PathBuf,
    /// Absolute path of the root filesystem.
    pub rootfs: PathBuf,
    /// The parsed `config.json`.
    pub spec: Spec,
}

impl Bundle {
    /// Loads and validates `DIR/config.json`.
    pub fn load(dir: &Path) -> Result<Bundle> {
        Bundle::load_with_config(dir, None)
    }

    /// Loads and validates the bundle at `dir` with the spec read from `config` instead of
    /// `DIR/config.json`: the copy `create` keeps in the container's state directory, so that
    /// edits of the bundle after `create` change nothing of the container.
    pub fn load_with_config(dir: &Path, config: Option<&Path>) -> Result<Bundle> {
        if !dir.is_dir() {
            return Err(Error::BundleMissing(dir.to_path_buf()));
        }
        let dir = std::fs::canonicalize(dir).map_err(|_| Error::BundleMissing(dir.to_path_buf()))?;
        let config = config.map(Path::to_path_buf).unwrap_or_else(|| dir.join("config.json"));
        let text = match std::fs::read(&config) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::ConfigMissing(dir));
            }
            Err(e) => {
                return Err(Error::Io { what: format!("read {}", config.display()), source: e });
            }
        };
        let raw: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| Error::ConfigMalformed { path: config.clone(), reason: e.to_string() })?;
        check_capability_names(&raw)?;
        let spec: Spec = serde_json::from_value(raw).map_err(|e| Error::ConfigMalformed { path: config.clone(), reason: e.to_string() })?;
        let root = spec.root().as_ref().ok_or_else(|| Error::ConfigInvalid("root.path is missing".into()))?;
        let rootfs = dir.join(root.path());
        if !rootfs.is_dir() {
            return Err(Error::RootfsMissing(rootfs));
        }
        let bundle = Bundle { dir, rootfs, spec };
        bundle.validate()?;
        Ok(bundle)
    }

    /// Checks the parts of the spec this runtime needs before it starts anything.
    fn validate(&self) -> Result<()> {
        let process = self.spec.process().as_ref().ok_or_else(|| Error::ConfigInvalid("process is missing".into()))?;
        match process.args() {
            Some(args) if !args.is_empty() && !args[0].is_empty() => {}
            _ => return Err(Error::ConfigInvalid("process.args must name a program to run".into())),
        }
        if !process.cwd().is_absolute() {
            return Err(Error::ConfigInvalid(format!("process.cwd {:?} must be an absolute path", process.cwd())));
        }
        if process.apparmor_profile().is_some() || process.selinux_label().is_some() {
            tracing::warn!("process.apparmorProfile and process.selinuxLabel are not applied by this runtime");
        }
        if let Some(hooks) = self.spec.hooks() {
            crate::hooks::validate(hooks)?;
        }
        let mut seen = Vec::new();
        for ns in self.namespaces() {
            if seen.contains(&ns.typ()) {
                return Err(Error::ConfigInvalid(format!("linux.namespaces lists the {} namespace twice", ns.typ())));
            }
            seen.push(ns.typ());
            match ns.path() {
                None if ns.typ() == LinuxNamespaceType::Time => {
                    return Err(Error::ConfigInvalid(
                        "new time namespaces are not supported (join one by path, or remove it from linux.namespaces)".into(),
                    ));
                }
                Some(path) if !path.is_absolute() => {
                    return Err(Error::ConfigInvalid(format!("{} namespace path {} must be absolute", ns.typ(), path.display())));
                }
                Some(path) if !path.exists() => {
                    return Err(Error::ConfigInvalid(format!("{} namespace path {} does not exist", ns.typ(), path.display())));
                }
                _ => {}
            }
        }
        self.mappings()?;
        if let Some(sysctls) = self.spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
            crate::sysctl::check(sysctls.keys(), |t| self.has_namespace(t)).map_err(Error::ConfigInvalid)?;
        }
        for mount in self.spec.mounts().iter().flatten() {
            if !mount.destination().is_absolute() {
                return Err(Error::ConfigInvalid(format!("mount destination {:?} must be an absolute path", mount.destination())));
            }
            let idmapped = mount.options().iter().flatten().any(|o| o == "idmap" || o == "ridmap");
            if mount.uid_mappings().is_some() || mount.gid_mappings().is_some() {
                return Err(Error::ConfigInvalid(format!(
                    "mount {}: per-mount uidMappings/gidMappings are not supported (the \"idmap\" option maps with the container's own)",
                    mount.destination().display()
                )));
            }
            if idmapped && (!crate::init::is_bind(mount) || !self.has_namespace(LinuxNamespaceType::User)) {
                return Err(Error::ConfigInvalid(format!(
                    "mount {}: the idmap option needs a bind mount and a user namespace",
                    mount.destination().display()
                )));
            }
        }
        Ok(())
    }

    /// The user namespace's mappings from the spec: required (and checked) for a new user
    /// namespace, optional for a joined one (whose own maps are what counts), refused without
    /// one. The process's uid, gid and additional gids must be mapped.
    pub fn mappings(&self) -> Result<Option<Mappings>> {
        let linux = self.spec.linux().as_ref();
        let uid = linux.and_then(|l| l.uid_mappings().as_deref()).filter(|m| !m.is_empty());
        let gid = linux.and_then(|l| l.gid_mappings().as_deref()).filter(|m| !m.is_empty());
        let user_ns = self.namespaces().iter().find(|ns| ns.typ() == LinuxNamespaceType::User);
        let (uid, gid) = match (user_ns, uid, gid) {
            (None, None, None) => return Ok(None),
            (None, Some(_), _) => return Err(IdMapError::WithoutUserNamespace { kind: MapKind::Uid }.into()),
            (None, None, Some(_)) => return Err(IdMapError::WithoutUserNamespace { kind: MapKind::Gid }.into()),
            (Some(ns), None, None) if ns.path().is_some() => return Ok(None),
            (Some(_), None, _) => return Err(IdMapError::Missing { kind: MapKind::Uid }.into()),
            (Some(_), _, None) => return Err(IdMapError::Missing { kind: MapKind::Gid }.into()),
            (Some(_), Some(uid), Some(gid)) => (uid, gid),
        };
        let mappings = Mappings { uid: IdMap::from_spec(MapKind::Uid, uid)?, gid: IdMap::from_spec(MapKind::Gid, gid)? };
        if let Some(process) = self.spec.process() {
            let user = process.user();
            mappings.uid.require("process.user.uid", user.uid())?;
            mappings.gid.require("process.user.gid", user.gid())?;
            for gid in user.additional_gids().iter().flatten() {
                mappings.gid.require("process.user.additionalGids", *gid)?;
            }
        }
        Ok(Some(mappings))
    }

    /// Whether the container gets a user namespace (new or joined).
    pub fn has_user_namespace(&self) -> bool {
        self.has_namespace(LinuxNamespaceType::User)
    }

    /// The namespaces the spec asks for (an empty list when `linux` is absent).
    pub fn namespaces(&self) -> &[oci_spec::runtime::LinuxNamespace] {
        self.spec.linux().as_ref().and_then(|l| l.namespaces().as_deref()).unwrap_or(&[])
    }

    /// Whether the spec asks for a namespace of this type (new or joined).
    pub fn has_namespace(&self, typ: LinuxNamespaceType) -> bool {
        self.namespaces().iter().any(|ns| ns.typ() == typ)
    }
}

/// Refuses a capability name this runtime does not know, naming it and its set (the typed parse
/// would only say "no variant").
fn check_capability_names(raw: &serde_json::Value) -> Result<()> {
    let Some(sets) = raw.pointer("/process/capabilities").and_then(|c| c.as_object()) else { return Ok(()) };
    for (set, names) in sets {
        for name in names.as_array().into_iter().flatten() {
            if serde_json::from_value::<oci_spec::runtime::Capability>(name.clone()).is_err() {
                return Err(Error::ConfigInvalid(format!("process.capabilities.{set}: unknown capability {name}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_capability_is_named_with_its_set() {
        let raw = serde_json::json!({"process": {"capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL", "CAP_NOPE"]}}});
        let err = check_capability_names(&raw).unwrap_err().to_string();
        assert_eq!(err, "invalid config.json: process.capabilities.effective: unknown capability \"CAP_NOPE\"");
    }
}
