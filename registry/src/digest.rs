//! Content digests (`sha256:<hex>`): parsing, computing, and a hasher that checks a stream
//! against the digest it must have.
use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::RegistryError;

/// A validated `sha256:<64 lowercase hex>` digest. Other algorithms are refused: every
/// registry we target uses sha256, and refusing is safer than trusting an unchecked digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<hex>`.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| RegistryError::InvalidDigest(s.to_string()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(RegistryError::InvalidDigest(s.to_string()));
        }
        Ok(Self { hex: hex.to_string() })
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self { hex: hex::encode(Sha256::digest(data)) }
    }

    /// The 64 hex digits, usable as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Checks that `data` has this digest; `what` names it in the error.
    pub fn verify(&self, what: &str, data: &[u8]) -> Result<(), RegistryError> {
        let actual = Self::of(data);
        if &actual != self {
            return Err(RegistryError::DigestMismatch { what: what.to_string(), expected: self.to_string(), actual: actual.to_string() });
        }
        Ok(())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A running sha256 over a stream, finished into a [`Digest`].
#[derive(Default, Clone)]
pub struct DigestHasher {
    inner: Sha256,
    bytes: u64,
}

impl DigestHasher {
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.bytes += data.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    pub fn finish(self) -> Digest {
        Digest { hex: hex::encode(self.inner.finalize()) }
    }
}

/// A reader that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: DigestHasher,
}

impl<R: std::io::Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, hasher: DigestHasher::default() }
    }

    /// Reads the rest of the stream (hashing it) and returns the digest of everything read.
    pub fn finish(mut self) -> std::io::Result<Digest> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(self.hasher.finish())
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(Digest::of(b"").to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn parse_refuses_other_algorithms_short_and_uppercase_hex() {
        assert!(Digest::parse("sha512:abcd").is_err());
        assert!(Digest::parse("sha256:abcd").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }

    #[test]
    fn verify_names_both_digests_on_mismatch() {
        let d = Digest::of(b"abc");
        assert!(d.verify("x", b"abc").is_ok());
        let err = d.verify("blob x", b"abd").unwrap_err().to_string();
        assert!(err.contains("blob x") && err.contains(&d.to_string()), "{err}");
    }
}
