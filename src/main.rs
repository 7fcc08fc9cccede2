//! The `stackd` command line.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use stackd::local::{LocalRender, render_local};
use stackd::render::{PublishedServiceType, RenderOptions};

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
    /// Print the Stack CustomResourceDefinition as YAML.
    Crd,
    /// Print the version.
    Version,
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
    /// Allow bind mounts of host paths (hostPath volumes).
    #[arg(long)]
    allow_host_path: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
    output: Format,
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

fn render(args: RenderArgs) -> anyhow::Result<()> {
    let mut variables = BTreeMap::new();
    for pair in &args.variables {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--var {pair:?}: expected KEY=VALUE"))?;
        variables.insert(key.to_string(), value.to_string());
    }
    let request = LocalRender {
        path: args.path,
        files: args.files,
        env_files: args.env_files,
        profiles: args.profiles,
        variables,
        name: args.name,
        namespace: args.namespace,
        repository_root: None,
        options: RenderOptions {
            allow_host_path: args.allow_host_path,
            published_service_type: match args.published_service_type {
                ServiceType::LoadBalancer => PublishedServiceType::LoadBalancer,
                ServiceType::NodePort => PublishedServiceType::NodePort,
                ServiceType::ClusterIp => PublishedServiceType::ClusterIP,
            },
        },
    };
    let rendered = render_local(&request)?;
    for warning in &rendered.warnings {
        eprintln!("warning: {warning}");
    }
    let text = match args.output {
        Format::Yaml => rendered.to_yaml(),
        Format::Json => rendered.to_json_list(),
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}
