//! The SOPS file format, as `sops` 3 writes it: YAML, JSON, dotenv, INI and
//! binary (a JSON or YAML document with one `data` value).
//!
//! Each value is `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`: AES-256-GCM with a
//! 32-byte IV, the data key, and the value's key path joined by `:` plus a
//! trailing `:` as additional data. The data key is age-encrypted once per
//! recipient. The MAC is the upper-case hex SHA-512 over the cleartext of every
//! value in document order (only the encrypted ones, after a fixed prefix, with
//! `mac_only_encrypted`), itself encrypted with the data key and `lastmodified`
//! as additional data.

use std::io::Read;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha512};

use super::SopsError;

/// SHA-256 of "sops": the MAC's first input when only encrypted values count.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Key types sops knows besides age, as they appear in the metadata.
const OTHER_KEY_TYPES: [&str; 5] = ["kms", "gcp_kms", "azure_kv", "hc_vault", "pgp"];

/// A cheap test run on every file: every SOPS file has an encrypted MAC.
pub fn looks_encrypted(bytes: &[u8]) -> bool {
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    has(b"ENC[AES256_GCM,") && has(b"sops")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Yaml,
    Json,
    Dotenv,
    Ini,
    /// A YAML or JSON document whose only value, `data`, is the whole file.
    Binary {
        json: bool,
    },
}

/// A parsed SOPS document: its values (ordered) and its metadata.
pub struct Document {
    kind: Kind,
    tree: Value,
    meta: Metadata,
}

#[derive(Default)]
struct Metadata {
    age: Vec<(String, String)>,
    others: Vec<&'static str>,
    lastmodified: String,
    mac: String,
    mac_only_encrypted: bool,
}

/// Parses `bytes` as a SOPS file; `None` when the file carries no sops metadata
/// after all (it only mentions it) and is read as is.
pub fn parse(file_name: &str, bytes: &[u8]) -> Result<Option<Document>, SopsError> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(None);
    };
    let ext = file_name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    // `.env`, `app.env`, `.env.local`, but not `.env.yaml`.
    let dotenv_name = ext == "env"
        || (file_name.starts_with(".env") && !matches!(ext, "yaml" | "yml" | "json" | "ini"));
    if dotenv_name || (!text.trim_start().starts_with('{') && has_line(text, "sops_mac=")) {
        return flat(text, Kind::Dotenv);
    }
    if ext == "ini" || (has_line(text, "[sops]") && !ext.starts_with("y")) {
        return flat(text, Kind::Ini);
    }
    let json = text.trim_start().starts_with('{');
    let parsed: Option<Value> = if json {
        serde_json::from_str(text).ok()
    } else {
        serde_saphyr::from_str(text).ok()
    };
    let Some(Value::Object(mut map)) = parsed else {
        return Ok(None);
    };
    let Some(Value::Object(sops)) = map.shift_remove("sops") else {
        return Ok(None);
    };
    if !sops.contains_key("mac") {
        return Ok(None);
    }
    if !json && text.contains("#ENC[AES256_GCM,") {
        return Err(SopsError::Malformed(
            "encrypted YAML comments are not supported: remove the comments before encrypting, or keep them clear with --unencrypted-comment-regex".to_string(),
        ));
    }
    let structured = matches!(ext, "yaml" | "yml" | "json");
    let kind = if !structured && map.len() == 1 && map.contains_key("data") {
        Kind::Binary { json }
    } else if json {
        Kind::Json
    } else {
        Kind::Yaml
    };
    Ok(Some(Document {
        kind,
        tree: Value::Object(map),
        meta: tree_metadata(&sops)?,
    }))
}

fn has_line(text: &str, prefix: &str) -> bool {
    text.lines().any(|l| l.trim_start().starts_with(prefix))
}

fn tree_metadata(sops: &Map<String, Value>) -> Result<Metadata, SopsError> {
    let text = |key: &str| sops.get(key).and_then(Value::as_str).map(str::to_string);
    let mut meta = Metadata {
        lastmodified: text("lastmodified").ok_or_else(|| missing("lastmodified"))?,
        mac: text("mac").ok_or_else(|| missing("mac"))?,
        mac_only_encrypted: sops
            .get("mac_only_encrypted")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ..Metadata::default()
    };
    // Keys sit at the top, or in key groups (all groups are tried: with one
    // group, any key opens the data key).
    let mut groups = vec![sops];
    if let Some(Value::Array(key_groups)) = sops.get("key_groups") {
        if key_groups.len() > 1 {
            return Err(SopsError::Malformed(
                "Shamir key groups are not supported".to_string(),
            ));
        }
        groups.extend(key_groups.iter().filter_map(Value::as_object));
    }
    for group in groups {
        if let Some(Value::Array(entries)) = group.get("age") {
            for entry in entries {
                let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
                meta.age
                    .push((field("recipient").to_string(), field("enc").to_string()));
            }
        }
        for other in OTHER_KEY_TYPES {
            if matches!(group.get(other), Some(Value::Array(a)) if !a.is_empty())
                && !meta.others.contains(&other)
            {
                meta.others.push(other);
            }
        }
    }
    Ok(meta)
}

fn missing(key: &str) -> SopsError {
    SopsError::Malformed(format!("sops metadata has no {key}"))
}

/// dotenv (`KEY=VALUE`, metadata as `sops_*` keys) and INI (`[section]` and
/// `key = value`, metadata in `[sops]`): flat formats whose metadata keys
/// flatten lists and maps as `age__list_0__map_enc`.
fn flat(text: &str, kind: Kind) -> Result<Option<Document>, SopsError> {
    let mut tree = Map::new();
    let mut section: Option<String> = None;
    let mut sops: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            if trimmed.starts_with("#ENC[") || trimmed.starts_with(";ENC[") {
                return Err(SopsError::Malformed(
                    "encrypted comments are not supported: remove the comments before encrypting"
                        .to_string(),
                ));
            }
            continue;
        }
        if kind == Kind::Ini && trimmed.starts_with('[') && trimmed.ends_with(']') {
            let name = trimmed[1..trimmed.len() - 1].trim().to_string();
            tree.entry(name.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            section = Some(name);
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(SopsError::Malformed("a line is not KEY=VALUE".to_string()));
        };
        let (key, value) = match kind {
            Kind::Ini => (key.trim().to_string(), value.trim().replace("\\n", "\n")),
            _ => (key.to_string(), value.replace("\\n", "\n")),
        };
        match (&kind, section.as_deref()) {
            (Kind::Ini, Some("sops")) => sops.push((key, value)),
            (Kind::Ini, Some(name)) => {
                if let Some(Value::Object(s)) = tree.get_mut(name) {
                    s.insert(key, Value::String(value));
                }
            }
            (Kind::Ini, None) => {
                return Err(SopsError::Malformed(
                    "an INI key outside any section".to_string(),
                ));
            }
            _ => match key.strip_prefix("sops_") {
                Some(meta) => sops.push((meta.to_string(), value)),
                None => {
                    tree.insert(key, Value::String(value));
                }
            },
        }
    }
    if kind == Kind::Ini {
        tree.shift_remove("sops");
    }
    if !sops.iter().any(|(k, _)| k == "mac") {
        return Ok(None);
    }
    Ok(Some(Document {
        kind,
        tree: Value::Object(tree),
        meta: flat_metadata(&sops)?,
    }))
}

fn flat_metadata(pairs: &[(String, String)]) -> Result<Metadata, SopsError> {
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let mut meta = Metadata {
        lastmodified: get("lastmodified").ok_or_else(|| missing("lastmodified"))?,
        mac: get("mac").ok_or_else(|| missing("mac"))?,
        mac_only_encrypted: get("mac_only_encrypted").as_deref() == Some("true"),
        ..Metadata::default()
    };
    if pairs
        .iter()
        .any(|(k, _)| k.starts_with("key_groups__list_1"))
    {
        return Err(SopsError::Malformed(
            "Shamir key groups are not supported".to_string(),
        ));
    }
    for (key, value) in pairs {
        // `age__list_0__map_enc`, or the same inside `key_groups__list_0__map_`.
        let key = key.strip_prefix("key_groups__list_0__map_").unwrap_or(key);
        let parts: Vec<&str> = key.split("__").collect();
        match parts.as_slice() {
            ["age", index, field] => {
                let index: usize = index
                    .strip_prefix("list_")
                    .and_then(|i| i.parse().ok())
                    .ok_or_else(|| SopsError::Malformed("bad age key index".to_string()))?;
                if meta.age.len() <= index {
                    meta.age.resize(index + 1, (String::new(), String::new()));
                }
                match *field {
                    "map_recipient" => meta.age[index].0 = value.clone(),
                    "map_enc" => meta.age[index].1 = value.clone(),
                    _ => {}
                }
            }
            [other, ..] => {
                if let Some(known) = OTHER_KEY_TYPES.iter().find(|k| *k == other)
                    && !meta.others.contains(known)
                {
                    meta.others.push(known);
                }
            }
            [] => {}
        }
    }
    Ok(meta)
}

impl Document {
    /// Decrypts the document with `identities`: the cleartext file as `sops -d`
    /// would write it, and every decrypted value. With a `marker` prefix, each
    /// value is replaced by `<marker><n>__` instead (after the MAC check), so a
    /// second load can tell where decrypted values end up.
    pub fn decrypt(
        mut self,
        identities: &[age::x25519::Identity],
        marker: Option<&str>,
    ) -> Result<(Vec<u8>, Vec<String>), SopsError> {
        let key = self.data_key(identities)?;
        // One key schedule for every value of the file.
        let cipher = Cipher::new_from_slice(&key)
            .map_err(|_| SopsError::Malformed("the data key is not 32 bytes".into()))?;
        let mut walk = Walk {
            key: &cipher,
            hasher: Sha512::new(),
            mac_only_encrypted: self.meta.mac_only_encrypted,
            values: Vec::new(),
            binary: None,
            marker,
        };
        if walk.mac_only_encrypted {
            walk.hasher.update(MAC_ONLY_ENCRYPTED_INIT);
        }
        let mut path = Vec::new();
        walk.value(&mut self.tree, &mut path)?;
        let computed = hex::encode_upper(walk.hasher.finalize_reset());
        let stored = decrypt_value(&self.meta.mac, &cipher, self.meta.lastmodified.as_bytes())
            .map_err(|_| SopsError::MacMismatch)?;
        let stored = String::from_utf8(stored.0).map_err(|_| SopsError::MacMismatch)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            stored.to_ascii_uppercase().as_bytes(),
            computed.as_bytes(),
        )) {
            return Err(SopsError::MacMismatch);
        }
        let values = walk.values;
        let binary = walk.binary;
        let out = match self.kind {
            Kind::Binary { .. } => binary.unwrap_or_default(),
            Kind::Json => {
                let mut text = serde_json::to_string_pretty(&self.tree)
                    .map_err(|e| SopsError::Malformed(e.to_string()))?;
                text.push('\n');
                text.into_bytes()
            }
            Kind::Yaml => serde_saphyr::to_string(&self.tree)
                .map_err(|e| SopsError::Malformed(e.to_string()))?
                .into_bytes(),
            Kind::Dotenv => emit_dotenv(&self.tree).into_bytes(),
            Kind::Ini => emit_ini(&self.tree).into_bytes(),
        };
        Ok((out, values))
    }

    /// The data key, from the first age recipient one of `identities` opens.
    fn data_key(&self, identities: &[age::x25519::Identity]) -> Result<[u8; 32], SopsError> {
        if self.meta.age.is_empty() {
            if self.meta.others.is_empty() {
                return Err(SopsError::Malformed(
                    "no key holds the data key".to_string(),
                ));
            }
            return Err(SopsError::UnsupportedKey {
                kinds: self.meta.others.join(", "),
            });
        }
        for (_, enc) in &self.meta.age {
            let reader = age::armor::ArmoredReader::new(enc.as_bytes());
            let Ok(decryptor) = age::Decryptor::new(reader) else {
                continue;
            };
            let Ok(mut stream) =
                decryptor.decrypt(identities.iter().map(|i| i as &dyn age::Identity))
            else {
                continue;
            };
            let mut key = Vec::new();
            if stream.read_to_end(&mut key).is_ok()
                && let Ok(key) = <[u8; 32]>::try_from(key.as_slice())
            {
                return Ok(key);
            }
        }
        let recipients: Vec<&str> = self.meta.age.iter().map(|(r, _)| r.as_str()).collect();
        Err(SopsError::WrongKey {
            recipients: recipients.join(", "),
        })
    }
}

/// The state of one decryption walk over the values.
struct Walk<'k> {
    key: &'k Cipher,
    hasher: Sha512,
    mac_only_encrypted: bool,
    values: Vec<String>,
    /// The raw bytes of a binary file's `data`.
    binary: Option<Vec<u8>>,
    marker: Option<&'k str>,
}

impl Walk<'_> {
    fn value(&mut self, value: &mut Value, path: &mut Vec<String>) -> Result<(), SopsError> {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    path.push(key.clone());
                    self.value(child, path)?;
                    path.pop();
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.value(item, path)?;
                }
            }
            Value::String(text) if text.starts_with("ENC[AES256_GCM,") => {
                let aad = format!("{}:", path.join(":"));
                let (plain, kind) = decrypt_value(text, self.key, aad.as_bytes())
                    .map_err(|_| SopsError::TamperedValue { at: path.join(".") })?;
                self.hasher.update(&plain);
                let (plain, kind) = match self.marker {
                    Some(prefix) => {
                        let marker = format!("{prefix}{}__", self.values.len());
                        (marker.into_bytes(), "str".to_string())
                    }
                    None => (plain, kind),
                };
                if path.len() == 1 && path[0] == "data" {
                    self.binary = Some(plain.clone());
                }
                let text = String::from_utf8_lossy(&plain).into_owned();
                *value = typed(&text, &kind);
                self.values.push(text);
            }
            other => {
                if !self.mac_only_encrypted {
                    self.hasher.update(to_bytes(other));
                }
            }
        }
        Ok(())
    }
}

/// A cleartext value as sops hashes it.
fn to_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.clone().into_bytes(),
        Value::Null => Vec::new(),
        other => other.to_string().into_bytes(),
    }
}

/// The cleartext as the type sops recorded (`str`, `int`, `float`, `bool`, `bytes`).
fn typed(text: &str, kind: &str) -> Value {
    let parsed = match kind {
        "int" => text.parse::<i64>().ok().map(Value::from),
        // JSON numbers are all floats to sops: `3` stays `3`, not `3.0`.
        "float" => text
            .parse::<i64>()
            .ok()
            .map(Value::from)
            .or_else(|| text.parse::<f64>().ok().map(Value::from)),
        // sops writes booleans as `True` and `False`.
        "bool" => match text.to_ascii_lowercase().as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.to_string()))
}

/// Opens one `ENC[AES256_GCM,…]` value: its cleartext and its `type`.
/// AES-256-GCM with sops's 32-byte IVs.
type Cipher = AesGcm<Aes256, U32>;

fn decrypt_value(enc: &str, cipher: &Cipher, aad: &[u8]) -> Result<(Vec<u8>, String), ()> {
    let inner = enc
        .strip_prefix("ENC[AES256_GCM,")
        .and_then(|s| s.strip_suffix(']'))
        .ok_or(())?;
    let (mut data, mut iv, mut tag, mut kind) = (None, None, None, String::new());
    for part in inner.split(',') {
        let (name, value) = part.split_once(':').ok_or(())?;
        match name {
            "data" => data = Some(STANDARD.decode(value).map_err(|_| ())?),
            "iv" => iv = Some(STANDARD.decode(value).map_err(|_| ())?),
            "tag" => tag = Some(STANDARD.decode(value).map_err(|_| ())?),
            "type" => kind = value.to_string(),
            _ => {}
        }
    }
    let (mut data, iv, tag) = (data.ok_or(())?, iv.ok_or(())?, tag.ok_or(())?);
    if iv.len() != 32 || tag.len() != 16 {
        return Err(());
    }
    data.extend_from_slice(&tag);
    let plain = cipher
        .decrypt(Nonce::<U32>::from_slice(&iv), Payload { msg: &data, aad })
        .map_err(|_| ())?;
    Ok((plain, kind))
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// dotenv that stackd's loader (compose's syntax) reads back to the same
/// values: plain when safe, else single-quoted (literal), else double-quoted.
fn emit_dotenv(tree: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(map) = tree {
        for (key, value) in map {
            out.push_str(key);
            out.push('=');
            out.push_str(&dotenv_value(&scalar_text(value)));
            out.push('\n');
        }
    }
    out
}

fn dotenv_value(value: &str) -> String {
    let plain = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.,:/@+%=".contains(c));
    if plain {
        return value.to_string();
    }
    if !value.contains(['\'', '\n', '\r']) && !value.ends_with('\\') {
        return format!("'{value}'");
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '$' => out.push_str("\\$"),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

fn emit_ini(tree: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(sections) = tree {
        for (name, section) in sections {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("[{name}]\n"));
            if let Value::Object(keys) = section {
                for (key, value) in keys {
                    out.push_str(&format!("{key} = {}\n", scalar_text(value)));
                }
            }
        }
    }
    out
}
