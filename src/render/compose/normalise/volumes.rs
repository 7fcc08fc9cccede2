//! A service's `volumes` (short and long syntax) and `tmpfs`, as [`VolumeMount`]s.
//! Bind sources inside the repository are read into [`Project::bind_files`].
//!
//! [`Project::bind_files`]: crate::render::model::Project::bind_files

use std::collections::{BTreeMap, BTreeSet};

use super::super::error::LoadError;
use super::super::node::Value;
use super::fields::Field;
use super::paths;
use crate::render::files::FileSource;
use crate::render::model::{BindSource, VolumeMount};

const MOUNT_KEYS: &[&str] = &[
    "bind",
    "consistency",
    "image",
    "read_only",
    "source",
    "target",
    "tmpfs",
    "type",
    "volume",
];
const BIND_KEYS: &[&str] = &["create_host_path", "propagation", "recursive", "selinux"];
const VOLUME_KEYS: &[&str] = &["labels", "nocopy", "subpath"];
const TMPFS_KEYS: &[&str] = &["mode", "size"];
const IMAGE_KEYS: &[&str] = &["subpath"];
const MOUNT_TYPES: &[&str] = &["bind", "cluster", "image", "npipe", "tmpfs", "volume"];

/// What mount parsing needs from the rest of the project.
pub struct MountContext<'c> {
    pub source: &'c dyn FileSource,
    /// Names of the top-level volumes.
    pub declared: &'c BTreeSet<String>,
    /// Bind sources read so far, by repository path.
    pub bind_files: &'c mut BTreeMap<String, BindSource>,
}

/// The mounts of a service's `volumes`.
pub fn mounts(field: &Field, ctx: &mut MountContext) -> Result<Vec<VolumeMount>, LoadError> {
    let mut mounts = Vec::new();
    for item in field.items()? {
        let mut mount = match &item.node.value {
            Value::Map(_) => long_mount(&item, ctx)?,
            Value::String { .. } => short_mount(&item, ctx)?,
            _ => return Err(item.expected("a string or a mapping")),
        };
        mount.target = clean_target(&mount.target);
        mounts.push(mount);
    }
    Ok(mounts)
}

/// A service's `tmpfs`: `/run` or `/run:size=64m,mode=1777`, as a string or a list.
pub fn tmpfs(field: &Field) -> Result<Vec<VolumeMount>, LoadError> {
    let entries: Vec<Field> = match &field.node.value {
        Value::Seq(_) => field.items()?,
        _ => vec![field.clone()],
    };
    entries
        .iter()
        .map(|entry| {
            let text = entry.string()?;
            let (target, options) = text.split_once(':').unwrap_or((&text, ""));
            let mut mount = VolumeMount {
                kind: "tmpfs".to_string(),
                target: target.to_string(),
                ..VolumeMount::default()
            };
            for option in options.split(',').filter(|o| !o.is_empty()) {
                match option.split_once('=') {
                    Some(("size", size)) => {
                        mount.tmpfs_size_bytes =
                            Some(super::units::parse_bytes(size).map_err(|e| entry.invalid(e))?);
                    }
                    Some(("mode", mode)) => {
                        mount.tmpfs_mode =
                            Some(u32::from_str_radix(mode, 8).map_err(|_| {
                                entry.invalid(format!("invalid tmpfs mode {mode:?}"))
                            })?);
                    }
                    _ if option == "ro" => mount.read_only = true,
                    // rw, noexec, nosuid, uid=, gid=: no Kubernetes equivalent.
                    _ => {}
                }
            }
            check_target(entry, &mount.target)?;
            mount.target = clean_target(&mount.target);
            Ok(mount)
        })
        .collect()
}

/// `target`, `source:target` or `source:target:mode`.
fn short_mount(item: &Field, ctx: &mut MountContext) -> Result<VolumeMount, LoadError> {
    let text = item.string()?;
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, None),
        [source, target] => (Some(*source), *target, None),
        [source, target, mode] => (Some(*source), *target, Some(*mode)),
        _ => return Err(item.invalid(format!("invalid volume {text:?}"))),
    };
    if source == Some("") || target.is_empty() {
        return Err(item.invalid(format!(
            "invalid volume {text:?}: empty section between colons"
        )));
    }
    check_target(item, target)?;
    let mut mount = VolumeMount {
        kind: "volume".to_string(),
        target: target.to_string(),
        ..VolumeMount::default()
    };
    for option in mode.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => mount.read_only = true,
            "rw" | "z" | "Z" | "nocopy" | "consistent" | "cached" | "delegated" | "shared"
            | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {}
            other => {
                return Err(item.invalid(format!(
                    "unknown volume option {other:?} (expected ro, rw, z, Z, nocopy or a propagation mode)"
                )));
            }
        }
    }
    match source.filter(|s| !s.is_empty()) {
        None => {}
        Some(source) if is_path(source) => {
            mount.kind = "bind".to_string();
            set_bind_source(item, ctx, &mut mount, source)?;
        }
        Some(name) => {
            check_declared(item, ctx, name)?;
            mount.source = Some(name.to_string());
        }
    }
    Ok(mount)
}

fn long_mount(item: &Field, ctx: &mut MountContext) -> Result<VolumeMount, LoadError> {
    let fields = item.map(MOUNT_KEYS)?;
    let kind_field = fields
        .get("type")
        .ok_or_else(|| item.schema_error("missing required field `type`"))?;
    let kind = kind_field.string()?;
    if !MOUNT_TYPES.contains(&kind.as_str()) {
        return Err(kind_field.invalid(format!(
            "unknown mount type {kind:?} (expected one of {})",
            MOUNT_TYPES.join(", ")
        )));
    }
    let target_field = fields
        .get("target")
        .ok_or_else(|| item.schema_error("missing required field `target`"))?;
    let target = target_field.string()?;
    check_target(&target_field, &target)?;
    let mut mount = VolumeMount {
        kind: kind.clone(),
        target,
        read_only: fields.bool("read_only")?.unwrap_or(false),
        ..VolumeMount::default()
    };
    if let Some(bind) = fields.get("bind") {
        bind.map(BIND_KEYS)?;
    }
    if let Some(volume) = fields.get("volume") {
        mount.subpath = volume.map(VOLUME_KEYS)?.string("subpath")?;
    }
    if let Some(image) = fields.get("image") {
        mount.subpath = image.map(IMAGE_KEYS)?.string("subpath")?;
    }
    if let Some(tmpfs) = fields.get("tmpfs") {
        let options = tmpfs.map(TMPFS_KEYS)?;
        mount.tmpfs_size_bytes = options.get("size").map(|s| s.bytes()).transpose()?;
        mount.tmpfs_mode = options.get("mode").map(|m| m.mode()).transpose()?;
    }
    if let Some(source_field) = fields.get("source") {
        let source = source_field.string()?;
        match kind.as_str() {
            "bind" => set_bind_source(&source_field, ctx, &mut mount, &source)?,
            "volume" => {
                check_declared(&source_field, ctx, &source)?;
                mount.source = Some(source);
            }
            "tmpfs" => {
                return Err(source_field.invalid("a tmpfs mount has no `source`"));
            }
            _ => mount.source = Some(source),
        }
    } else if kind == "bind" {
        return Err(item.schema_error("a bind mount needs a `source`"));
    }
    Ok(mount)
}

/// `/data/` and `/data` are the same mount point, as Compose normalises them.
fn clean_target(target: &str) -> String {
    let trimmed = target.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Compose treats a source as a path when it starts like one.
fn is_path(source: &str) -> bool {
    source.starts_with('.') || source.starts_with('/') || source.starts_with('~')
}

fn set_bind_source(
    field: &Field,
    ctx: &mut MountContext,
    mount: &mut VolumeMount,
    source: &str,
) -> Result<(), LoadError> {
    if source.starts_with('/') || source.starts_with('~') {
        // Outside the repository: the renderer decides whether hostPath is allowed.
        mount.host_path = true;
        mount.source = Some(source.to_string());
        return Ok(());
    }
    let path = paths::resolve(field, source)?;
    let key = path.to_string();
    if !ctx.bind_files.contains_key(&key) {
        let content = paths::bind_source(field, ctx.source, &path)?;
        ctx.bind_files.insert(key.clone(), content);
    }
    mount.source = Some(key);
    Ok(())
}

fn check_declared(field: &Field, ctx: &MountContext, name: &str) -> Result<(), LoadError> {
    if ctx.declared.contains(name) {
        Ok(())
    } else {
        Err(field.invalid(format!(
            "volume `{name}` is not declared in the top-level `volumes`"
        )))
    }
}

fn check_target(field: &Field, target: &str) -> Result<(), LoadError> {
    if target.starts_with('/') {
        Ok(())
    } else {
        Err(field.invalid(format!(
            "mount target {target:?} must be an absolute path in the container"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error_of, parse_node_at};
    use super::*;
    use crate::render::files::MemSource;
    use serde_json::json;

    fn source() -> MemSource {
        MemSource::new()
            .with_file("stacks/web/nginx.conf", "server {}")
            .with_file("stacks/web/conf.d/a.conf", "a")
            .with_file("stacks/web/conf.d/sub/b.bin", vec![0xff, 0x00])
            .with_file("stacks/shared/x.txt", "x")
    }

    fn run(yaml: &str) -> Result<(serde_json::Value, serde_json::Value), LoadError> {
        let node = parse_node_at(yaml, "stacks/web/compose.yaml");
        let src = source();
        let declared: BTreeSet<String> = ["data".to_string()].into();
        let mut bind_files = BTreeMap::new();
        let mut ctx = MountContext {
            source: &src,
            declared: &declared,
            bind_files: &mut bind_files,
        };
        let mounts = mounts(&Field::new(&node, "services.web.volumes"), &mut ctx)?;
        Ok((
            serde_json::to_value(mounts).unwrap(),
            serde_json::to_value(bind_files).unwrap(),
        ))
    }

    #[test]
    fn targets_lose_trailing_slashes_and_empty_sections_are_refused() {
        let (mounts, _) = run("[\"data:/var/lib/data/\", \"/\"]").unwrap();
        assert_eq!(mounts[0]["target"], "/var/lib/data");
        assert_eq!(mounts[1]["target"], "/");
        let error = run("[\":/text_file.txt\"]").unwrap_err();
        assert_eq!(error.label(), "invalid_value");
        assert!(
            error.to_string().contains("empty section between colons"),
            "{error}"
        );
    }

    #[test]
    fn short_syntax() {
        let (mounts, files) = run(r#"
- /anon
- data:/var/lib/data
- data:/ro:ro
- ./nginx.conf:/etc/nginx/nginx.conf:ro,Z
- ./conf.d:/etc/conf.d:z
- ../shared/x.txt:/x:rw
- ./missing:/missing
- /opt/host:/host
- ~/configs:/etc/configs:ro
"#)
        .unwrap();
        assert_eq!(
            mounts,
            json!([
                {"type": "volume", "target": "/anon"},
                {"type": "volume", "source": "data", "target": "/var/lib/data"},
                {"type": "volume", "source": "data", "target": "/ro", "readOnly": true},
                {"type": "bind", "source": "stacks/web/nginx.conf", "target": "/etc/nginx/nginx.conf", "readOnly": true},
                {"type": "bind", "source": "stacks/web/conf.d", "target": "/etc/conf.d"},
                {"type": "bind", "source": "stacks/shared/x.txt", "target": "/x"},
                {"type": "bind", "source": "stacks/web/missing", "target": "/missing"},
                {"type": "bind", "source": "/opt/host", "target": "/host", "hostPath": true},
                {"type": "bind", "source": "~/configs", "target": "/etc/configs", "readOnly": true, "hostPath": true},
            ])
        );
        assert_eq!(
            files,
            json!({
                "stacks/web/nginx.conf": {"file": {"text": "server {}"}},
                "stacks/web/conf.d": {"directory": {"a.conf": {"text": "a"}, "sub/b.bin": {"binary": "/wA="}}},
                "stacks/shared/x.txt": {"file": {"text": "x"}},
                "stacks/web/missing": {"missing": true},
            })
        );
    }

    #[test]
    fn long_syntax() {
        let (mounts, _) = run(r#"
- {type: volume, source: data, target: /data, read_only: "true", volume: {nocopy: true, subpath: sub}}
- {type: volume, target: /anon}
- {type: bind, source: ./nginx.conf, target: /n, bind: {create_host_path: true}, consistency: cached}
- {type: tmpfs, target: /tmp, tmpfs: {size: 64m, mode: 01777}}
- {type: tmpfs, target: /t2, tmpfs: {size: 10000}}
- {type: image, source: "alpine:3", target: /img, image: {subpath: etc}}
"#)
        .unwrap();
        assert_eq!(
            mounts,
            json!([
                {"type": "volume", "source": "data", "target": "/data", "readOnly": true, "subpath": "sub"},
                {"type": "volume", "target": "/anon"},
                {"type": "bind", "source": "stacks/web/nginx.conf", "target": "/n"},
                {"type": "tmpfs", "target": "/tmp", "tmpfsSizeBytes": 67108864, "tmpfsMode": 1023},
                {"type": "tmpfs", "target": "/t2", "tmpfsSizeBytes": 10000},
                {"type": "image", "source": "alpine:3", "target": "/img", "subpath": "etc"},
            ])
        );
    }

    #[test]
    fn tmpfs_forms() {
        let node = parse_node_at(r#"["/run", "/cache:size=1g,mode=700,noexec"]"#, "c.yaml");
        let mounts = tmpfs(&Field::new(&node, "services.web.tmpfs")).unwrap();
        assert_eq!(
            serde_json::to_value(mounts).unwrap(),
            json!([
                {"type": "tmpfs", "target": "/run"},
                {"type": "tmpfs", "target": "/cache", "tmpfsSizeBytes": 1073741824, "tmpfsMode": 448},
            ])
        );
        let node = parse_node_at("/run", "c.yaml");
        assert_eq!(
            tmpfs(&Field::new(&node, "services.web.tmpfs"))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            error_of(run("[../../../etc/passwd:/p]")),
            "path services.web.volumes[0]: path \"../../../etc/passwd\" leaves the repository"
        );
        assert_eq!(
            error_of(run("[{type: bind, source: ../../../etc, target: /e}]")),
            "path services.web.volumes[0].source: path \"../../../etc\" leaves the repository"
        );
        assert_eq!(
            error_of(run("[/a, undeclared:/b]")),
            "invalid_value services.web.volumes[1]: volume `undeclared` is not declared in the top-level `volumes`"
        );
        assert_eq!(
            error_of(run("[data:/d:rx]")),
            "invalid_value services.web.volumes[0]: unknown volume option \"rx\" (expected ro, rw, z, Z, nocopy or a propagation mode)"
        );
        assert_eq!(
            error_of(run("[data:relative]")),
            "invalid_value services.web.volumes[0]: mount target \"relative\" must be an absolute path in the container"
        );
        assert_eq!(
            error_of(run("[{type: nfs, target: /x}]")),
            "invalid_value services.web.volumes[0].type: unknown mount type \"nfs\" (expected one of bind, cluster, image, npipe, tmpfs, volume)"
        );
        assert_eq!(
            error_of(run("[{type: volume, target: /x, volume: {subpth: a}}]")),
            "schema services.web.volumes[0].volume.subpth: unknown field `subpth` (did you mean `subpath`?)"
        );
        assert_eq!(
            error_of(run("[{type: bind, target: /x}]")),
            "schema services.web.volumes[0]: a bind mount needs a `source`"
        );
    }
}
