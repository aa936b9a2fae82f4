//! `sched-runtime image ...`: pull, list, inspect, remove, prune and unpack images in the data
//! dir (default /var/lib/sched), and turn a pulled image into a bundle for `sched-runtime run`.
//! Parsing and printing only; the work is in `runtime::image::ImageService` (the bundle in
//! `runtime::image::bundle`).
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use runtime::image::{
    ClientOptions, CredentialStore, Credentials, Digest, ImageService, ImageServiceOptions, Platform, ProcessOverrides, PullProgress,
};

/// Image commands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from its registry (all digests verified) and unpack its layers.
    Pull {
        /// The image: `busybox`, `ghcr.io/org/app:v1`, `localhost:5000/app@sha256:...`.
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
        /// The platform to choose from a multi-platform image, `os/arch[/variant]`
        /// (default: this host's).
        #[arg(long)]
        platform: Option<String>,
        /// The most bytes the image's layers may unpack to (`16GiB`, `512MiB`); a pull past it
        /// fails and keeps nothing. Stops a small "gzip bomb" layer from filling the disk.
        #[arg(long, value_parser = runtime::image::parse_size, default_value = "16GiB")]
        max_image_bytes: u64,
    },
    /// List pulled images.
    #[command(alias = "ls")]
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print an image's record, manifest and config as JSON.
    Inspect {
        /// A reference or an image id (prefix).
        reference: String,
    },
    /// Forget an image and delete the content nothing else uses.
    #[command(alias = "rm")]
    Remove {
        /// A reference or an image id (prefix).
        reference: String,
    },
    /// Delete blobs and snapshots that no image or container uses.
    Prune,
    /// Make an OCI bundle from a pulled image: an overlay rootfs for container ID (copied
    /// where overlayfs is unavailable) and DIR/config.json from the image config. Then
    /// `sched-runtime run --bundle DIR ID`; afterwards `image release ID`.
    Bundle {
        /// A reference or an image id (prefix).
        reference: String,
        /// The bundle directory to write config.json into (created).
        dir: PathBuf,
        /// The container id the rootfs is for.
        #[arg(long)]
        id: String,
        /// Replace the image's entrypoint.
        #[arg(long)]
        entrypoint: Option<String>,
        /// Add or override an environment variable, KEY=VALUE (repeatable).
        #[arg(short, long = "env")]
        env: Vec<String>,
        /// Run as this user (`name`, `uid`, `name:group`, `uid:gid`).
        #[arg(short, long)]
        user: Option<String>,
        /// The working directory.
        #[arg(short = 'w', long)]
        workdir: Option<String>,
        /// Replace the image's cmd.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Unmount and delete the rootfs `image bundle` made for container ID.
    Release {
        /// The container id.
        id: String,
    },
    /// Write the flattened rootfs of a pulled image to DIR (new or empty).
    Unpack {
        /// A reference or an image id (prefix).
        reference: String,
        /// The target directory.
        dir: PathBuf,
    },
}

/// How `image list` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// How to reach the registry.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Credentials for the image's registry, `USER:PASSWORD` (else docker's config.json).
    #[arg(long, env = "SCHED_REGISTRY_CREDS", hide_env_values = true)]
    creds: Option<String>,
    /// A docker-style config.json with `auths` (default: $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json, if present).
    #[arg(long)]
    docker_config: Option<PathBuf>,
    /// A registry (host[:port]) to reach over plain HTTP; loopback registries always are.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
}

/// Runs one image command against the data dir.
pub fn run(cmd: ImageCommand, data_dir: &Path) -> Result<()> {
    match cmd {
        ImageCommand::Pull { reference, registry, platform, max_image_bytes } => {
            pull(data_dir, &reference, registry, platform, max_image_bytes)
        }
        ImageCommand::List { format } => {
            let images = open(data_dir, ImageServiceOptions::default())?;
            let list = images.list()?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Format::Table => {
                    println!("{:<60} {:<14} {:>10} {:>7}", "IMAGE", "ID", "SIZE", "LAYERS");
                    for r in list {
                        println!("{:<60} {:<14} {:>10} {:>7}", r.name, &r.id().hex()[..12], human(r.size()), r.layers.len());
                    }
                }
            }
            Ok(())
        }
        ImageCommand::Inspect { reference } => {
            let images = open(data_dir, ImageServiceOptions::default())?;
            println!("{}", serde_json::to_string_pretty(&images.inspect(&reference)?)?);
            Ok(())
        }
        ImageCommand::Remove { reference } => {
            let images = open(data_dir, ImageServiceOptions::default())?;
            let record = images.get(&reference)?;
            let report = images.remove(&reference)?;
            println!("removed {} ({} blobs, {} snapshots, {} freed)", record.name, report.blobs, report.snapshots, human(report.bytes));
            Ok(())
        }
        ImageCommand::Prune => {
            let images = open(data_dir, ImageServiceOptions::default())?;
            let report = images.prune()?;
            println!("pruned {} blobs, {} snapshots, {} freed", report.blobs, report.snapshots, human(report.bytes));
            Ok(())
        }
        ImageCommand::Bundle { reference, dir, id, entrypoint, env, user, workdir, command } => {
            let images = open(data_dir, ImageServiceOptions::default())?;
            let overrides = ProcessOverrides {
                entrypoint: entrypoint.map(|e| vec![e]),
                cmd: if command.is_empty() { None } else { Some(command) },
                env,
                working_dir: workdir,
                user,
            };
            let bundle = images.create_bundle(&reference, &id, &dir, &overrides, runtime::spec_template::default_spec(&[]))?;
            println!("bundle {} for {id}: rootfs {} ({:?})", dir.display(), bundle.rootfs.path.display(), bundle.rootfs.kind);
            Ok(())
        }
        ImageCommand::Release { id } => {
            open(data_dir, ImageServiceOptions::default())?.release_rootfs(&id)?;
            println!("released the rootfs of {id}");
            Ok(())
        }
        ImageCommand::Unpack { reference, dir } => {
            let images = open(data_dir, ImageServiceOptions::default())?;
            let record = images.unpack(&reference, &dir)?;
            println!("unpacked {} into {}", record.name, dir.display());
            Ok(())
        }
    }
}

fn open(data_dir: &Path, options: ImageServiceOptions) -> Result<ImageService> {
    ImageService::open(data_dir, options).with_context(|| format!("opening the image store in {}", data_dir.display()))
}

fn pull(data_dir: &Path, reference: &str, args: RegistryArgs, platform: Option<String>, max_image_bytes: u64) -> Result<()> {
    let mut credentials = match &args.docker_config {
        Some(path) => CredentialStore::from_docker_config(path)?,
        None => match CredentialStore::default_docker_config_path().filter(|p| p.is_file()) {
            Some(path) => CredentialStore::from_docker_config(&path)?,
            None => CredentialStore::default(),
        },
    };
    if let Some(creds) = &args.creds {
        let parsed = runtime::image::Reference::parse(reference)?;
        let c = Credentials::parse(creds).context("--creds must be USER:PASSWORD")?;
        credentials.insert(parsed.registry(), c);
    }
    let platform = match platform {
        Some(p) => parse_platform(&p)?,
        None => Platform::host(),
    };
    let options = ImageServiceOptions {
        client: ClientOptions { credentials, insecure_registries: args.insecure_registries, ..Default::default() },
        platform,
        max_image_bytes,
        ..Default::default()
    };
    let images = open(data_dir, options)?;
    let progress: Arc<dyn PullProgress> =
        if std::io::stderr().is_terminal() { Arc::new(BarProgress::default()) } else { Arc::new(LineProgress) };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let record = runtime.block_on(images.pull(reference, progress))?;
    println!("pulled {} ({}, {} layers, {})", record.name, record.manifest_digest, record.layers.len(), human(record.size()));
    Ok(())
}

fn parse_platform(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] => Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: None }),
        [os, arch, variant] => Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: Some(variant.to_string()) }),
        _ => bail!("--platform {s:?} must be os/arch or os/arch/variant, e.g. linux/arm64"),
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

/// One line per layer event, for logs and pipes.
struct LineProgress;

impl PullProgress for LineProgress {
    fn layer_start(&self, digest: &Digest, size: u64, cached: bool) {
        eprintln!("layer {}: {} ({})", short(digest), if cached { "present" } else { "downloading" }, human(size));
    }
    fn layer_done(&self, digest: &Digest) {
        eprintln!("layer {}: done", short(digest));
    }
}

/// A progress bar per layer, on a terminal.
#[derive(Default)]
struct BarProgress {
    bars: MultiProgress,
    by_layer: Mutex<HashMap<Digest, ProgressBar>>,
}

impl PullProgress for BarProgress {
    fn layer_start(&self, digest: &Digest, size: u64, _cached: bool) {
        let bar = self.bars.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(short(digest).to_string());
        self.by_layer.lock().expect("poisoned").insert(digest.clone(), bar);
    }
    fn layer_bytes(&self, digest: &Digest, n: u64) {
        if let Some(bar) = self.by_layer.lock().expect("poisoned").get(digest) {
            bar.inc(n);
        }
    }
    fn layer_done(&self, digest: &Digest) {
        if let Some(bar) = self.by_layer.lock().expect("poisoned").remove(digest) {
            bar.set_position(bar.length().unwrap_or(0));
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_with_and_without_variant() {
        assert_eq!(parse_platform("linux/arm64").unwrap().architecture, "arm64");
        assert_eq!(parse_platform("linux/arm/v7").unwrap().variant.as_deref(), Some("v7"));
        assert!(parse_platform("arm64").is_err());
    }

    #[test]
    fn sizes_print_in_decimal_units() {
        assert_eq!(human(999), "999 B");
        assert_eq!(human(1_500_000), "1.5 MB");
    }
}
