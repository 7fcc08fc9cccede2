//! Resolving and reading the files a compose file points at. Every path goes
//! through the node's `mark.base` and the [`FileSource`], so escapes, absolute
//! paths, symlinks out of the repository and oversized files are refused in one place.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::super::error::LoadError;
use super::fields::Field;
use crate::render::files::{EntryKind, FileError, FileSource, RepoPath};
use crate::render::model::{BindSource, FileData};

/// A bind-mounted directory may hold at most this many files: they all become
/// ConfigMap data, which is limited to about 1 MiB anyway.
const MAX_DIRECTORY_FILES: usize = 256;

/// `relative` resolved against the directory of the file that wrote `field`.
pub fn resolve(field: &Field, relative: &str) -> Result<RepoPath, LoadError> {
    field
        .node
        .mark
        .base
        .join(relative)
        .map_err(|source| LoadError::Path {
            at: field.at(),
            source,
        })
}

pub fn file_error(field: &Field, source: FileError) -> LoadError {
    LoadError::File {
        at: field.at(),
        source,
    }
}

/// The content of a file, or `None` when it does not exist.
pub fn read_optional(
    field: &Field,
    source: &dyn FileSource,
    path: &RepoPath,
) -> Result<Option<Vec<u8>>, LoadError> {
    match source.read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(FileError::NotFound(_)) => Ok(None),
        Err(e) => Err(file_error(field, e)),
    }
}

pub fn read(field: &Field, source: &dyn FileSource, path: &RepoPath) -> Result<Vec<u8>, LoadError> {
    source.read(path).map_err(|e| file_error(field, e))
}

/// Text when the bytes are UTF-8, otherwise base64.
pub fn file_data(bytes: Vec<u8>) -> FileData {
    match String::from_utf8(bytes) {
        Ok(text) => FileData {
            text: Some(text),
            binary: None,
        },
        Err(e) => FileData {
            text: None,
            binary: Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
        },
    }
}

/// What a bind source in the repository holds: a file, a directory (recursively)
/// or nothing.
pub fn bind_source(
    field: &Field,
    source: &dyn FileSource,
    path: &RepoPath,
) -> Result<BindSource, LoadError> {
    match source.kind(path).map_err(|e| file_error(field, e))? {
        None => Ok(BindSource {
            missing: true,
            ..BindSource::default()
        }),
        Some(EntryKind::File) => Ok(BindSource {
            file: Some(file_data(read(field, source, path)?)),
            ..BindSource::default()
        }),
        Some(EntryKind::Dir) => {
            let mut files = BTreeMap::new();
            collect_directory(field, source, path, "", &mut files)?;
            Ok(BindSource {
                directory: Some(files),
                ..BindSource::default()
            })
        }
        Some(EntryKind::Submodule) => Err(file_error(field, FileError::Submodule(path.clone()))),
    }
}

fn collect_directory(
    field: &Field,
    source: &dyn FileSource,
    dir: &RepoPath,
    prefix: &str,
    files: &mut BTreeMap<String, FileData>,
) -> Result<(), LoadError> {
    for (name, kind) in source.list(dir).map_err(|e| file_error(field, e))? {
        let path = dir
            .join(&name)
            .map_err(|e| field.invalid(format!("{dir}: bad entry name: {e}")))?;
        let relative = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        match kind {
            EntryKind::File => {
                if files.len() >= MAX_DIRECTORY_FILES {
                    return Err(field.invalid(format!(
                        "bind source {dir} holds more than {MAX_DIRECTORY_FILES} files"
                    )));
                }
                files.insert(relative, file_data(read(field, source, &path)?));
            }
            EntryKind::Dir => collect_directory(field, source, &path, &relative, files)?,
            EntryKind::Submodule => return Err(file_error(field, FileError::Submodule(path))),
        }
    }
    Ok(())
}
