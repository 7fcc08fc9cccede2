//! Shared harness code for the fuzz targets: an in-memory repository around one
//! fuzzed compose file, the load → `Stack` → render pipeline, and a generator of
//! structurally valid compose documents.

pub mod structured;

use stackd::render::files::MemSource;
use stackd::render::{self, LoadOptions, RenderOptions};

/// Files a compose file may reference, so the loader gets past "file not found"
/// into env_file, configs, secrets, extends and include handling.
const FIXTURES: &[(&str, &[u8])] = &[
    ("app/.env", b"TAG=1.2\nPORT=8080\nEMPTY=\n"),
    ("app/other.env", b"export A=\"x\\ny\"\nB='lit$X'\n"),
    ("app/config.txt", b"key = value\n"),
    ("app/secret.txt", b"hunter2"),
    ("app/data/keep", b""),
    (
        "app/base.yaml",
        b"services:\n  base:\n    image: busybox\n    environment: [A=1]\n",
    ),
    (
        "app/inc/compose.yaml",
        b"services:\n  inc:\n    image: nginx\n",
    ),
];

/// Loads `compose` as `app/compose.yaml` beside [`FIXTURES`] and, when it loads,
/// renders it. Every failure must be an error value; any panic is a finding.
pub fn load_and_render(compose: &[u8]) {
    let mut source = MemSource::new().with_max_file_size(64 * 1024);
    for (path, content) in FIXTURES {
        source = source.with_file(path, *content);
    }
    source = source.with_file("app/compose.yaml", compose);
    let Ok(dir) = stackd::render::files::RepoPath::new("app") else {
        return;
    };
    let options = LoadOptions {
        dir,
        ..LoadOptions::default()
    };
    let loaded = match render::load(&source, &options) {
        Ok(loaded) => loaded,
        Err(error) => {
            // Error messages and labels are built from input too.
            let _ = (error.to_string(), error.label());
            return;
        }
    };
    let stack = render::stack_for("fuzz", "stackd", loaded.project, None);
    // The Stack must serialise: the daemon applies it to the cluster as JSON.
    let _ = serde_json::to_vec(&stack);
    for options in [
        RenderOptions::default(),
        RenderOptions {
            allow_host_path: true,
            ..RenderOptions::default()
        },
    ] {
        match render::render(&stack, &loaded.secrets, &options) {
            Ok(rendered) => {
                // What the applier does with each object next.
                for object in &rendered.objects {
                    let _ = (object.to_json(), object.content_hash());
                }
            }
            Err(error) => {
                let _ = (error.to_string(), error.label());
            }
        }
    }
}
