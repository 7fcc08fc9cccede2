//! Renders the whole compose corpus: files per second and services per second.
//!
//! `cargo bench --bench render_corpus`. "load+render" reads every file from disk
//! through `DirSource`, loads, interpolates, normalises and renders; "render only"
//! starts from already loaded `Stack`s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stackd::local::{LocalRender, render_local};
use stackd::render::files::{DirSource, RepoPath};
use stackd::render::{LoadOptions, RenderOptions};

struct Input {
    repository: PathBuf,
    path: PathBuf,
}

fn corpus_inputs() -> Vec<Input> {
    let root = std::env::var_os("STACKD_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let mut inputs = Vec::new();
    for repository in std::fs::read_dir(&root).expect("corpus exists").flatten() {
        let repository = repository.path();
        if repository.is_dir() {
            collect(&repository, &repository, &mut inputs);
        }
    }
    inputs.sort_by(|a, b| a.path.cmp(&b.path));
    inputs
}

fn collect(repository: &Path, dir: &Path, out: &mut Vec<Input>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(repository, &path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        ) {
            out.push(Input {
                repository: repository.to_path_buf(),
                path,
            });
        }
    }
}

fn request(input: &Input) -> LocalRender {
    LocalRender {
        path: input.path.clone(),
        repository_root: Some(input.repository.clone()),
        ..LocalRender::default()
    }
}

fn bench(c: &mut Criterion) {
    // Only files that render count: failures would flatter the figures.
    let inputs: Vec<Input> = corpus_inputs()
        .into_iter()
        .filter(|i| render_local(&request(i)).is_ok())
        .collect();
    let files = inputs.len() as u64;
    let mut stacks = Vec::new();
    for input in &inputs {
        let source = DirSource::new(&input.repository).unwrap();
        let relative = |p: &Path| {
            RepoPath::new(&p.strip_prefix(&input.repository).unwrap().to_string_lossy()).unwrap()
        };
        let options = LoadOptions {
            dir: relative(input.path.parent().unwrap()),
            files: vec![relative(&input.path)],
            ..LoadOptions::default()
        };
        let loaded = stackd::render::load(&source, &options).unwrap();
        let stack = stackd::render::stack_for("bench", "bench", loaded.project, None);
        stacks.push((stack, loaded.secrets));
    }
    let services: u64 = stacks
        .iter()
        .map(|(s, _)| s.spec.project.services.len() as u64)
        .sum();
    eprintln!("corpus benchmark: {files} files that render, {services} services");

    let mut group = c.benchmark_group("corpus");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(files));
    group.bench_function("load+render (files)", |b| {
        b.iter(|| {
            for input in &inputs {
                render_local(&request(input)).unwrap();
            }
        })
    });
    group.throughput(Throughput::Elements(services));
    group.bench_function("load+render (services)", |b| {
        b.iter(|| {
            for input in &inputs {
                render_local(&request(input)).unwrap();
            }
        })
    });
    group.bench_function("render only (services)", |b| {
        let options = RenderOptions::default();
        b.iter(|| {
            for (stack, secrets) in &stacks {
                stackd::render::render(stack, secrets, &options).unwrap();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
