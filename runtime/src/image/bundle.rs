//! Image -> OCI bundle: the one pipeline from a pulled image to a bundle the runtime can run.
//! `sched-runtime run --image`, `sched-runtime image bundle` and the agent's tasks all make their
//! bundles with [`ImageService::create_bundle`]; each caller only chooses the base spec it passes
//! in (the agent puts its limits, cgroup path, network namespace and seccomp profile there) and
//! the process overrides.
//!
//! The steps: prepare the container's rootfs (an overlay of the image's snapshots, or a copy;
//! for a base spec with a new user namespace, an overlay of idmapped snapshots, so that the
//! mapped ids own the image's files with nothing copied),
//! build the spec from the base, the image config and the overrides ([`config_to_spec`]: the
//! process, `root.path` = the rootfs, the image's annotations), and write `DIR/config.json`
//! atomically. A failure leaves nothing: the rootfs is released again, and the bundle directory
//! is removed if this call created it.
//!
//! [`config_to_spec`]: super::config_to_spec::config_to_spec
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::config_to_spec::ProcessOverrides;
use super::error::{IoContext, Result};
use super::service::{ImageService, PreparedRootfs};

/// The name of the spec file in a bundle.
const CONFIG: &str = "config.json";

/// A bundle made from a pulled image by [`ImageService::create_bundle`].
#[derive(Debug, Clone)]
pub struct ImageBundle {
    /// The bundle directory: `config.json` is in it; `root.path` points at [`Self::rootfs`].
    pub dir: PathBuf,
    /// The container the rootfs was prepared for.
    pub container_id: String,
    /// The container's rootfs, mounted until [`ImageService::release_rootfs`] (or
    /// [`ImageService::remove_bundle`]).
    pub rootfs: PreparedRootfs,
    /// What was written to `config.json`.
    pub spec: Spec,
}

impl ImageService {
    /// Makes the bundle of container `container_id` in `dir` (created if missing) from a pulled
    /// image: its rootfs (see [`ImageService::prepare_rootfs`]) and `dir/config.json`, which is
    /// `base` filled from the image config and `overrides`. Nothing is left when it fails.
    pub fn create_bundle(
        &self,
        reference_or_id: &str,
        container_id: &str,
        dir: &Path,
        overrides: &ProcessOverrides,
        base: Spec,
    ) -> Result<ImageBundle> {
        let created_dir = !dir.exists();
        std::fs::create_dir_all(dir).at(dir)?;
        let mappings = crate::idmap::Mappings::of_new_user_namespace(&base);
        let made = self.prepare_rootfs_for(reference_or_id, container_id, mappings.as_ref()).and_then(|rootfs| {
            let written = self.spec_for(&rootfs, overrides, base).and_then(|spec| write_config(dir, &spec).map(|()| spec));
            match written {
                Ok(spec) => Ok(ImageBundle { dir: dir.to_path_buf(), container_id: container_id.to_string(), rootfs, spec }),
                Err(e) => {
                    let _ = self.release_rootfs(container_id);
                    Err(e)
                }
            }
        });
        if made.is_err() && created_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        made
    }

    /// Undoes [`ImageService::create_bundle`] once the container is gone: releases the rootfs
    /// and deletes the bundle directory.
    pub fn remove_bundle(&self, bundle: &ImageBundle) -> Result<()> {
        let released = self.release_rootfs(&bundle.container_id);
        let removed = match std::fs::remove_dir_all(&bundle.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(&bundle.dir),
            _ => Ok(()),
        };
        released.and(removed)
    }
}

/// Writes `spec` to `dir/config.json` (pretty JSON), through a temporary file renamed into
/// place, so a reader never sees half a spec.
pub fn write_config(dir: &Path, spec: &Spec) -> Result<()> {
    let path = dir.join(CONFIG);
    let text = serde_json::to_string_pretty(spec).map_err(std::io::Error::from).at(&path)?;
    let tmp = dir.join(format!(".{CONFIG}.tmp"));
    std::fs::write(&tmp, text + "\n").at(&tmp)?;
    std::fs::rename(&tmp, &path).at(&path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageServiceOptions;

    #[test]
    fn config_json_is_written_whole_and_pretty() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::default();
        spec.set_hostname(Some("web-1".into()));
        write_config(dir.path(), &spec).unwrap();
        let text = std::fs::read_to_string(dir.path().join(CONFIG)).unwrap();
        assert!(text.ends_with("}\n") && text.contains("\n  \"hostname\": \"web-1\""), "{text}");
        let back: Spec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [CONFIG], "no temporary file is left");
    }

    #[test]
    fn a_bundle_of_an_image_that_is_not_pulled_leaves_nothing() {
        let data = tempfile::tempdir().unwrap();
        let images = ImageService::open(data.path(), ImageServiceOptions::default()).unwrap();
        let dir = data.path().join("bundles/c1");
        let err = images.create_bundle("nope:1", "c1", &dir, &ProcessOverrides::default(), Spec::default()).unwrap_err();
        assert!(err.to_string().contains("pull it first"), "{err}");
        assert!(!dir.exists(), "the bundle dir this call made is removed again");
        let existing = data.path().join("mine");
        std::fs::create_dir(&existing).unwrap();
        images.create_bundle("nope:1", "c1", &existing, &ProcessOverrides::default(), Spec::default()).unwrap_err();
        assert!(existing.is_dir(), "a dir the caller made stays");
    }
}
