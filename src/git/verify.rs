//! Commit signature verification (`verify:`): the commit a ref points at must
//! carry a good signature by a trusted key before any of its trees is read.
//!
//! Git stores the signature in the commit's `gpgsig` header; what it signs is
//! the raw commit object without that header (libgit2's `extract_signature`
//! returns both). SSH signatures (`gpg.format=ssh`, the SSHSIG format, namespace
//! `git`) are trusted through an allowed-signers file as `ssh-keygen -Y verify`
//! reads it; OpenPGP signatures through an exported keyring (`gpg --export`).
//! Both files are read again at each poll, like the `auth` files.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

/// The namespace git signs commits in (`ssh-keygen -Y sign -n git`).
const SSH_NAMESPACE: &str = "git";

/// Repository key `verify`: where the trusted keys are. At least one is required.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Verify {
    /// An allowed-signers file (`ssh-keygen(1)`, "ALLOWED SIGNERS").
    #[serde(default)]
    pub ssh_allowed_signers: Option<PathBuf>,
    /// OpenPGP public keys, armored or binary (`gpg --export [--armor]`).
    #[serde(default)]
    pub gpg_keyring: Option<PathBuf>,
}

impl Verify {
    /// A configuration error when no trust source is given.
    pub fn check(&self) -> Result<(), String> {
        if self.ssh_allowed_signers.is_none() && self.gpg_keyring.is_none() {
            return Err("needs sshAllowedSigners, gpgKeyring or both".into());
        }
        Ok(())
    }
}

/// A good signature by a trusted key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// `SHA256:…` for SSH keys, the hex fingerprint for OpenPGP keys.
    pub fingerprint: String,
    /// The allowed-signers principals, or the OpenPGP key's first user ID.
    pub identity: String,
}

/// Why a commit is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the commit is not signed")]
    Unsigned,
    #[error("the signature is neither SSH nor OpenPGP")]
    UnsupportedFormat,
    #[error("the commit is {0}-signed but no {1} is configured")]
    NoTrustFor(&'static str, &'static str),
    #[error("cannot read {field} file {path}: {message}")]
    TrustFile {
        field: &'static str,
        path: String,
        message: String,
    },
    #[error("unreadable signature: {0}")]
    Malformed(String),
    #[error("unknown signer: the key is not in {0}")]
    UnknownSigner(&'static str),
    #[error("the key is not allowed to sign in namespace \"git\" (allowed signers `namespaces=`)")]
    Namespace,
    #[error("the key is not valid at the commit's time (allowed signers {0})")]
    OutsideValidity(&'static str),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("the OpenPGP key expired at {0}")]
    Expired(String),
    #[error("the OpenPGP key is revoked")]
    Revoked,
}

/// A refusal with the signer's key fingerprint, or `unsigned`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    pub signer: String,
    pub refusal: Refusal,
}

impl VerifyFailure {
    fn new(signer: impl Into<String>, refusal: Refusal) -> Self {
        VerifyFailure {
            signer: signer.into(),
            refusal,
        }
    }
}

/// Verifies `commit` in `repo` against the trust in `settings`. Reads the commit
/// object only, never a tree.
pub fn verify_commit(
    repo: &Repository,
    commit: Oid,
    settings: &Verify,
) -> Result<Verified, VerifyFailure> {
    let (signature, payload) = match repo.extract_signature(&commit, None) {
        Ok(pair) => pair,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Err(VerifyFailure::new("unsigned", Refusal::Unsigned));
        }
        Err(e) => {
            return Err(VerifyFailure::new(
                "unknown",
                Refusal::Malformed(e.message().to_string()),
            ));
        }
    };
    let signature = String::from_utf8_lossy(&signature);
    // valid-after/valid-before are checked at the committer time, as git does.
    let committed_at = repo
        .find_commit(commit)
        .map(|c| c.committer().when().seconds())
        .unwrap_or(0);
    let now = chrono::Utc::now().timestamp();
    if signature
        .trim_start()
        .starts_with("-----BEGIN SSH SIGNATURE-----")
    {
        let path = settings.ssh_allowed_signers.as_deref().ok_or_else(|| {
            VerifyFailure::new(
                ssh_signer(&signature),
                Refusal::NoTrustFor("SSH", "sshAllowedSigners"),
            )
        })?;
        let allowed = read_text(path, "sshAllowedSigners")
            .map_err(|r| VerifyFailure::new(ssh_signer(&signature), r))?;
        verify_ssh(&signature, &payload, &allowed, committed_at)
    } else if signature
        .trim_start()
        .starts_with("-----BEGIN PGP SIGNATURE-----")
    {
        let path = settings.gpg_keyring.as_deref().ok_or_else(|| {
            VerifyFailure::new(
                pgp_signer(&signature),
                Refusal::NoTrustFor("OpenPGP", "gpgKeyring"),
            )
        })?;
        let keyring = std::fs::read(path).map_err(|e| {
            VerifyFailure::new(
                pgp_signer(&signature),
                Refusal::TrustFile {
                    field: "gpgKeyring",
                    path: path.display().to_string(),
                    message: e.to_string(),
                },
            )
        })?;
        verify_pgp(
            &signature,
            &payload,
            &keyring,
            &path.display().to_string(),
            now,
        )
    } else {
        Err(VerifyFailure::new("unknown", Refusal::UnsupportedFormat))
    }
}

fn read_text(path: &Path, field: &'static str) -> Result<String, Refusal> {
    std::fs::read_to_string(path).map_err(|e| Refusal::TrustFile {
        field,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

// ---------------------------------------------------------------- SSH

fn ssh_signer(armored: &str) -> String {
    ssh_key::SshSig::from_pem(armored.trim())
        .map(|sig| {
            sig.public_key()
                .fingerprint(ssh_key::HashAlg::Sha256)
                .to_string()
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// Verifies an armored SSHSIG over `payload` against an allowed-signers file's text.
pub fn verify_ssh(
    armored: &str,
    payload: &[u8],
    allowed_signers: &str,
    at_time: i64,
) -> Result<Verified, VerifyFailure> {
    let sig = ssh_key::SshSig::from_pem(armored.trim())
        .map_err(|e| VerifyFailure::new("unknown", Refusal::Malformed(e.to_string())))?;
    let fingerprint = sig
        .public_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let fail = |refusal| VerifyFailure::new(fingerprint.clone(), refusal);
    let entries = parse_allowed_signers(allowed_signers);
    let same_key: Vec<&AllowedSigner> = entries
        .iter()
        .filter(|e| e.key.key_data() == sig.public_key())
        .collect();
    if same_key.is_empty() {
        return Err(fail(Refusal::UnknownSigner("sshAllowedSigners")));
    }
    let in_namespace: Vec<&&AllowedSigner> = same_key
        .iter()
        .filter(|e| e.allows_namespace(SSH_NAMESPACE))
        .collect();
    if in_namespace.is_empty() {
        return Err(fail(Refusal::Namespace));
    }
    let Some(entry) = in_namespace.iter().find(|e| e.valid_at(at_time)) else {
        return Err(fail(Refusal::OutsideValidity("valid-after/valid-before")));
    };
    entry
        .key
        .verify(SSH_NAMESPACE, payload, &sig)
        .map_err(|e| fail(Refusal::BadSignature(e.to_string())))?;
    Ok(Verified {
        fingerprint,
        identity: entry.principals.clone(),
    })
}

/// One line of an allowed-signers file.
#[derive(Debug)]
pub struct AllowedSigner {
    pub principals: String,
    pub namespaces: Option<Vec<String>>,
    pub valid_after: Option<i64>,
    pub valid_before: Option<i64>,
    pub key: ssh_key::PublicKey,
}

impl AllowedSigner {
    fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| glob_match(n, namespace)))
    }

    fn valid_at(&self, time: i64) -> bool {
        self.valid_after.is_none_or(|t| time >= t) && self.valid_before.is_none_or(|t| time < t)
    }
}

/// Parses `principals [options] keytype base64 [comment]` lines. Lines that do
/// not parse, and `cert-authority` lines (certificates are not supported), are
/// skipped: they trust nobody.
pub fn parse_allowed_signers(text: &str) -> Vec<AllowedSigner> {
    text.lines().filter_map(parse_allowed_signer).collect()
}

fn parse_allowed_signer(line: &str) -> Option<AllowedSigner> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let tokens = split_unquoted(line, |c| c.is_ascii_whitespace());
    let principals = unquote(tokens.first()?);
    let key_at = |i: usize| -> Option<ssh_key::PublicKey> {
        let text = format!("{} {}", tokens.get(i)?, tokens.get(i + 1)?);
        ssh_key::PublicKey::from_openssh(&text).ok()
    };
    let (options, key) = match key_at(1) {
        Some(key) => (None, key),
        None => (Some(tokens.get(1)?.as_str()), key_at(2)?),
    };
    let mut signer = AllowedSigner {
        principals,
        namespaces: None,
        valid_after: None,
        valid_before: None,
        key,
    };
    for option in options
        .map(|o| split_unquoted(o, |c| c == ','))
        .unwrap_or_default()
    {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(unquote(v))),
            None => (option.to_ascii_lowercase(), None),
        };
        match (name.as_str(), value) {
            ("cert-authority", _) => return None,
            ("namespaces", Some(v)) => {
                signer.namespaces = Some(v.split(',').map(|n| n.trim().to_string()).collect())
            }
            ("valid-after", Some(v)) => signer.valid_after = Some(parse_ssh_time(&v)?),
            ("valid-before", Some(v)) => signer.valid_before = Some(parse_ssh_time(&v)?),
            // An option we do not know could restrict the key: do not trust it.
            _ => return None,
        }
    }
    Some(signer)
}

/// Splits on `sep` outside double quotes (quotes kept).
fn split_unquoted(text: &str, sep: impl Fn(char) -> bool) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
            current.push(c);
        } else if !quoted && sep(c) {
            if !current.is_empty() {
                parts.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

fn unquote(text: &str) -> String {
    text.trim_matches('"').to_string()
}

/// `YYYYMMDD[HHMM[SS]][Z]`, read as UTC (stackd runs in UTC; ssh-keygen would
/// use local time without the `Z`).
fn parse_ssh_time(text: &str) -> Option<i64> {
    let digits = text.strip_suffix(['Z', 'z']).unwrap_or(text);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let padded = match digits.len() {
        8 => format!("{digits}000000"),
        12 => format!("{digits}00"),
        14 => digits.to_string(),
        _ => return None,
    };
    chrono::NaiveDateTime::parse_from_str(&padded, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// `*` and `?` patterns, as ssh-keygen matches namespaces.
fn glob_match(pattern: &str, text: &str) -> bool {
    glob::Pattern::new(pattern).is_ok_and(|p| p.matches(text))
}

// ---------------------------------------------------------------- OpenPGP

fn pgp_signer(armored: &str) -> String {
    use pgp::composed::{Deserializable, DetachedSignature};
    DetachedSignature::from_string(armored)
        .ok()
        .and_then(|(sig, _)| issuer_of(&sig.signature))
        .unwrap_or_else(|| "unknown".into())
}

fn issuer_of(sig: &pgp::packet::Signature) -> Option<String> {
    sig.issuer_fingerprint()
        .first()
        .map(|f| format!("{f:X}"))
        .or_else(|| {
            sig.issuer_key_id()
                .first()
                .map(|k| hex::encode_upper(k.as_ref()))
        })
}

/// Verifies an armored OpenPGP signature over `payload` against a keyring
/// (armored or binary, named `keyring_path` in errors), with the key's expiry
/// and revocation checked at `now`.
pub fn verify_pgp(
    armored: &str,
    payload: &[u8],
    keyring: &[u8],
    keyring_path: &str,
    now: i64,
) -> Result<Verified, VerifyFailure> {
    use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
    use pgp::types::KeyDetails;

    let (detached, _) = DetachedSignature::from_string(armored)
        .map_err(|e| VerifyFailure::new("unknown", Refusal::Malformed(e.to_string())))?;
    let sig = &detached.signature;
    let issuer = issuer_of(sig).unwrap_or_else(|| "unknown".into());
    let fail = |signer: &str, refusal| VerifyFailure::new(signer, refusal);
    let keys: Vec<SignedPublicKey> = SignedPublicKey::from_reader_many(keyring)
        .map(|(keys, _)| keys.filter_map(Result::ok).collect())
        .map_err(|e| {
            fail(
                &issuer,
                Refusal::TrustFile {
                    field: "gpgKeyring",
                    path: keyring_path.to_string(),
                    message: e.to_string(),
                },
            )
        })?;
    let issued_by = |fp: pgp::types::Fingerprint, id: pgp::types::KeyId| {
        sig.issuer_fingerprint().iter().any(|f| **f == fp)
            || sig.issuer_key_id().iter().any(|k| **k == id)
    };
    for key in &keys {
        let identity = key
            .details
            .users
            .first()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
            .unwrap_or_default();
        let primary = &key.primary_key;
        if issued_by(primary.fingerprint(), primary.legacy_key_id()) {
            let fingerprint = format!("{:X}", primary.fingerprint());
            check_primary(key, now).map_err(|r| fail(&fingerprint, r))?;
            sig.verify(primary, payload)
                .map_err(|e| fail(&fingerprint, Refusal::BadSignature(e.to_string())))?;
            return Ok(Verified {
                fingerprint,
                identity,
            });
        }
        for sub in &key.public_subkeys {
            if !issued_by(sub.key.fingerprint(), sub.key.legacy_key_id()) {
                continue;
            }
            let fingerprint = format!("{:X}", sub.key.fingerprint());
            check_primary(key, now).map_err(|r| fail(&fingerprint, r))?;
            check_subkey(key, sub, now).map_err(|r| fail(&fingerprint, r))?;
            sig.verify(&sub.key, payload)
                .map_err(|e| fail(&fingerprint, Refusal::BadSignature(e.to_string())))?;
            return Ok(Verified {
                fingerprint,
                identity,
            });
        }
    }
    Err(fail(&issuer, Refusal::UnknownSigner("gpgKeyring")))
}

/// The newest of `signatures` (by creation time).
fn newest<'a>(
    signatures: impl Iterator<Item = &'a pgp::packet::Signature>,
) -> Option<&'a pgp::packet::Signature> {
    signatures.max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
}

fn expiry_check(
    created: u32,
    binding: Option<&pgp::packet::Signature>,
    now: i64,
) -> Result<(), Refusal> {
    let Some(valid_for) = binding.and_then(|s| s.key_expiration_time()) else {
        return Ok(());
    };
    if valid_for.as_secs() == 0 {
        return Ok(());
    }
    let expires = i64::from(created) + i64::from(valid_for.as_secs());
    if now >= expires {
        let when = chrono::DateTime::from_timestamp(expires, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| expires.to_string());
        return Err(Refusal::Expired(when));
    }
    Ok(())
}

fn check_primary(key: &pgp::composed::SignedPublicKey, now: i64) -> Result<(), Refusal> {
    use pgp::types::KeyDetails;
    let primary = &key.primary_key;
    if key
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(primary).is_ok())
    {
        return Err(Refusal::Revoked);
    }
    // The newest self-signature (direct or on a user ID) sets the expiry.
    let self_signed = key
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.verify_key(primary).is_ok())
        .chain(key.details.users.iter().flat_map(|u| {
            u.signatures.iter().filter(|s| {
                s.verify_certification(primary, pgp::types::Tag::UserId, &u.id)
                    .is_ok()
            })
        }));
    expiry_check(primary.created_at().as_secs(), newest(self_signed), now)
}

fn check_subkey(
    key: &pgp::composed::SignedPublicKey,
    sub: &pgp::composed::SignedPublicSubKey,
    now: i64,
) -> Result<(), Refusal> {
    use pgp::packet::SignatureType;
    use pgp::types::KeyDetails;
    let good =
        |s: &&pgp::packet::Signature| s.verify_subkey_binding(&key.primary_key, &sub.key).is_ok();
    if sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
        .any(|s| good(&s))
    {
        return Err(Refusal::Revoked);
    }
    let binding = newest(
        sub.signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
            .filter(good),
    );
    let Some(flags) = binding.map(|b| b.key_flags()) else {
        return Err(Refusal::BadSignature(
            "the subkey has no valid binding".into(),
        ));
    };
    if !flags.sign() {
        return Err(Refusal::BadSignature(
            "the subkey is not a signing key".into(),
        ));
    }
    expiry_check(sub.key.created_at().as_secs(), binding, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAp3XTHeEVBEOZXiiL5a/odnKhZK5cr02aSIL77hR47b";

    #[test]
    fn allowed_signers_lines() {
        let text = format!(
            "# comment\n\n\
             alice@example.com {KEY} alice\n\
             \"bob@example.com,ci@*\" namespaces=\"git,file\",valid-after=\"20240101\",valid-before=20250101Z {KEY}\n\
             carol@example.com cert-authority {KEY}\n\
             dave@example.com no-such-option {KEY}\n\
             broken line\n"
        );
        let signers = parse_allowed_signers(&text);
        assert_eq!(signers.len(), 2, "{signers:?}");
        assert_eq!(signers[0].principals, "alice@example.com");
        assert!(signers[0].allows_namespace("git"));
        assert!(signers[0].valid_at(0));
        let bob = &signers[1];
        assert_eq!(bob.principals, "bob@example.com,ci@*");
        assert_eq!(
            bob.namespaces.as_deref(),
            Some(&["git".to_string(), "file".to_string()][..])
        );
        assert!(bob.allows_namespace("git") && !bob.allows_namespace("email"));
        assert_eq!(bob.valid_after, Some(1_704_067_200));
        assert!(bob.valid_at(1_710_000_000));
        assert!(!bob.valid_at(1_700_000_000) && !bob.valid_at(1_740_000_000));
        assert_eq!(parse_ssh_time("202401011230"), Some(1_704_112_200));
        assert_eq!(parse_ssh_time("2024"), None);
    }

    #[test]
    fn at_least_one_trust_source() {
        let none = Verify {
            ssh_allowed_signers: None,
            gpg_keyring: None,
        };
        assert!(none.check().is_err());
        let json = r#"{"sshAllowedSigners":"/a","gpgKeyring":"/k"}"#;
        let both: Verify = serde_json::from_str(json).unwrap();
        assert!(both.check().is_ok());
        assert!(serde_json::from_str::<Verify>(r#"{"sshAllowedSigner":"/a"}"#).is_err());
    }

    #[test]
    fn refusals_name_the_signer_or_unsigned() {
        let err = verify_ssh("not a signature", b"x", "", 0).unwrap_err();
        assert!(matches!(err.refusal, Refusal::Malformed(_)));
        let err = verify_pgp("garbage", b"x", b"", "/k", 0).unwrap_err();
        assert_eq!(err.signer, "unknown");
    }
}
