//! The cap on an image's uncompressed size. A layer's compressed size is checked against its
//! manifest, but what it expands to is only known by decompressing it: a few KiB of gzip can
//! expand to terabytes (a "gzip bomb"), and the diff id, the digest of the uncompressed tar,
//! can only be checked at the end. So every decompressed byte of a pull is counted as it is
//! read, across the image's layers (they unpack in parallel), and the read that goes past
//! the limit fails: the unpacker stops, and the pull drops its temporary snapshots.
//!
//! Layers whose snapshot is already on the node are not unpacked again and so not counted;
//! they were counted by the pull that unpacked them.
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The default cap on the uncompressed bytes of one image: 16 GiB. Docker and containerd have
/// none; the cap's job is to stop a bomb from filling a node's disk, not to police image sizes,
/// so it sits far above ordinary service images (tens to hundreds of MiB) and leaves room for
/// the large GPU and ML base images. Nodes that run bigger images raise it
/// (`sched-agent --max-image-bytes`, `sched-runtime image pull --max-image-bytes`).
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 16 << 30;

/// The uncompressed bytes one pull may still write.
#[derive(Debug)]
pub struct ImageBudget {
    limit: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
}

impl ImageBudget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self { limit, used: AtomicU64::new(0), exceeded: AtomicBool::new(false) })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether a read went past the limit (the error it caused is then this one's).
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::SeqCst)
    }

    /// Counts `n` more bytes; false (and marked exceeded) once the total is over the limit.
    fn take(&self, n: u64) -> bool {
        let total = self.used.fetch_add(n, Ordering::SeqCst).saturating_add(n);
        if total > self.limit {
            self.exceeded.store(true, Ordering::SeqCst);
            return false;
        }
        true
    }
}

/// A reader that counts what it reads against an [`ImageBudget`] and fails past its limit.
pub struct CappedReader<R> {
    inner: R,
    budget: Arc<ImageBudget>,
}

impl<R> CappedReader<R> {
    pub fn new(inner: R, budget: Arc<ImageBudget>) -> Self {
        Self { inner, budget }
    }
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.budget.exceeded() {
            return Err(over_limit(self.budget.limit));
        }
        let n = self.inner.read(buf)?;
        if !self.budget.take(n as u64) {
            return Err(over_limit(self.budget.limit));
        }
        Ok(n)
    }
}

fn over_limit(limit: u64) -> std::io::Error {
    std::io::Error::other(format!("the image's uncompressed layers exceed the limit of {limit} bytes"))
}

/// Parses a size flag: bytes, or a number with a binary unit (`512MiB`, `16GiB`, `16G`,
/// `1TiB`; `K`, `M`, `G`, `T` are the same units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        other => return Err(format!("size {s:?}: unknown unit {other:?} (use bytes, KiB, MiB, GiB or TiB)")),
    };
    let n: u64 = number.parse().map_err(|_| format!("size {s:?}: expected a whole number with an optional unit, e.g. 16GiB"))?;
    n.checked_mul(1 << shift).filter(|v| *v > 0).ok_or_else(|| format!("size {s:?}: must be between 1 byte and 16 EiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        for (text, want) in [
            ("1048576", Ok(1 << 20)),
            ("16GiB", Ok(16 << 30)),
            ("16G", Ok(16 << 30)),
            ("512MiB", Ok(512 << 20)),
            ("4 KiB", Ok(4 << 10)),
            ("1TiB", Ok(1 << 40)),
            ("0", Err(())),
            ("", Err(())),
            ("-1G", Err(())),
            ("1.5G", Err(())),
            ("16GB", Err(())),
            ("99999999999T", Err(())),
        ] {
            assert_eq!(parse_size(text).map_err(|_| ()), want, "{text:?}");
        }
    }

    #[test]
    fn readers_share_one_budget_and_fail_past_it() {
        let budget = ImageBudget::new(10);
        let mut a = CappedReader::new(&[1u8; 6][..], budget.clone());
        let mut b = CappedReader::new(&[2u8; 6][..], budget.clone());
        let mut out = Vec::new();
        a.read_to_end(&mut out).unwrap();
        assert!(!budget.exceeded());
        assert!(b.read_to_end(&mut out).is_err(), "12 bytes read against a limit of 10");
        assert!(budget.exceeded());
        assert!(a.read(&mut [0u8; 1]).is_err(), "every reader of the image stops once one went over");
    }

    #[test]
    fn exactly_the_limit_is_fine() {
        let budget = ImageBudget::new(6);
        let mut out = Vec::new();
        CappedReader::new(&[1u8; 6][..], budget.clone()).read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 6);
        assert!(!budget.exceeded());
    }
}
