//! Reading files straight from a commit's tree, and stack discovery over it.

#[path = "git_support/mod.rs"]
mod git_support;

use git_support::Upstream;
use stackd::git::{DiscoveryError, GitTreeSource, discover};
use stackd::render::files::{EntryKind, FileError, FileSource, RepoPath};

fn p(s: &str) -> RepoPath {
    RepoPath::new(s).unwrap()
}

fn tree_of(up: &Upstream) -> GitTreeSource {
    let commit = git2::Oid::from_str(&up.head()).unwrap();
    GitTreeSource::at_commit(&up.dir, commit).unwrap()
}

#[test]
fn reads_files_follows_inner_symlinks_and_refuses_escapes() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(tmp.path(), "up");
    up.write("app/compose.yaml", "services: {}\n");
    up.write("shared/app.env", "A=1\n");
    up.write("big.bin", &"x".repeat(2048));
    std::os::unix::fs::symlink("../shared/app.env", up.dir.join("app/.env")).unwrap();
    std::os::unix::fs::symlink("shared", up.dir.join("linked-dir")).unwrap();
    std::os::unix::fs::symlink("../../etc/passwd", up.dir.join("app/escape")).unwrap();
    std::os::unix::fs::symlink("/etc", up.dir.join("abs")).unwrap();
    std::os::unix::fs::symlink("loop", up.dir.join("loop")).unwrap();
    up.commit("files");
    let tree = tree_of(&up).with_max_file_size(1024);

    assert_eq!(
        tree.read(&p("app/compose.yaml")).unwrap(),
        b"services: {}\n"
    );
    assert_eq!(tree.read(&p("app/.env")).unwrap(), b"A=1\n");
    assert_eq!(tree.read(&p("linked-dir/app.env")).unwrap(), b"A=1\n");
    assert_eq!(tree.kind(&p("linked-dir")).unwrap(), Some(EntryKind::Dir));
    assert_eq!(tree.kind(&p("nope")).unwrap(), None);
    assert_eq!(
        tree.read(&p("app/escape")),
        Err(FileError::SymlinkEscape {
            path: p("app/escape"),
            target: "../../etc/passwd".into()
        })
    );
    assert!(matches!(
        tree.read(&p("abs/passwd")),
        Err(FileError::SymlinkEscape { .. })
    ));
    assert!(matches!(tree.read(&p("loop")), Err(FileError::Io { .. })));
    assert_eq!(
        tree.read(&p("big.bin")),
        Err(FileError::TooLarge {
            path: p("big.bin"),
            size: 2048,
            limit: 1024
        })
    );
    assert_eq!(tree.read(&p("app")), Err(FileError::IsADirectory(p("app"))));
    assert_eq!(
        tree.read(&p("missing.txt")),
        Err(FileError::NotFound(p("missing.txt")))
    );
    // Escaping and dangling links are left out of listings.
    let root: Vec<(String, EntryKind)> = tree.list(&RepoPath::root()).unwrap();
    assert_eq!(
        root,
        vec![
            ("app".to_string(), EntryKind::Dir),
            ("big.bin".to_string(), EntryKind::File),
            ("linked-dir".to_string(), EntryKind::Dir),
            ("shared".to_string(), EntryKind::Dir),
        ]
    );
    // The default limit is 1 MiB.
    let default = tree_of(&up);
    assert_eq!(default.read(&p("big.bin")).unwrap().len(), 2048);
}

#[test]
fn submodules_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(tmp.path(), "up");
    up.write("compose.yaml", "services: {}\n");
    let first = up.commit("base");
    up.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{first},vendor/lib"),
    ]);
    up.git(&["commit", "-q", "-m", "add submodule"]);
    let tree = tree_of(&up);
    assert_eq!(
        tree.kind(&p("vendor/lib")).unwrap(),
        Some(EntryKind::Submodule)
    );
    assert_eq!(
        tree.read(&p("vendor/lib")),
        Err(FileError::Submodule(p("vendor/lib")))
    );
    assert_eq!(
        tree.read(&p("vendor/lib/compose.yaml")),
        Err(FileError::Submodule(p("vendor/lib")))
    );
    assert_eq!(
        tree.list(&p("vendor")).unwrap(),
        vec![("lib".to_string(), EntryKind::Submodule)]
    );
}

#[test]
fn discovery_over_a_commit_tree_with_globs_and_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(tmp.path(), "up");
    up.write("compose.yml", "name: root-stack\nservices: {}\n");
    up.write("stacks/web/compose.yaml", "services: {}\n");
    up.write("stacks/web/compose.override.yaml", "services: {}\n");
    up.write("stacks/api/docker-compose.yml", "name: api\n");
    up.write("infra/monitoring/compose.yaml", "services: {}\n");
    up.commit("stacks");
    let tree = tree_of(&up);
    let found = |paths: &[&str]| -> Vec<(String, String, Vec<String>)> {
        let paths: Vec<String> = paths.iter().map(|s| s.to_string()).collect();
        discover(&tree, &paths, "up")
            .unwrap()
            .into_iter()
            .map(|s| {
                (
                    s.name,
                    s.dir.to_string(),
                    s.files.iter().map(|f| f.to_string()).collect(),
                )
            })
            .collect()
    };
    pretty_assertions::assert_eq!(
        found(&["stacks/*"]),
        vec![
            (
                "api".to_string(),
                "stacks/api".to_string(),
                vec!["stacks/api/docker-compose.yml".to_string()]
            ),
            (
                "web".to_string(),
                "stacks/web".to_string(),
                vec![
                    "stacks/web/compose.yaml".to_string(),
                    "stacks/web/compose.override.yaml".to_string()
                ]
            ),
        ]
    );
    let names: Vec<String> = found(&[]).into_iter().map(|s| s.0).collect();
    assert_eq!(names, vec!["root-stack", "monitoring", "api", "web"]);
    let names: Vec<String> = found(&["infra/**", "."]).into_iter().map(|s| s.0).collect();
    assert_eq!(names, vec!["root-stack", "monitoring"]);

    up.write("infra/web/compose.yaml", "services: {}\n");
    up.commit("duplicate");
    let err = discover(&tree_of(&up), &[], "up").unwrap_err();
    assert_eq!(
        err,
        DiscoveryError::DuplicateName {
            name: "web".into(),
            first: p("infra/web"),
            second: p("stacks/web"),
        }
    );
}
