//! SOPS-encrypted files, decrypted with age identities while a stack loads.
//!
//! The loader reads every file through [`DecryptingSource`]: a file whose format
//! carries sops metadata (`sops:` in YAML and JSON, `sops_*` keys in dotenv, a
//! `[sops]` section in INI) is decrypted in memory and its MAC verified; any
//! other file passes through unchanged. The identities arrive as data
//! ([`AgeKeys`]), read by the caller at each poll, so loading stays free of I/O
//! besides the commit's own files. In marker mode ([`DecryptingSource::with_markers`])
//! each decrypted value reads as a unique marker instead, so that the loader can
//! follow where decrypted values go and keep them out of the `Stack`.

mod format;

use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use crate::render::files::{EntryKind, FileError, FileSource, RepoPath};

/// The age identities of a repository's `decryption.ageKeyFile`, or why there are none.
pub struct AgeKeys {
    identities: Vec<age::x25519::Identity>,
    /// Why the key file could not be used; reported only when a file needs it.
    problem: Option<String>,
}

impl fmt::Debug for AgeKeys {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgeKeys")
            .field("identities", &self.identities.len())
            .field("problem", &self.problem)
            .finish()
    }
}

impl AgeKeys {
    /// Parses an age identity file: `AGE-SECRET-KEY-1…` lines, `#` comments and
    /// blank lines. Errors give the line number, never the line.
    pub fn parse(text: &str) -> Result<AgeKeys, String> {
        let mut identities = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with("AGE-PLUGIN-") {
                return Err(format!(
                    "line {}: age plugin identities are not supported, only X25519 (AGE-SECRET-KEY-1…)",
                    n + 1
                ));
            }
            let identity = line
                .parse::<age::x25519::Identity>()
                .map_err(|_| format!("line {}: not an age X25519 identity", n + 1))?;
            identities.push(identity);
        }
        if identities.is_empty() {
            return Err("holds no age identity".to_string());
        }
        Ok(AgeKeys {
            identities,
            problem: None,
        })
    }

    /// Reads `path` now. A missing or bad file is remembered, not fatal: only
    /// stacks that read an encrypted file fail, and they say why.
    pub fn read(path: &Path) -> AgeKeys {
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| AgeKeys::parse(&text));
        match parsed {
            Ok(keys) => keys,
            Err(problem) => AgeKeys {
                identities: Vec::new(),
                problem: Some(format!("{}: {problem}", path.display())),
            },
        }
    }
}

/// Why a SOPS file could not be decrypted. Messages name the reason and, where
/// useful, the key path of a value; never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SopsError {
    #[error(
        "is SOPS-encrypted, but the repository has no age key (set decryption.ageKeyFile, or --age-key-file offline)"
    )]
    NoKey,
    #[error("is SOPS-encrypted, but the age key file cannot be used: {0}")]
    KeyFile(String),
    #[error(
        "is SOPS-encrypted for {recipients}, and none of the configured age identities matches"
    )]
    WrongKey { recipients: String },
    #[error(
        "is SOPS-encrypted with {kinds} only; stackd decrypts files encrypted for age recipients"
    )]
    UnsupportedKey { kinds: String },
    #[error(
        "SOPS value at {at:?} does not authenticate: it was modified after encryption, or encrypted with another data key"
    )]
    TamperedValue { at: String },
    #[error("SOPS MAC does not match: the file was modified after encryption")]
    MacMismatch,
    #[error("malformed SOPS file: {0}")]
    Malformed(String),
}

impl SopsError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SopsError::NoKey => "no_key",
            SopsError::KeyFile(_) => "key_file",
            SopsError::WrongKey { .. } => "wrong_key",
            SopsError::UnsupportedKey { .. } => "unsupported_key",
            SopsError::TamperedValue { .. } => "tampered_value",
            SopsError::MacMismatch => "mac_mismatch",
            SopsError::Malformed(_) => "malformed",
        }
    }
}

/// A file source that decrypts SOPS files on read and remembers what it decrypted.
pub struct DecryptingSource<'a> {
    inner: &'a dyn FileSource,
    keys: Option<&'a AgeKeys>,
    decrypted: Mutex<Vec<(RepoPath, Vec<String>)>>,
    /// The prefix of the markers that stand for values, in marker mode.
    marker: Option<String>,
}

impl<'a> DecryptingSource<'a> {
    pub fn new(inner: &'a dyn FileSource, keys: Option<&'a AgeKeys>) -> Self {
        DecryptingSource {
            inner,
            keys,
            decrypted: Mutex::new(Vec::new()),
            marker: None,
        }
    }

    /// The same source, but every decrypted value reads as a marker that no
    /// file holds by chance.
    pub fn with_markers(mut self) -> Self {
        self.marker = Some(format!("__sops_value_{:016x}_", rand::random::<u64>()));
        self
    }

    /// Whether `text` holds a marker (in marker mode).
    pub fn marked(&self, text: &str) -> bool {
        self.marker.as_deref().is_some_and(|m| text.contains(m))
    }

    /// Whether any file was decrypted.
    pub fn any_decrypted(&self) -> bool {
        !self
            .decrypted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Whether the file at `path` was decrypted.
    pub fn was_decrypted(&self, path: &str) -> bool {
        let decrypted = self.decrypted.lock().unwrap_or_else(|e| e.into_inner());
        decrypted.iter().any(|(p, _)| p.as_str() == path)
    }

    /// (file, value) for every decrypted value, to redact error messages.
    pub fn decrypted_values(&self) -> Vec<(String, String)> {
        let decrypted = self.decrypted.lock().unwrap_or_else(|e| e.into_inner());
        decrypted
            .iter()
            .flat_map(|(path, values)| values.iter().map(|v| (path.to_string(), v.clone())))
            .collect()
    }

    fn decrypt(&self, path: &RepoPath, bytes: Vec<u8>) -> Result<Vec<u8>, FileError> {
        if !format::looks_encrypted(&bytes) {
            return Ok(bytes);
        }
        let fail = |error| FileError::Sops {
            path: path.clone(),
            error,
        };
        let Some(document) = format::parse(path.file_name(), &bytes).map_err(fail)? else {
            return Ok(bytes);
        };
        let keys = match self.keys {
            None => return Err(fail(SopsError::NoKey)),
            Some(AgeKeys {
                problem: Some(problem),
                ..
            }) => return Err(fail(SopsError::KeyFile(problem.clone()))),
            Some(keys) => keys,
        };
        let (cleartext, values) = document
            .decrypt(&keys.identities, self.marker.as_deref())
            .map_err(fail)?;
        let values = values
            .into_iter()
            .filter(|v| !v.trim().is_empty())
            .collect();
        self.decrypted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((path.clone(), values));
        Ok(cleartext)
    }
}

impl FileSource for DecryptingSource<'_> {
    fn read(&self, path: &RepoPath) -> Result<Vec<u8>, FileError> {
        let bytes = self.inner.read(path)?;
        self.decrypt(path, bytes)
    }

    fn kind(&self, path: &RepoPath) -> Result<Option<EntryKind>, FileError> {
        self.inner.kind(path)
    }

    fn list(&self, dir: &RepoPath) -> Result<Vec<(String, EntryKind)>, FileError> {
        self.inner.list(dir)
    }
}

#[cfg(test)]
mod tests;
