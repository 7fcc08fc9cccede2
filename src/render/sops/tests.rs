//! The format, checked against documents built here with the same primitives
//! (the real `sops` binary is used by tests/sops.rs).

use std::io::Write;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha512};

use super::*;
use crate::render::files::MemSource;

fn enc(key: &[u8; 32], plain: &[u8], aad: &str, kind: &str) -> String {
    let iv: [u8; 32] = rand::random();
    let cipher = AesGcm::<Aes256, U32>::new_from_slice(key).unwrap();
    let mut out = cipher
        .encrypt(
            Nonce::<U32>::from_slice(&iv),
            Payload {
                msg: plain,
                aad: aad.as_bytes(),
            },
        )
        .unwrap();
    let tag = out.split_off(out.len() - 16);
    format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
        STANDARD.encode(out),
        STANDARD.encode(iv),
        STANDARD.encode(tag)
    )
}

/// A dotenv SOPS file with `pairs`, its data key wrapped for `recipient`.
fn dotenv(recipient: &age::x25519::Recipient, pairs: &[(&str, &str)]) -> String {
    let key: [u8; 32] = rand::random();
    let mut wrapped = Vec::new();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient)).unwrap();
    let armor =
        age::armor::ArmoredWriter::wrap_output(&mut wrapped, age::armor::Format::AsciiArmor)
            .unwrap();
    let mut writer = encryptor.wrap_output(armor).unwrap();
    writer.write_all(&key).unwrap();
    writer.finish().unwrap().finish().unwrap();
    let mut text = String::new();
    let mut hasher = Sha512::new();
    for (name, value) in pairs {
        hasher.update(value.as_bytes());
        text.push_str(&format!(
            "{name}={}\n",
            enc(&key, value.as_bytes(), &format!("{name}:"), "str")
        ));
    }
    let lastmodified = "2026-12-04T20:00:00Z";
    let mac = hex::encode_upper(hasher.finalize());
    let wrapped = String::from_utf8(wrapped).unwrap().replace('\n', "\\n");
    text.push_str(&format!(
        "sops_age__list_0__map_enc={wrapped}\nsops_age__list_0__map_recipient={recipient}\nsops_lastmodified={lastmodified}\nsops_mac={}\nsops_version=3.11.0\n",
        enc(&key, mac.as_bytes(), lastmodified, "str")
    ));
    text
}

fn keys(identity: &age::x25519::Identity) -> AgeKeys {
    use age::secrecy::ExposeSecret;
    AgeKeys::parse(&format!(
        "# created: now\n# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    ))
    .unwrap()
}

fn read(files: &[(&str, &str)], keys: Option<&AgeKeys>, path: &str) -> Result<Vec<u8>, FileError> {
    let mut source = MemSource::new();
    for (name, text) in files {
        source = source.with_file(name, text.as_bytes());
    }
    DecryptingSource::new(&source, keys).read(&RepoPath::new(path).unwrap())
}

#[test]
fn dotenv_round_trip_quotes_for_the_compose_parser() {
    let identity = age::x25519::Identity::generate();
    let pairs = [
        ("PLAIN", "abc-1.2"),
        ("SPACED", "two words $HOME"),
        ("LINES", "line one\nline 'two' ü\\"),
    ];
    let file = dotenv(&identity.to_public(), &pairs);
    let out = read(&[(".env", &file)], Some(&keys(&identity)), ".env").unwrap();
    let text = String::from_utf8(out).unwrap();
    let parsed =
        crate::render::compose::dotenv::parse(&text, &RepoPath::new(".env").unwrap(), &|_| None)
            .unwrap();
    let expected: Vec<(String, Option<String>)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect();
    assert_eq!(parsed, expected, "{text}");
}

#[test]
fn every_failure_names_its_reason_and_no_value() {
    let identity = age::x25519::Identity::generate();
    let other = age::x25519::Identity::generate();
    let file = dotenv(&identity.to_public(), &[("TOKEN", "s3cr3t-value")]);
    let error = |text: &str, keys: Option<&AgeKeys>| match read(&[("a.env", text)], keys, "a.env") {
        Err(FileError::Sops { error, .. }) => error,
        other => panic!("expected a SOPS error, got {other:?}"),
    };
    assert_eq!(error(&file, None).label(), "no_key");
    assert_eq!(error(&file, Some(&keys(&other))).label(), "wrong_key");
    let broken = AgeKeys::read(Path::new("/nonexistent/keys.txt"));
    assert_eq!(error(&file, Some(&broken)).label(), "key_file");

    // Another value with the same data key cannot be swapped in: the MAC covers values.
    let mut lines: Vec<&str> = file.lines().collect();
    let token = lines[0].to_string();
    let flipped = token.replacen("data:", "data:A", 1);
    lines[0] = &flipped;
    let tampered = lines.join("\n");
    assert_eq!(
        error(&tampered, Some(&keys(&identity))),
        SopsError::TamperedValue { at: "TOKEN".into() }
    );
    let no_mac = file
        .lines()
        .map(|l| match l.strip_prefix("sops_mac=ENC[AES256_GCM,data:") {
            Some(rest) => format!("sops_mac=ENC[AES256_GCM,data:B{rest}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        error(&no_mac, Some(&keys(&identity))),
        SopsError::MacMismatch
    );
    let kms = "A=ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]\nsops_kms__list_0__map_arn=arn:aws:kms:x\nsops_lastmodified=2026-01-01T00:00:00Z\nsops_mac=ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]\n";
    assert_eq!(
        error(kms, Some(&keys(&identity))),
        SopsError::UnsupportedKey {
            kinds: "kms".into()
        }
    );
    for e in [error(&tampered, Some(&keys(&identity))), error(&file, None)] {
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }
}

#[test]
fn plain_files_pass_through_and_keys_parse_without_quoting() {
    let plain = "services:\n  web: {image: nginx}  # not ENC[AES256_GCM, anything\n";
    assert_eq!(
        read(&[("compose.yaml", plain)], None, "compose.yaml").unwrap(),
        plain.as_bytes()
    );
    assert_eq!(
        AgeKeys::parse("AGE-SECRET-KEY-1NOTAKEY\n").unwrap_err(),
        "line 1: not an age X25519 identity"
    );
    assert!(AgeKeys::parse("# only a comment\n").is_err());
    assert!(
        AgeKeys::parse("AGE-PLUGIN-YUBIKEY-1ABC\n")
            .unwrap_err()
            .contains("plugin")
    );
}

#[test]
fn markers_stand_for_values_after_the_mac_check() {
    let identity = age::x25519::Identity::generate();
    let file = dotenv(
        &identity.to_public(),
        &[("TOKEN", "s3cr3t-value"), ("N", "1")],
    );
    let keys = keys(&identity);
    let source = MemSource::new().with_file("a.env", file.as_bytes());
    let marking = DecryptingSource::new(&source, Some(&keys)).with_markers();
    let text = String::from_utf8(marking.read(&RepoPath::new("a.env").unwrap()).unwrap()).unwrap();
    assert!(!text.contains("s3cr3t") && !text.contains("=1\n"), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| marking.marked(l)), "{text}");
    assert!(marking.any_decrypted() && marking.was_decrypted("a.env"));
    assert!(!marking.marked("__sops_value_0000000000000000_0__"));
    // A tampered file fails in marker mode too.
    let tampered = file.replacen("data:", "data:A", 1);
    let source = MemSource::new().with_file("a.env", tampered.as_bytes());
    let marking = DecryptingSource::new(&source, Some(&keys)).with_markers();
    assert!(marking.read(&RepoPath::new("a.env").unwrap()).is_err());
}
