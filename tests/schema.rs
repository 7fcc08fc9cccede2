//! Rendered objects validate against the official Kubernetes schemas, checked by
//! the real validator (`kubernetes-validate` from PyPI, strict mode).

mod common;

use std::process::Command;

/// The Kubernetes version stackd targets (k8s-openapi feature `v1_33`).
const KUBERNETES_VERSION: &str = "1.33.0";

#[test]
fn examples_and_rendered_corpus_validate_against_kubernetes_schemas() {
    let Some(validator) = common::kubernetes_validate() else {
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut objects = 0;
    let mut write = |name: String, rendered: stackd::render::object::Rendered| {
        let path = out_dir
            .path()
            .join(format!("{}.yaml", name.replace(['/', ' '], "_")));
        objects += rendered.objects.len();
        std::fs::write(&path, rendered.to_yaml()).unwrap();
        path
    };
    for stack in common::example_stacks() {
        let name = format!("example-{}", stack.file_name().unwrap().to_string_lossy());
        let rendered = common::render_example(&stack).unwrap_or_else(|e| panic!("{name}: {e}"));
        files.push(write(name, rendered));
    }
    let examples = files.len();
    for file in common::corpus_compose_files() {
        if let Ok(rendered) = common::render_corpus_file(&file) {
            files.push(write(format!("corpus-{}", file.relative()), rendered));
        }
    }
    eprintln!(
        "validating {objects} objects from {examples} examples and {} corpus files against Kubernetes {KUBERNETES_VERSION}",
        files.len() - examples
    );
    let output = Command::new(&validator)
        .args([
            "--kubernetes-version",
            KUBERNETES_VERSION,
            "--strict",
            "--quiet",
        ])
        .args(&files)
        .output()
        .expect("kubernetes-validate runs");
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kubernetes-validate rejected rendered objects:\n{report}"
    );
    assert!(objects > 100, "too few objects validated: {objects}");
}
