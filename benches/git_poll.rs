//! Poll cost on a large repository served over smart HTTP: 1,000 stacks and a
//! 2,000-commit history. Measures an unchanged poll (ls-remote only) and a
//! one-commit change (ls-remote + incremental single-ref fetch + discovery).
//!
//! Run: `cargo bench --bench git_poll` (or `cargo test --bench git_poll` for a
//! debug build). Sizes can be changed with STACKS and COMMITS.

#[path = "../tests/git_support/mod.rs"]
mod git_support;
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use git_support::{HttpServer, Upstream};
use stackd::git::poll::poll_repository;
use stackd::git::settings::RepoSettings;
use support::env_usize;

fn compose(stack: usize, revision: usize) -> String {
    format!("services:\n  app{stack}:\n    image: nginx:1.{revision}\n    ports: [\"80\"]\n")
}

/// Builds the history with `git fast-import`: one commit adding every stack,
/// then commits that each change one stack's compose file.
fn build_history(up: &Upstream, stacks: usize, commits: usize) {
    let mut stream = String::new();
    for c in 0..commits {
        let time = 1_700_000_000 + c;
        let message = if c == 0 {
            "add stacks".to_string()
        } else {
            format!("bump stack {}", c % stacks)
        };
        stream.push_str(&format!(
            "commit refs/heads/main\nmark :{}\ncommitter Bench <bench@example.com> {time} +0000\ndata {}\n{message}\n",
            c + 1,
            message.len() + 1
        ));
        if c > 0 {
            stream.push_str(&format!("from :{c}\n"));
        }
        let changed: Vec<usize> = if c == 0 {
            (0..stacks).collect()
        } else {
            vec![c % stacks]
        };
        for s in changed {
            let body = compose(s, c);
            stream.push_str(&format!(
                "M 100644 inline stacks/s{s:04}/compose.yaml\ndata {}\n{body}\n",
                body.len()
            ));
        }
        stream.push('\n');
    }
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&up.dir)
        .stdin(Stdio::piped())
        .spawn()
        .expect("git fast-import");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stream.as_bytes())
        .expect("write stream");
    assert!(child.wait().expect("fast-import").success());
    up.git(&["reset", "-q", "--hard", "main"]);
    up.git(&["gc", "-q"]);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let stacks = env_usize("STACKS", 1000);
    let commits = env_usize("COMMITS", 2000);
    let rounds = env_usize("ROUNDS", 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let up = Upstream::new(tmp.path(), "big");
    let started = Instant::now();
    build_history(&up, stacks, commits);
    println!(
        "repository: {stacks} stacks, {commits} commits, built in {:?}",
        started.elapsed()
    );
    let server = runtime.block_on(HttpServer::start(tmp.path(), None));
    let settings = RepoSettings::new("big", server.url("big"), "main");
    let data = tmp.path().join("data");
    let traffic = server.traffic.clone();
    let _guard = runtime.enter();

    let poll = |last| {
        let sent = traffic.bytes_sent();
        let t = Instant::now();
        let outcome = poll_repository(&settings, &data, last).expect("poll");
        (outcome, t.elapsed(), traffic.bytes_sent() - sent)
    };

    let (first, time, bytes) = poll(None);
    assert_eq!(first.stacks.as_ref().map(Vec::len), Some(stacks));
    let fetched = first.fetched.expect("first poll fetches");
    println!(
        "first poll (shallow clone):  {time:>10.2?}  server sent {bytes} B, pack {} B / {} objects",
        fetched.received_bytes, fetched.received_objects
    );

    let mut last = first.commit;
    let mut times = Vec::new();
    let mut sent = Vec::new();
    for _ in 0..rounds {
        let (outcome, time, bytes) = poll(Some(last));
        assert!(outcome.fetched.is_none());
        times.push(time);
        sent.push(bytes);
    }
    println!(
        "unchanged poll:              {:>10.2?}  server sent {} B (median of {rounds}; ls-remote only)",
        median(times),
        sent[sent.len() / 2]
    );

    let mut times = Vec::new();
    let mut sent = Vec::new();
    let mut packs = Vec::new();
    for round in 0..rounds {
        let s = round % stacks;
        up.write(
            &format!("stacks/s{s:04}/compose.yaml"),
            &compose(s, 10_000 + round),
        );
        up.commit(&format!("bench change {round}"));
        let (outcome, time, bytes) = poll(Some(last));
        let stats = outcome.fetched.expect("a change fetches");
        assert!(!outcome.forced);
        last = outcome.commit;
        times.push(time);
        sent.push(bytes);
        packs.push(stats.received_bytes);
    }
    sent.sort();
    packs.sort();
    println!(
        "one-commit change poll:      {:>10.2?}  server sent {} B, pack {} B (median of {rounds})",
        median(times),
        sent[sent.len() / 2],
        packs[packs.len() / 2]
    );

    let reader = poll(Some(last)).0.reader;
    let t = Instant::now();
    let discovered = stackd::git::discover(reader.as_ref(), &[], "big").expect("discover");
    println!(
        "discovery alone:             {:>10.2?}  ({} stacks, part of the change poll)",
        t.elapsed(),
        discovered.len()
    );
    let t = Instant::now();
    for stack in &discovered {
        reader.list(&stack.dir).expect("list");
    }
    let listing = t.elapsed();
    let t = Instant::now();
    for stack in &discovered {
        reader.read(&stack.files[0]).expect("read");
    }
    println!(
        "  of which listing {listing:.2?} and reading {:.2?} for all stacks",
        t.elapsed()
    );
}
