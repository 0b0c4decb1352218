//! FNV-1a, 64 bits (Fowler–Noll–Vo): a fast fingerprint of bytes. Not cryptographic: it tells
//! apart configs, files and keys, it does not resist an adversary.

use std::io::Read;
use std::path::Path;

use crate::atomic::FileError;

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a of `bytes`.
pub fn fnv1a64(bytes: impl AsRef<[u8]>) -> u64 {
    let mut h = Fnv::default();
    h.update(bytes.as_ref());
    h.finish()
}

/// An incremental FNV-1a hasher.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(OFFSET)
    }
}

impl Fnv {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(PRIME);
        }
    }

    /// The hash.
    pub fn finish(&self) -> u64 {
        self.0
    }

    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }

    /// The hash of a file's bytes, as 16 hex digits.
    pub fn file(path: &Path) -> Result<String, FileError> {
        let mut f = std::fs::File::open(path).map_err(FileError::at(path))?;
        let mut h = Fnv::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(FileError::at(path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_test_vectors() {
        // From the FNV reference (isthe.com/chongo/tech/comp/fnv), 64-bit FNV-1a.
        assert_eq!(fnv1a64(""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64("a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64("foobar"), 0x85944171f73967e8);
        let mut h = Fnv::default();
        h.update(b"foo");
        h.update(b"bar");
        assert_eq!(h.finish(), fnv1a64("foobar"));
    }
}
