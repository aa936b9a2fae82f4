//! An OCI bundle: a directory with `config.json` and a root filesystem. Loading one checks
//! everything that can be checked before any process or namespace exists, so that bad input fails
//! with a clear error and leaves nothing behind.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

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
        if !dir.is_dir() {
            return Err(Error::BundleMissing(dir.to_path_buf()));
        }
        let dir = std::fs::canonicalize(dir).map_err(|_| Error::BundleMissing(dir.to_path_buf()))?;
        let config = dir.join("config.json");
        let text = match std::fs::read(&config) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::ConfigMissing(dir));
            }
            Err(e) => {
                return Err(Error::Io { what: format!("read {}", config.display()), source: e });
            }
        };
        let spec: Spec =
            serde_json::from_slice(&text).map_err(|e| Error::ConfigMalformed { path: config.clone(), reason: e.to_string() })?;
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
            let any = [
                hooks.prestart(),
                hooks.create_runtime(),
                hooks.create_container(),
                hooks.start_container(),
                hooks.poststart(),
                hooks.poststop(),
            ]
            .iter()
            .any(|h| h.as_ref().is_some_and(|v| !v.is_empty()));
            if any {
                return Err(Error::ConfigInvalid("hooks are not supported yet (remove them from config.json)".into()));
            }
        }
        for ns in self.namespaces() {
            match ns.typ() {
                LinuxNamespaceType::User | LinuxNamespaceType::Time => {
                    return Err(Error::ConfigInvalid(format!(
                        "{} namespaces are not supported yet (remove it from linux.namespaces)",
                        ns.typ()
                    )));
                }
                LinuxNamespaceType::Mount if ns.path().is_some() => {
                    return Err(Error::ConfigInvalid("joining an existing mount namespace is not supported".into()));
                }
                _ => {}
            }
            if let Some(path) = ns.path()
                && !path.exists()
            {
                return Err(Error::ConfigInvalid(format!("{} namespace path {} does not exist", ns.typ(), path.display())));
            }
        }
        if let Some(sysctls) = self.spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
            crate::sysctl::check(sysctls.keys(), |t| self.has_namespace(t)).map_err(Error::ConfigInvalid)?;
        }
        for mount in self.spec.mounts().iter().flatten() {
            if !mount.destination().is_absolute() {
                return Err(Error::ConfigInvalid(format!("mount destination {:?} must be an absolute path", mount.destination())));
            }
        }
        Ok(())
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
