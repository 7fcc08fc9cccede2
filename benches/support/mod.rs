//! What the daemon benchmarks share: their settings from the environment, the
//! stacks they write and how they read a process's peak memory and CPU time.
#![allow(dead_code)]

use std::time::{Duration, Instant};

pub const SERVICES: usize = 5;

/// `cargo bench` passes `--bench`; a filter argument that is not ours means
/// another benchmark was asked for.
pub fn another_bench() -> bool {
    std::env::args().skip(1).any(|a| !a.starts_with("--"))
}

/// The number in the environment variable `name`, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `stackd` binary measured: `STACKD_BENCH_BINARY` compares another
/// build (say the previous commit's), else this one.
pub fn stackd_binary() -> std::ffi::OsString {
    std::env::var_os("STACKD_BENCH_BINARY").unwrap_or_else(|| env!("CARGO_BIN_EXE_stackd").into())
}

/// A stack of [`SERVICES`] services; the first publishes a port.
pub fn compose(index: usize, first_image: &str) -> String {
    let mut text = String::from("services:\n");
    for s in 0..SERVICES {
        let image = if s == 0 {
            first_image.to_string()
        } else {
            format!("nginx:1.{s}")
        };
        text.push_str(&format!(
            "  svc{s}:\n    image: {image}\n    environment:\n      INDEX: \"{index}\"\n"
        ));
        if s == 0 {
            text.push_str("    ports:\n      - \"8080:80\"\n");
        }
    }
    text
}

pub fn stack_name(index: usize) -> String {
    format!("stack-{index:04}")
}

/// The repository `apps` under `dir`, with `count` stacks in one commit: its
/// writer (for later changes) and that commit.
pub fn repository(dir: &std::path::Path, count: usize) -> (crate::git_support::Upstream, String) {
    let upstream = crate::git_support::Upstream::new(dir, "apps");
    for i in 0..count {
        upstream.write(
            &format!("stacks/{}/compose.yaml", stack_name(i)),
            &compose(i, "nginx:1.0"),
        );
    }
    let first = upstream.commit(&format!("{count} stacks"));
    (upstream, first)
}

/// Resident-memory peak and CPU seconds of a live process, from /proc.
pub struct ProcessUsage {
    pub peak_rss_kib: u64,
    /// Resident now: heap and stacks, and mapped files (the binary and its libraries).
    pub anon_kib: u64,
    pub file_kib: u64,
    pub cpu_seconds: f64,
}

pub fn usage(pid: u32) -> ProcessUsage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 of /proc/PID/stat (after the parenthesised name) are utime and stime in ticks.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|t| t.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    ProcessUsage {
        peak_rss_kib: kib("VmHWM:"),
        anon_kib: kib("RssAnon:"),
        file_kib: kib("RssFile:"),
        cpu_seconds: ticks as f64 / 100.0,
    }
}

pub async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// The phase now, and the highest resident memory seen in each phase so far (KiB).
type Peaks = (String, Vec<(String, u64)>);

/// Samples a process's resident memory every 50 ms and keeps the highest per
/// named phase, so a benchmark can say when the peak happens, not only how high.
pub struct RssPhases {
    phase: std::sync::Arc<std::sync::Mutex<Peaks>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RssPhases {
    pub fn start(pid: u32, first: &str) -> Self {
        let phase = std::sync::Arc::new(std::sync::Mutex::new((
            first.to_string(),
            Vec::<(String, u64)>::new(),
        )));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (shared, stopped) = (phase.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss: u64 = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
                let mut guard = shared.lock().unwrap();
                let (current, peaks) = &mut *guard;
                match peaks.iter_mut().find(|(name, _)| name == current) {
                    Some((_, peak)) => *peak = (*peak).max(rss),
                    None => peaks.push((current.clone(), rss)),
                }
                drop(guard);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssPhases { phase, stop }
    }

    pub fn phase(&self, name: &str) {
        self.phase.lock().unwrap().0 = name.to_string();
    }

    /// "phase 12 MiB, phase 40 MiB" in the order the phases ran.
    pub fn finish(self) -> String {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let guard = self.phase.lock().unwrap();
        guard
            .1
            .iter()
            .map(|(name, kib)| format!("{name} {:.0} MiB", *kib as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
