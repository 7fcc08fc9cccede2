//! A private OpenSSH server on 127.0.0.1 for the Git-over-SSH tests: a
//! generated host key and one authorised client key. Install the server with
//! `scripts/setup-sshd.sh`.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";
/// Runs a command, panicking with its stderr on failure; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Generates an ed25519 key pair without a passphrase at `path` (+ `.pub`).
pub fn keygen(path: &Path) -> PathBuf {
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "stackd-test",
            "-f",
            path.to_str().unwrap(),
        ],
    );
    path.to_path_buf()
}

pub fn public_key(private: &Path) -> String {
    std::fs::read_to_string(private.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// `<type> <base64>` of a public key line, without its comment.
pub fn key_type_and_body(public: &str) -> String {
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A private sshd in the foreground, killed on drop.
pub struct SshServer {
    child: Child,
    pub port: u16,
    pub host_public_key: String,
    log: PathBuf,
}

impl SshServer {
    /// Starts sshd authorising `client_key`; `Err` with the reason when sshd is unavailable.
    pub fn start(dir: &Path, client_key: &Path) -> Result<SshServer, String> {
        SshServer::start_with(dir, client_key, None)
    }

    /// [`SshServer::start`], running `force_command` (`ForceCommand`) instead of
    /// the client's command, which it finds in `$SSH_ORIGINAL_COMMAND`.
    pub fn start_with(
        dir: &Path,
        client_key: &Path,
        force_command: Option<&Path>,
    ) -> Result<SshServer, String> {
        if !Path::new(SSHD).exists() {
            return Err(format!("{SSHD} not installed (run scripts/setup-sshd.sh)"));
        }
        // sshd running as root checks for its privilege separation directory.
        if run("id", &["-u"]) == "0" {
            std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
        }
        let host_key = keygen(&dir.join("ssh_host_ed25519_key"));
        let authorized = dir.join("authorized_keys");
        std::fs::write(&authorized, format!("{}\n", public_key(client_key))).unwrap();
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 AuthorizedKeysFile {authorized}\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PidFile {pid}\n\
                 LogLevel VERBOSE\n\
                 {force}",
                host_key = host_key.display(),
                authorized = authorized.display(),
                pid = dir.join("sshd.pid").display(),
                force = force_command
                    .map(|c| format!("ForceCommand {}\n", c.display()))
                    .unwrap_or_default(),
            ),
        )
        .unwrap();
        let log = dir.join("sshd.log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .map_err(|e| format!("spawn {SSHD}: {e}"))?;
        let mut server = SshServer {
            child,
            port,
            host_public_key: key_type_and_body(&public_key(&host_key)),
            log,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Waits for the SSH banner, or reports why sshd exited.
    fn wait_ready(&mut self) -> Result<(), String> {
        use std::io::Read;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("sshd exited ({status}): {}", self.log_text()));
            }
            if let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut banner = [0u8; 4];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("sshd did not answer: {}", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `known_hosts` as OpenSSH writes it for a non-22 port.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_public_key)
    }

    pub fn url(&self, user: &str, repo: &Path) -> String {
        format!("ssh://{user}@127.0.0.1:{}{}", self.port, repo.display())
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    listener.local_addr().unwrap().port()
}
