//! Benchmark: pull + unpack of a ~200 MB, 5-layer image from a loopback registry, sched
//! against `skopeo copy` + `umoci unpack`, measured in the same run.
//!
//! The image is built here (each layer: incompressible pseudo-random bytes plus compressible
//! text, gzip) and pushed once to Debian's docker-registry on 127.0.0.1. Then, for a few
//! rounds, interleaved and in alternating order, with every cache of both sides removed
//! before each run (sched's data dir; skopeo's OCI layout and umoci's bundle):
//!
//! - sched: `ImageService::pull` (parallel layer downloads, each hashed, stored and unpacked
//!   into its snapshot while it streams) + `prepare_rootfs` (the overlay mount a container
//!   gets). Also shown: pull + `unpack` (a flattened copy, what umoci produces).
//! - peer: `skopeo copy docker://... oci:DIR:TAG` + `umoci unpack --image DIR:TAG BUNDLE`.
//!
//! Run: `cargo run --release -p sched-bench --bin image-pull [-- ROUNDS]` (as root).
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use runtime::image::{ImageService, ImageServiceOptions, NoProgress, RootfsMode};
use sched_tests::oci_image::{Entry, ImageDef, OciLayout, PushFormat, push};
use sched_tests::registry::Registry;

const LAYERS: usize = 5;
/// Per layer: this much pseudo-random data and as much compressible text.
const RANDOM_PER_LAYER: usize = 20 << 20;
const TEXT_PER_LAYER: usize = 20 << 20;
const FILES_PER_LAYER: usize = 40;

fn main() -> Result<()> {
    let rounds: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let work = tempfile::Builder::new().prefix("sched-bench-image-").tempdir()?;
    let registry = Registry::start();

    let t = Instant::now();
    let mut layout = OciLayout::create(&work.path().join("src"));
    let desc = layout.add_image(&image());
    layout.tag("bench", &desc);
    let reference = format!("{}/bench/big:v1", registry.addr());
    push(&layout.dir, "bench", &reference, PushFormat::Oci, false, None);
    let blobs = dir_size(&registry.dir().join("storage"));
    eprintln!("built and pushed the image in {:.1}s ({} MB in the registry)", t.elapsed().as_secs_f64(), blobs >> 20);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rows: Vec<[Duration; 5]> = Vec::new();
    for round in 0..rounds {
        let mut sched_rootfs = Duration::ZERO;
        let mut sched_unpack = Duration::ZERO;
        let mut peer = (Duration::ZERO, Duration::ZERO);
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        for sched_first in order {
            if sched_first {
                let data = work.path().join("sched-data");
                let (a, b) = sched_round(&runtime, &data, &reference, work.path())?;
                sched_rootfs = a;
                sched_unpack = b;
            } else {
                peer = peer_round(&reference, work.path())?;
            }
        }
        let row = [sched_rootfs, sched_unpack, peer.0, peer.1, peer.0 + peer.1];
        eprintln!("round {}: sched {:.2}s, skopeo+umoci {:.2}s", round + 1, secs(row[0]), secs(row[4]));
        rows.push(row);
    }

    println!(
        "image pull + unpack, {LAYERS} layers, {} MB uncompressed, {} MB in the registry, loopback",
        (LAYERS * (RANDOM_PER_LAYER + TEXT_PER_LAYER)) >> 20,
        blobs >> 20
    );
    println!();
    println!("| round | sched pull+rootfs | sched pull+unpack | skopeo copy | umoci unpack | skopeo+umoci | ratio |");
    println!("|---|---|---|---|---|---|---|");
    for (i, r) in rows.iter().enumerate() {
        println!(
            "| {} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} |",
            i + 1,
            secs(r[0]),
            secs(r[1]),
            secs(r[2]),
            secs(r[3]),
            secs(r[4]),
            secs(r[0]) / secs(r[4])
        );
    }
    let med = |k: usize| {
        let mut v: Vec<f64> = rows.iter().map(|r| secs(r[k])).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "| median | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s | **{:.2}** |",
        med(0),
        med(1),
        med(2),
        med(3),
        med(4),
        med(0) / med(4)
    );
    println!();
    println!("ratio = sched pull+rootfs / (skopeo copy + umoci unpack); target <= 0.5");
    println!("(pull+unpack / skopeo+umoci = {:.2})", med(1) / med(4));
    Ok(())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// sched: pull + overlay rootfs, then (timed apart) a flattened unpack from the local store.
fn sched_round(runtime: &tokio::runtime::Runtime, data: &Path, reference: &str, work: &Path) -> Result<(Duration, Duration)> {
    remove(data)?;
    let options = ImageServiceOptions { rootfs_mode: RootfsMode::Overlay, ..Default::default() };
    let t = Instant::now();
    let images = ImageService::open(data, options)?;
    runtime.block_on(images.pull(reference, Arc::new(NoProgress)))?;
    let rootfs = images.prepare_rootfs(reference, "bench")?;
    let pull_and_rootfs = t.elapsed();
    if !rootfs.path.join("layer4/text-0").exists() {
        bail!("the rootfs lacks the top layer's files");
    }
    images.release_rootfs("bench")?;
    let flat = work.join("sched-flat");
    remove(&flat)?;
    let t2 = Instant::now();
    images.unpack(reference, &flat)?;
    let unpack = t2.elapsed();
    remove(&flat)?;
    remove(data)?;
    Ok((pull_and_rootfs, pull_and_rootfs + unpack))
}

/// skopeo copy to an OCI layout, then umoci unpack into a bundle.
fn peer_round(reference: &str, work: &Path) -> Result<(Duration, Duration)> {
    let (layout, bundle) = (work.join("peer-oci"), work.join("peer-bundle"));
    remove(&layout)?;
    remove(&bundle)?;
    let t = Instant::now();
    run(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:v1", layout.display())))?;
    let copy = t.elapsed();
    let t = Instant::now();
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:v1", layout.display())).arg(&bundle))?;
    let unpack = t.elapsed();
    if !bundle.join("rootfs/layer4/text-0").exists() {
        bail!("umoci's rootfs lacks the top layer's files");
    }
    remove(&layout)?;
    remove(&bundle)?;
    Ok((copy, unpack))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn remove(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| p.display().to_string()),
        _ => Ok(()),
    }
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            n += if m.is_dir() { dir_size(&e.path()) } else { m.len() };
        }
    }
    n
}

/// Five layers, each: FILES_PER_LAYER files of pseudo-random bytes and as many of text.
fn image() -> ImageDef {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut layers = Vec::new();
    for l in 0..LAYERS {
        let mut entries = vec![Entry::dir(&format!("layer{l}"))];
        for f in 0..FILES_PER_LAYER {
            let random: Vec<u8> = (0..RANDOM_PER_LAYER / FILES_PER_LAYER / 8)
                .flat_map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state.to_le_bytes()
                })
                .collect();
            entries.push(Entry::File { path: format!("layer{l}/random-{f}"), content: random, mode: 0o644, uid: 0, gid: 0 });
            let mut text = String::with_capacity(TEXT_PER_LAYER / FILES_PER_LAYER);
            let mut i = 0u64;
            while text.len() < TEXT_PER_LAYER / FILES_PER_LAYER {
                text.push_str(&format!("{l} {f} line {i}: the quick brown fox jumps over the lazy dog\n"));
                i += 1;
            }
            entries.push(Entry::file(&format!("layer{l}/text-{f}"), &text));
        }
        layers.push(entries);
    }
    ImageDef::new(layers)
}
