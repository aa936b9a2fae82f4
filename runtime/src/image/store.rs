//! The content store: blobs by digest under `<data dir>/blobs/sha256/<hex>`, shared by every
//! image. A blob is written to a temporary file under `blobs/ingest/` while its digest is
//! computed, and renamed into place only when the digest matches, so a reader never sees a
//! partial or corrupt blob. An in-process lock per digest makes two concurrent pulls of one
//! blob download it once (the second waits, then finds it present).
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::RegistryError;
use super::digest::{Digest, DigestHasher};
use super::error::{ImageError, IoContext, Result};

/// Blobs by digest.
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
    /// One async mutex per digest being fetched; weak so finished digests drop out.
    locks: Mutex<HashMap<Digest, Weak<tokio::sync::Mutex<()>>>>,
}

impl ContentStore {
    /// Opens (creating) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let blobs = data_dir.join("blobs/sha256");
        let ingest = data_dir.join("blobs/ingest");
        std::fs::create_dir_all(&blobs).at(&blobs)?;
        std::fs::create_dir_all(&ingest).at(&ingest)?;
        Ok(Self { blobs, ingest, locks: Mutex::default() })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ImageError::NotFound(format!("blob {digest}")),
            _ => ImageError::Io { path, source },
        })
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).at(path)
    }

    /// Stores `data` after checking it has `digest`.
    pub fn write_blob(&self, digest: &Digest, data: &[u8]) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut ingest = self.ingest()?;
        ingest.write(data)?;
        ingest.commit(digest, Some(data.len() as u64), &format!("blob {digest}"))
    }

    /// A new temporary blob; dropped without commit, it is deleted.
    pub fn ingest(&self) -> Result<Ingest> {
        let path = unique_path(&self.ingest, "blob");
        let file = File::options().write(true).create_new(true).open(&path).at(&path)?;
        Ok(Ingest { file, path, hasher: DigestHasher::default(), blobs: self.blobs.clone(), committed: false })
    }

    /// Holds the lock for `digest` until the guard drops.
    pub async fn lock(&self, digest: &Digest) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = {
            let mut locks = self.locks.lock().expect("poisoned");
            locks.retain(|_, w| w.strong_count() > 0);
            match locks.get(digest).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(digest.clone(), Arc::downgrade(&m));
                    m
                }
            }
        };
        mutex.lock_owned().await
    }

    /// Every stored blob.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.blobs).at(&self.blobs)? {
            let e = e.at(&self.blobs)?;
            if let Ok(d) = Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy())) {
                out.push(d);
            }
        }
        Ok(out)
    }

    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())
    }

    pub fn remove_blob(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(path),
            _ => Ok(()),
        }
    }

    /// Removes leftovers of interrupted downloads.
    pub fn clean_ingest(&self) -> Result<()> {
        for e in std::fs::read_dir(&self.ingest).at(&self.ingest)? {
            let e = e.at(&self.ingest)?;
            let _ = std::fs::remove_file(e.path());
        }
        Ok(())
    }
}

/// A blob being written: bytes go to a temporary file and into a running digest.
pub struct Ingest {
    file: File,
    path: PathBuf,
    hasher: DigestHasher,
    blobs: PathBuf,
    committed: bool,
}

impl Ingest {
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.file.write_all(data).at(&self.path)
    }

    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Renames the blob into place if its digest (and size, when given) match; otherwise
    /// deletes it and says what did not match.
    pub fn commit(mut self, expected: &Digest, size: Option<u64>, what: &str) -> Result<()> {
        self.check(expected, size, what)?;
        self.file.sync_data().at(&self.path)?;
        let target = self.blobs.join(expected.hex());
        std::fs::rename(&self.path, &target).at(&target)?;
        self.committed = true;
        Ok(())
    }

    /// Checks digest and size like [`Ingest::commit`], then deletes the blob either way (for a
    /// blob whose content was refused for another reason).
    pub fn discard(mut self, expected: &Digest, size: Option<u64>, what: &str) -> Result<()> {
        self.check(expected, size, what)
    }

    fn check(&mut self, expected: &Digest, size: Option<u64>, what: &str) -> Result<()> {
        let actual = std::mem::take(&mut self.hasher);
        let len = actual.len();
        let actual = actual.finish();
        if let Some(size) = size.filter(|s| *s != len) {
            return Err(RegistryError::SizeMismatch { what: what.to_string(), expected: size, actual: len }.into());
        }
        if &actual != expected {
            return Err(RegistryError::DigestMismatch {
                what: what.to_string(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            }
            .into());
        }
        Ok(())
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A fresh name under `dir`: pid, a process-wide counter and the time keep it unique.
pub(crate) fn unique_path(dir: &Path, prefix: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    dir.join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_stored_only_when_its_digest_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let good = Digest::of(b"content");
        let err = store.write_blob(&good, b"contenT").unwrap_err();
        assert!(matches!(err, ImageError::Registry(RegistryError::DigestMismatch { .. })), "{err}");
        assert!(!store.has_blob(&good));
        assert_eq!(std::fs::read_dir(dir.path().join("blobs/ingest")).unwrap().count(), 0, "temp file left");
        store.write_blob(&good, b"content").unwrap();
        assert_eq!(store.read_blob(&good).unwrap(), b"content");
        assert_eq!(store.list().unwrap(), vec![good]);
    }

    #[tokio::test]
    async fn the_digest_lock_serialises_holders_of_one_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ContentStore::open(dir.path()).unwrap());
        let d = Digest::of(b"x");
        let g = store.lock(&d).await;
        let s2 = store.clone();
        let d2 = d.clone();
        let waiter = tokio::spawn(async move {
            let _g = s2.lock(&d2).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "second holder got the lock while the first held it");
        drop(g);
        waiter.await.unwrap();
        let _other = store.lock(&Digest::of(b"y")).await; // other digests do not wait
    }
}
