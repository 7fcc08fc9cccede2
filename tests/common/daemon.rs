//! A `stackd run` process under test: its configuration, data directory, port
//! and logs, started (and started again, on the same port) against a
//! kubeconfig, stopped with SIGTERM, and read with plain HTTP requests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A `stackd` child process, killed if a test fails before it exits.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// Sends SIGTERM and waits up to `limit` for the process to exit.
    pub async fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid} failed");
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "stackd did not exit within {limit:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM: the process must exit cleanly within 15 s.
    pub async fn stop(&mut self) {
        let status = self.terminate(Duration::from_secs(15)).await;
        assert!(status.success(), "exit status {status:?}");
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration with the repository `apps` at `url`, its stacks under
/// `stacks/*`, and `settings`: more of its keys, as indented YAML lines.
pub fn apps_config(url: &str, settings: &str) -> String {
    format!("repositories:\n  - name: apps\n    url: {url}\n    paths: [\"stacks/*\"]\n{settings}")
}

/// The `stackd run` of a test in `dir`: its configuration in its own folder
/// (`dir/config/stackd.yaml`, so that a watch on it sees nothing else), its
/// data in `dir/data`, the same port on every start.
pub struct Stackd {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub kubeconfig: PathBuf,
    pub port: u16,
}

impl Stackd {
    /// Writes `config` as the configuration.
    pub fn new(dir: &Path, kubeconfig: PathBuf, config: &str) -> Stackd {
        let config_dir = dir.join("config");
        std::fs::create_dir_all(&config_dir).unwrap();
        let path = config_dir.join("stackd.yaml");
        std::fs::write(&path, config).unwrap();
        Stackd {
            dir: dir.to_path_buf(),
            config: path,
            kubeconfig,
            port: free_port(),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The command, for more arguments and its output.
    pub fn command(&self) -> Command {
        stackd_run(
            env!("CARGO_BIN_EXE_stackd").as_ref(),
            &self.config,
            &self.dir.join("data"),
            self.port,
            &self.kubeconfig,
        )
    }

    /// Started with its stderr in `dir/<log>`: a file, not a pipe, which
    /// nobody would read while the test runs and which would block it full.
    pub fn start(&self, log: &str) -> Daemon {
        self.start_with(log, &[])
    }

    /// [`Stackd::start`] with more arguments.
    pub fn start_with(&self, log: &str, args: &[&str]) -> Daemon {
        let stderr = std::fs::File::create(self.dir.join(log)).unwrap();
        let mut command = self.command();
        Daemon(command.args(args).stderr(stderr).spawn().unwrap())
    }

    /// What a start logged in `dir/<log>` so far.
    pub fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.join(log)).unwrap_or_default()
    }

    /// Asks for a poll of the repository `apps` now, with the API token
    /// `token`: the status code.
    pub fn sync_now(&self, token: &str) -> Option<u16> {
        let url = format!("{}/api/v1/repositories/apps/sync", self.base());
        Some(request("POST", &url, Some(token))?.0)
    }

    /// A plain GET of `path`: the status code and the body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&format!("{}{path}", self.base()))
    }
}

/// `stackd run` with a configuration file and a data directory, listening on
/// 127.0.0.1:`port`, against the cluster of `kubeconfig` (never an in-cluster
/// namespace). Callers add output handling and spawn it.
pub fn stackd_run(
    binary: &std::ffi::OsStr,
    config: &Path,
    data_dir: &Path,
    port: u16,
    kubeconfig: &Path,
) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("POD_NAMESPACE")
        .stdout(std::process::Stdio::null());
    command
}

/// A plain synchronous GET of `url` (`http://host:port/path`): the status code
/// and the body.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    request("GET", url, None)
}

/// A plain synchronous request with no body, with a bearer `token` if any.
fn request(method: &str, url: &str, token: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n"));
    let authorization = authorization.unwrap_or_default();
    write!(
        stream,
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}
