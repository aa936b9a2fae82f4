//! OCI and Docker schema2 manifests, indexes (manifest lists), image configs, and choosing the
//! host's platform from an index. Only the fields sched uses are modelled; the raw JSON is kept
//! in the content store for `image inspect`.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::RegistryError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The Accept header for manifest requests: without the OCI types, distribution answers 404
/// for OCI manifests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// A pointer to content: media type, digest and size (and a platform inside an index).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The platform an image is built for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this host, in OCI (GOARCH) spelling.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Self { architecture: architecture.to_string(), os: "linux".to_string(), variant: None }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest: one config and the layers, bottom first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An index (OCI) or manifest list (Docker): one manifest per platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// What a manifest endpoint returned.
#[derive(Debug, Clone)]
pub enum ManifestKind {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// Parses a manifest body; the media type comes from the body, else the Content-Type header.
pub fn parse_manifest(body: &[u8], content_type: Option<&str>, what: &str) -> Result<ManifestKind, RegistryError> {
    let invalid = |reason: String| RegistryError::InvalidManifest { what: what.to_string(), reason };
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(body).map_err(|e| invalid(format!("not JSON: {e}")))?;
    if probe.schema_version != Some(2) {
        return Err(invalid(format!("schemaVersion {:?} is not supported (only schema 2: OCI or Docker v2s2)", probe.schema_version)));
    }
    let media_type =
        probe.media_type.or_else(|| content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string())).unwrap_or_default();
    let is_index = match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        // OCI allows omitting mediaType; tell the two apart by shape.
        _ => probe.manifests.is_some(),
    };
    if is_index {
        Ok(ManifestKind::Index(serde_json::from_slice(body).map_err(|e| invalid(format!("bad index: {e}")))?))
    } else {
        let m: ImageManifest = serde_json::from_slice(body).map_err(|e| invalid(format!("bad manifest: {e}")))?;
        Ok(ManifestKind::Image(m))
    }
}

impl ImageIndex {
    /// The manifest for `platform`: exact os/arch (and variant when the index gives one and we
    /// ask for one); the first match wins, as in docker.
    pub fn select(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            d.platform.as_ref().is_some_and(|p| {
                p.os == platform.os
                    && p.architecture == platform.architecture
                    && (platform.variant.is_none() || p.variant == platform.variant)
            })
        })
    }

    /// The platforms on offer, for error messages.
    pub fn platforms(&self) -> String {
        let v: Vec<String> =
            self.manifests.iter().map(|d| d.platform.as_ref().map_or_else(|| "unknown".to_string(), |p| p.to_string())).collect();
        v.join(", ")
    }
}

/// The image config blob (only what sched uses).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

/// The process defaults of an image (Docker's capitalised field names).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The uncompressed layer digests, bottom first.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    pub fn parse(body: &[u8], what: &str) -> Result<Self, RegistryError> {
        let config: Self =
            serde_json::from_slice(body).map_err(|e| RegistryError::InvalidConfig { what: what.to_string(), reason: e.to_string() })?;
        if config.rootfs.kind != "layers" {
            return Err(RegistryError::InvalidConfig {
                what: what.to_string(),
                reason: format!("rootfs.type is {:?}, expected \"layers\"", config.rootfs.kind),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(arch.as_bytes()),
            size: 1,
            platform: Some(Platform { architecture: arch.into(), os: "linux".into(), variant: variant.map(Into::into) }),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn index_selects_the_requested_platform() {
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: vec![desc("arm64", Some("v8")), desc("amd64", None)],
        };
        let amd = Platform { architecture: "amd64".into(), os: "linux".into(), variant: None };
        assert_eq!(index.select(&amd).unwrap().digest, Digest::of(b"amd64"));
        let s390 = Platform { architecture: "s390x".into(), os: "linux".into(), variant: None };
        assert!(index.select(&s390).is_none());
        assert_eq!(index.platforms(), "linux/arm64/v8, linux/amd64");
    }

    #[test]
    fn manifests_are_told_apart_by_media_type_or_shape() {
        let d = Digest::of(b"x");
        let m = format!(r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{d}","size":1}},"layers":[]}}"#);
        assert!(matches!(parse_manifest(m.as_bytes(), None, "m").unwrap(), ManifestKind::Image(_)));
        let i = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{d}","size":1}}]}}"#);
        assert!(matches!(parse_manifest(i.as_bytes(), None, "i").unwrap(), ManifestKind::Index(_)));
        let v1 = br#"{"schemaVersion":1,"fsLayers":[]}"#;
        assert!(parse_manifest(v1, None, "v1").unwrap_err().to_string().contains("schemaVersion"));
    }
}
