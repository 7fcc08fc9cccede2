//! The `stackd` command line.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use stackd::local::{LocalRender, render_local};
use stackd::render::sops::AgeKeys;
use stackd::render::{PodSecurity, PublishedServiceType, RenderOptions};

/// GitOps for docker-compose on Kubernetes.
#[derive(Parser)]
#[command(name = "stackd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render a compose stack into Kubernetes objects, offline (like `kompose convert`).
    ///
    /// Prints every object as multi-document YAML on stdout and warnings on stderr.
    Render(RenderArgs),
    /// Show what applying a stack would change in the live cluster, like `kubectl diff`.
    ///
    /// Exits 0 when nothing would change, 1 when something would, 2 on error.
    Diff(RenderArgs),
    /// Follow Git repositories and keep their stacks deployed.
    ///
    /// `stackd run --dry-run --repo ./examples/repo` tries it out with no cluster:
    /// it follows the repository, renders, plans against an empty cluster, and
    /// serves the status page and metrics on :8080.
    Run(RunArgs),
    /// Validate a configuration file and print a summary.
    CheckConfig {
        /// The configuration file.
        config: PathBuf,
    },
    /// Print the Stack CustomResourceDefinition as YAML.
    Crd,
    /// Print the version.
    Version,
    /// Internal: runs one Git network operation for `stackd run` (request on stdin).
    #[command(name = "__git-remote", hide = true)]
    GitRemote,
}

#[derive(clap::Args)]
struct RenderArgs {
    /// The stack directory (or one compose file in it).
    path: PathBuf,
    /// Compose files to merge, in order (default: compose.yaml and compose.override.yaml).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Stack name (default: the compose `name:` or the directory name).
    #[arg(long)]
    name: Option<String>,
    /// Namespace to render into (default: the stack name).
    #[arg(long)]
    namespace: Option<String>,
    /// Env file used for interpolation instead of the stack's `.env`.
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,
    /// A variable for interpolation, overriding the env file (repeatable).
    #[arg(short = 'e', long = "var", value_name = "KEY=VALUE")]
    variables: Vec<String>,
    /// Enable a compose profile (repeatable).
    #[arg(long = "profile")]
    profiles: Vec<String>,
    /// Service type for published ports.
    #[arg(long, value_enum, default_value_t = ServiceType::LoadBalancer)]
    published_service_type: ServiceType,
    /// Allow bind mounts of host paths (hostPath volumes; needs --pod-security privileged).
    #[arg(long)]
    allow_host_path: bool,
    /// Pod Security level to render for (the repository key podSecurity).
    #[arg(long, value_enum, default_value_t = PodSecurityLevel::Baseline)]
    pod_security: PodSecurityLevel,
    /// Render compose networks as NetworkPolicies (the repository key networkPolicies).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    network_policies: bool,
    /// A namespace the stack may use although reserved or foreign (the
    /// repository key namespaces; repeatable).
    #[arg(long = "allow-namespace", value_name = "GLOB")]
    allow_namespaces: Vec<String>,
    /// Age identity file to decrypt SOPS-encrypted files with (the repository
    /// key decryption.ageKeyFile).
    #[arg(long, value_name = "PATH")]
    age_key_file: Option<PathBuf>,
    /// Output format (`stackd diff` prints a text diff unless `-o json`).
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
    output: Format,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The configuration file (repositories, per-stack settings, API token).
    #[arg(long, conflicts_with = "repo")]
    config: Option<PathBuf>,
    /// Follow one repository: a URL (https, ssh, file://) or a local path.
    #[arg(long, required_unless_present = "config")]
    repo: Option<String>,
    /// Branch, tag or commit of --repo.
    #[arg(long = "ref", default_value = "main", requires = "repo")]
    git_ref: String,
    /// Directories of --repo to scan for stacks (globs; default: all).
    #[arg(long = "path", requires = "repo")]
    paths: Vec<String>,
    /// Where Git mirrors are kept (default /var/lib/stackd; a temporary directory with --dry-run).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Render and plan, but write nothing to any cluster.
    #[arg(long)]
    dry_run: bool,
    /// Address of the status page, API, webhooks and metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// Serve /metrics on this address instead of --listen.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Write only while holding a Lease, so that several replicas can run.
    #[arg(long)]
    leader_election: bool,
    /// The namespace stackd runs in: its leader-election Lease lives there, and
    /// stacks may not use it unless a repository lists it by exact name.
    #[arg(long, env = "POD_NAMESPACE", default_value = "stackd-system")]
    lease_namespace: String,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Split the stacks into N shards, each granted by a Lease `stackd-shard-K`
    /// in --lease-namespace; each replica holds a fair share of them and
    /// reconciles only their stacks (implies leases, with or without --leader-election).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: Option<u32>,
    /// How long a Lease (leader or shard) lasts without renewal; renewals come
    /// at a third of it. A dead replica's work is taken over within about this long.
    #[arg(long, default_value = "15s", value_parser = parse_lease_duration)]
    lease_duration: std::time::Duration,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Sustained API requests per second (client-side; 0 = no limit).
    #[arg(long, default_value_t = stackd::daemon::rate_limit::DEFAULT_QPS)]
    kube_qps: f64,
    /// API requests that may go at once before --kube-qps spaces them.
    #[arg(long, default_value_t = stackd::daemon::rate_limit::DEFAULT_BURST)]
    kube_burst: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum PodSecurityLevel {
    Restricted,
    Baseline,
    Privileged,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ServiceType {
    LoadBalancer,
    NodePort,
    ClusterIp,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::GitRemote = cli.command {
        return ExitCode::from(u8::try_from(stackd::git::worker::serve()).unwrap_or(2));
    }
    if let Command::Diff(args) = cli.command {
        return match diff(args) {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Run(args) = &cli.command {
        init_logging(args.log_format);
        // libgit2's network timeouts are process globals: set them before any
        // thread exists, so that a silent Git server cannot hold a poll forever.
        // SAFETY: no other thread has been started yet.
        if let Err(error) = unsafe {
            stackd::git::source::set_network_timeouts(
                std::time::Duration::from_secs(10),
                std::time::Duration::from_secs(60),
            )
        } {
            eprintln!("warning: cannot set Git network timeouts: {error}");
        }
        // Network operations run in a child process of this binary, killed at
        // the repository's `timeout`: a hung server cannot wedge a poll.
        match std::env::current_exe() {
            Ok(program) => stackd::git::worker::set_program(Some(program)),
            Err(error) => eprintln!(
                "warning: cannot find the stackd executable ({error}); Git operations are bounded by idle timeouts only"
            ),
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Each of stackd's errors already includes what it wraps, so the
            // top-level message is complete; the chain would repeat it.
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Render(args) => render(args),
        Command::Run(args) => run_daemon(args),
        Command::Diff(_) => unreachable!("handled in main for its exit codes"),
        Command::GitRemote => unreachable!("handled in main for its exit code"),
        Command::CheckConfig { config } => {
            let config = stackd::config::Config::load(&config)?;
            for repository in &config.repositories {
                println!(
                    "repository {}: {} ({}), {} stack settings",
                    repository.source.name,
                    repository.source.redacted_url(),
                    repository.source.git_ref,
                    repository.policy.stacks.len()
                );
            }
            println!("configuration is valid");
            Ok(())
        }
        Command::Crd => {
            print!("{}", stackd::crd::crd_yaml());
            Ok(())
        }
        Command::Version => {
            println!("stackd {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Colours only for a person at a terminal, and never with `NO_COLOR` set to
/// anything (no-color.org): a log file or collector would get escape codes.
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

fn run_daemon(args: RunArgs) -> anyhow::Result<()> {
    let config = match (&args.config, &args.repo) {
        (Some(file), _) => stackd::config::Config::load(file)?,
        (None, Some(repo)) => one_repository_config(repo, &args.git_ref, &args.paths)?,
        (None, None) => anyhow::bail!("give --config FILE or --repo URL"),
    };
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        if args.dry_run {
            std::env::temp_dir().join("stackd")
        } else {
            PathBuf::from(stackd::git::settings::DEFAULT_DATA_DIR)
        }
    });
    let leader_election =
        (args.leader_election || args.shards.is_some()).then(|| stackd::daemon::LeaderSettings {
            namespace: args.lease_namespace.clone(),
            lease_name: "stackd-leader".to_string(),
            identity: args
                .identity
                .clone()
                .unwrap_or_else(|| format!("stackd-{}", std::process::id())),
        });
    let options = stackd::daemon::RunOptions {
        config,
        config_file: args.config.clone(),
        leader_election,
        data_dir,
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        dry_run: args.dry_run,
        own_namespace: Some(args.lease_namespace.clone()),
        kube_qps: args.kube_qps,
        kube_burst: args.kube_burst,
        shards: args.shards,
        lease_duration: args.lease_duration,
    };
    limit_malloc_arenas();
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(stackd::daemon::run(options, shutdown_signal()));
    // Polls stop at shutdown (their worker processes are killed), but nothing
    // still blocking (a local repository on a hung disk) may hold the exit:
    // Kubernetes waits 30 s before SIGKILL.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result?;
    Ok(())
}

/// `--lease-duration`: "15s", "1m"; at least 3 s, so that renewals (a third of
/// it) stay at least a second apart.
fn parse_lease_duration(text: &str) -> Result<std::time::Duration, String> {
    let duration = stackd::git::settings::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration such as 15s or 1m"))?;
    if duration < std::time::Duration::from_secs(3) {
        return Err(format!("{text:?} is shorter than 3s"));
    }
    Ok(duration)
}

/// How long blocking work may delay the exit after the daemon has stopped.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// One malloc arena instead of glibc's eight per core: the daemon's threads
/// share long-lived caches, and per-thread arenas only keep freed memory apart
/// (about 8 MiB less peak memory at 1,000 stacks). `MALLOC_ARENA_MAX` set by
/// the operator still wins: this runs only when it is unset.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        const M_ARENA_MAX: std::ffi::c_int = -8;
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: mallopt only changes an allocator setting; called before the
        // runtime starts its threads.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
        }
    }
}

/// SIGTERM (Kubernetes) or Ctrl-C (a terminal).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// The configuration for `--repo`. A local directory inside a Git work tree
/// (like `./examples/repo`) follows that work tree's commits, scanning only
/// below the directory.
fn one_repository_config(
    repo: &str,
    git_ref: &str,
    paths: &[String],
) -> anyhow::Result<stackd::config::Config> {
    let mut url = repo.to_string();
    let mut paths = paths.to_vec();
    let mut name = repo
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("repo")
        .trim_end_matches(".git")
        .to_string();
    let mut git_ref = git_ref.to_string();
    let local = std::path::Path::new(repo);
    if !repo.contains("://") && local.is_dir() {
        let directory = local.canonicalize()?;
        let repository = git2::Repository::discover(&directory)
            .with_context(|| format!("{repo}: not inside a Git repository"))?;
        let root = repository
            .workdir()
            .with_context(|| format!("{repo}: a bare repository; give its URL instead"))?
            .canonicalize()?;
        let below = directory
            .strip_prefix(&root)
            .unwrap_or(std::path::Path::new(""))
            .to_string_lossy()
            .into_owned();
        if !below.is_empty() {
            paths = if paths.is_empty() {
                vec![format!("{below}/*"), below.clone()]
            } else {
                paths.iter().map(|p| format!("{below}/{p}")).collect()
            };
        }
        // Follow whatever is checked out unless a ref was given explicitly.
        if git_ref == "main"
            && let Ok(head) = repository.head()
            && let Ok(branch) = head.shorthand()
        {
            git_ref = branch.to_string();
        }
        url = root.to_string_lossy().into_owned();
        name = directory
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(name);
    }
    let name = stackd::render::sanitise_name(&name);
    let text = serde_json::json!({
        "repositories": [{"name": name, "url": url, "ref": git_ref, "paths": paths, "interval": "60s"}]
    });
    Ok(stackd::config::Config::parse(
        &text.to_string(),
        std::path::Path::new("--repo"),
    )?)
}

fn diff(args: RenderArgs) -> anyhow::Result<ExitCode> {
    let output = args.output;
    let request = local_request(args)?;
    let mut rendered = render_local(&request)?;
    // The first object is the stack's Namespace, labelled with the stack's name.
    let namespace = rendered
        .objects
        .iter()
        .find(|o| o.kind() == "Namespace")
        .context("the rendered stack has no Namespace")?;
    let stack = namespace
        .metadata()
        .labels
        .as_ref()
        .and_then(|l| l.get(stackd::crd::STACK_LABEL))
        .cloned()
        .unwrap_or_default();
    let namespace = namespace.name().to_string();
    let runtime = tokio::runtime::Runtime::new()?;
    let changes = runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("no Kubernetes cluster is reachable (stackd diff compares with a live cluster; `stackd render` works offline)")?;
        // The whole namespace rule, as the daemon applies it.
        let rules = stackd::tenancy::NamespaceRules {
            allowed: request.allowed_namespaces.clone(),
            own_namespace: Some(
                std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "stackd-system".to_string()),
            ),
        };
        let access = stackd::diff::check_namespace(&client, &namespace, &rules)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", request.path.display()))?;
        // As the daemon: someone else's namespace keeps its own Namespace object.
        if !access.owns_namespace() {
            rendered.objects.retain(|o| o.kind() != "Namespace");
        }
        anyhow::Ok(stackd::diff::diff(&client, &stack, &namespace, &rendered).await?)
    })?;
    let changed = changes
        .iter()
        .filter(|c| c.change != stackd::diff::Change::Unchanged)
        .count();
    let text = match output {
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&stackd::diff::json(&changes))?
        ),
        Format::Yaml => {
            use std::io::IsTerminal;
            let colour = colour(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR"),
            );
            stackd::diff::text(&changes, colour)
        }
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(if changed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn render(args: RenderArgs) -> anyhow::Result<()> {
    let output = args.output;
    let rendered = render_local(&local_request(args)?)?;
    for warning in &rendered.warnings {
        eprintln!("warning: {warning}");
    }
    let text = match output {
        Format::Yaml => rendered.to_yaml(),
        Format::Json => rendered.to_json_list(),
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

fn local_request(args: RenderArgs) -> anyhow::Result<LocalRender> {
    let mut variables = BTreeMap::new();
    for pair in &args.variables {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--var {pair:?}: expected KEY=VALUE"))?;
        variables.insert(key.to_string(), value.to_string());
    }
    let decryption = match &args.age_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--age-key-file {}", path.display()))?;
            let keys = AgeKeys::parse(&text).map_err(|problem| {
                anyhow::anyhow!("--age-key-file {}: {problem}", path.display())
            })?;
            Some(std::sync::Arc::new(keys))
        }
        None => None,
    };
    let request = LocalRender {
        decryption,
        path: args.path,
        files: args.files,
        env_files: args.env_files,
        profiles: args.profiles,
        variables,
        name: args.name,
        namespace: args.namespace,
        repository_root: None,
        pod_security: Some(match args.pod_security {
            PodSecurityLevel::Restricted => PodSecurity::Restricted,
            PodSecurityLevel::Baseline => PodSecurity::Baseline,
            PodSecurityLevel::Privileged => PodSecurity::Privileged,
        }),
        network_policies: Some(args.network_policies),
        allowed_namespaces: args.allow_namespaces,
        options: RenderOptions {
            allow_host_path: args.allow_host_path,
            published_service_type: match args.published_service_type {
                ServiceType::LoadBalancer => PublishedServiceType::LoadBalancer,
                ServiceType::NodePort => PublishedServiceType::NodePort,
                ServiceType::ClusterIp => PublishedServiceType::ClusterIP,
            },
        },
    };
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_at_a_terminal_and_never_with_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, Some("1".into())));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(colour(true, Some("".into())));
    }
}
