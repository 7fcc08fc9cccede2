//! Shared helpers for the Git source tests: repositories made with the `git` CLI,
//! and a smart-HTTP server (`git http-backend` as CGI) with optional basic auth.
#![allow(dead_code)]

pub mod ssh;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use base64::Engine;
use futures::StreamExt;

/// Runs `git` in `dir` with a fixed identity; panics with its stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A working repository (the "upstream") on branch `main`.
pub struct Upstream {
    pub dir: PathBuf,
}

impl Upstream {
    pub fn new(parent: &Path, name: &str) -> Upstream {
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        git(
            &dir,
            &["config", "uploadpack.allowReachableSHA1InWant", "true"],
        );
        git(&dir, &["config", "uploadpack.allowFilter", "true"]);
        git(&dir, &["config", "http.receivepack", "false"]);
        Upstream { dir }
    }

    pub fn write(&self, path: &str, content: &str) {
        let p = self.dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// Stages everything and commits; returns the new commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    pub fn head(&self) -> String {
        git(&self.dir, &["rev-parse", "HEAD"])
    }

    pub fn git(&self, args: &[&str]) -> String {
        git(&self.dir, args)
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.dir.display())
    }
}

/// Counters of what the HTTP server was asked for.
#[derive(Default)]
pub struct Traffic {
    /// `GET .../info/refs` (ref advertisements, i.e. ls-remote and fetch starts).
    pub advertisements: AtomicUsize,
    /// `POST .../git-upload-pack` (negotiation and pack transfer: real fetches).
    pub upload_packs: AtomicUsize,
    pub bytes_sent: AtomicU64,
    pub unauthorized: AtomicUsize,
}

impl Traffic {
    pub fn upload_packs(&self) -> usize {
        self.upload_packs.load(Ordering::SeqCst)
    }
    pub fn advertisements(&self) -> usize {
        self.advertisements.load(Ordering::SeqCst)
    }
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::SeqCst)
    }
}

struct ServerState {
    project_root: PathBuf,
    basic_auth: Option<(String, String)>,
    traffic: Arc<Traffic>,
    backend: PathBuf,
    stall_ms: Arc<AtomicU64>,
    drip: Arc<AtomicBool>,
}

/// A smart-HTTP git server on 127.0.0.1 serving every repository under `root`.
pub struct HttpServer {
    pub addr: std::net::SocketAddr,
    pub traffic: Arc<Traffic>,
    /// Pack responses send half, then stall this long: a slow fetch.
    stall_ms: Arc<AtomicU64>,
    drip: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Serves `root`; with `basic_auth`, requests need those credentials.
    pub async fn start(root: &Path, basic_auth: Option<(&str, &str)>) -> HttpServer {
        let exec_path = git(root, &["--exec-path"]);
        let traffic = Arc::new(Traffic::default());
        let stall_ms = Arc::new(AtomicU64::new(0));
        let drip = Arc::new(AtomicBool::new(false));
        let state = Arc::new(ServerState {
            stall_ms: stall_ms.clone(),
            drip: drip.clone(),
            project_root: root.to_path_buf(),
            basic_auth: basic_auth.map(|(u, p)| (u.to_string(), p.to_string())),
            traffic: traffic.clone(),
            backend: Path::new(&exec_path).join("git-http-backend"),
        });
        let app = axum::Router::new().fallback(cgi).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpServer {
            addr,
            traffic,
            stall_ms,
            drip,
            task,
        }
    }

    /// From now on (while `on`), pack responses (`git-upload-pack`) are sent
    /// one byte per second: never idle, never done.
    pub fn drip_packs(&self, on: bool) {
        self.drip.store(on, Ordering::SeqCst);
    }

    /// From now on, pack responses (`git-upload-pack`) send their first half
    /// and then wait `stall` before the rest; zero turns this off.
    pub fn stall_packs(&self, stall: std::time::Duration) {
        let ms = u64::try_from(stall.as_millis()).unwrap_or(u64::MAX);
        self.stall_ms.store(ms, Ordering::SeqCst);
    }

    /// The URL of repository directory `name` under the root.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}", self.addr, name)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn cgi(
    State(state): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let mut remote_user = String::new();
    if let Some((user, pass)) = &state.basic_auth {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if given != expected {
            state.traffic.unauthorized.fetch_add(1, Ordering::SeqCst);
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("WWW-Authenticate", "Basic realm=\"git\"")
                .body(Body::from("unauthorized"))
                .unwrap();
        }
        remote_user = user.clone();
    }
    let path = uri.path().to_string();
    if path.ends_with("/info/refs") {
        state.traffic.advertisements.fetch_add(1, Ordering::SeqCst);
    } else if path.ends_with("/git-upload-pack") {
        state.traffic.upload_packs.fetch_add(1, Ordering::SeqCst);
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut child = tokio::process::Command::new(&state.backend)
        .env_clear()
        .env("GIT_PROJECT_ROOT", &state.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("REQUEST_METHOD", method.as_str())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", remote_user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn git-http-backend");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(&body).await;
    }
    let out = child.wait_with_output().await.unwrap();
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        return Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from("bad cgi output"))
            .unwrap();
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut payload = raw[end + sep..].to_vec();
    state
        .traffic
        .bytes_sent
        .fetch_add(payload.len() as u64, Ordering::SeqCst);
    let mut response = Response::builder();
    let mut status = StatusCode::OK;
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
        } else {
            response = response.header(name.trim(), value);
        }
    }
    if state.drip.load(Ordering::SeqCst) && path.ends_with("/git-upload-pack") {
        let bytes = futures::stream::iter(payload).then(|byte| async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            Ok::<_, std::io::Error>(Bytes::from(vec![byte]))
        });
        return response
            .status(status)
            .body(Body::from_stream(bytes))
            .unwrap();
    }
    let stall = state.stall_ms.load(Ordering::SeqCst);
    if stall > 0 && path.ends_with("/git-upload-pack") {
        let rest = payload.split_off(payload.len() / 2);
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(payload))]).chain(
            futures::stream::once(async move {
                tokio::time::sleep(std::time::Duration::from_millis(stall)).await;
                Ok(Bytes::from(rest))
            }),
        );
        return response
            .status(status)
            .body(Body::from_stream(chunks))
            .unwrap();
    }
    response.status(status).body(Body::from(payload)).unwrap()
}

/// Writes `content` to a new file in `dir` and returns its path.
pub fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// How a [`FaultyProxy`] treats new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Passes bytes both ways to the real server.
    None = 0,
    /// Accepts and never answers.
    Silent = 1,
    /// Reads an HTTP request, answers half of a ref advertisement, then stalls.
    HalfAdvertisement = 2,
}

/// A TCP front on 127.0.0.1 for a real Git server that misbehaves on demand.
pub struct FaultyProxy {
    pub addr: std::net::SocketAddr,
    fault: Arc<AtomicU8>,
    /// Connections accepted while misbehaving.
    pub stalled: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyProxy {
    pub async fn start(target: std::net::SocketAddr) -> FaultyProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let stalled = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (fault, stalled) = (fault.clone(), stalled.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let mode = fault.load(Ordering::SeqCst);
                    if mode != Fault::None as u8 {
                        stalled.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::spawn(serve_faulty(client, target, mode));
                }
            }
        });
        FaultyProxy {
            addr,
            fault,
            stalled,
            task,
        }
    }

    /// Applies to connections accepted from now on.
    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    pub fn stalled(&self) -> usize {
        self.stalled.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_faulty(mut client: tokio::net::TcpStream, target: std::net::SocketAddr, mode: u8) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hold = std::time::Duration::from_secs(3600);
    if mode == Fault::Silent as u8 {
        tokio::time::sleep(hold).await;
    } else if mode == Fault::HalfAdvertisement as u8 {
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let body = "001e# service=git-upload-pack\n0000\
                    00a01111111111111111111111111111111111111111 HEAD\0multi_ack";
        let head = "HTTP/1.1 200 OK\r\n\
                    Content-Type: application/x-git-upload-pack-advertisement\r\n\
                    Cache-Control: no-cache\r\n\
                    Content-Length: 400\r\n\r\n";
        let _ = client.write_all(format!("{head}{body}").as_bytes()).await;
        let _ = client.flush().await;
        tokio::time::sleep(hold).await;
    } else if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}
