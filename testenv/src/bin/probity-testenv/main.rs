//! Runs a local control plane until interrupted, for manual experiments,
//! and the narrated tour `make demo` runs.

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "the demo waits on real processes in wall time"
)]

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use probity_testenv::{Binaries, Options, TestEnv};

mod demo;

/// A local etcd + kube-apiserver for trying probity without a cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start a control plane, print how to reach it, and stop it on Ctrl-C.
    Up {
        /// Also copy the admin kubeconfig to this path.
        #[arg(long, value_name = "PATH")]
        kubeconfig: Option<std::path::PathBuf>,
    },
    /// Stop control planes left behind by killed runs.
    Sweep,
    /// Build the test images without a container engine and push them by
    /// digest to a plain-HTTP registry; prints each pushed reference.
    Images {
        /// The registry, `host:port`.
        #[arg(long, value_name = "HOST:PORT")]
        registry: String,
    },
    /// The narrated tour: operator, webhooks, policies, drift and the
    /// orders example on a fresh control plane; removes everything at the end.
    Demo {
        /// The `probity` binary.
        #[arg(long, value_name = "PATH", default_value = "target/debug/probity")]
        probity: std::path::PathBuf,
        /// The probity-probe orders example binary.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "target/debug/examples/orders"
        )]
        orders: std::path::PathBuf,
        /// The CRD manifest.
        #[arg(long, value_name = "PATH", default_value = "crds/crds.yaml")]
        crds: std::path::PathBuf,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Up { kubeconfig } => up(kubeconfig).await,
        Cmd::Demo {
            probity,
            orders,
            crds,
        } => {
            let inputs = demo::Inputs {
                probity,
                orders,
                crds,
            };
            tokio::task::spawn_blocking(move || demo::run(&inputs))
                .await
                .context("demo task")?
        }
        Cmd::Images { registry } => tokio::task::spawn_blocking(move || images(&registry))
            .await
            .context("images task")?,
        Cmd::Sweep => {
            for swept in probity_testenv::sweep_stale() {
                println!(
                    "removed {} (killed {:?})",
                    swept.dir.display(),
                    swept.killed
                );
            }
            Ok(())
        }
    }
}

async fn up(copy_to: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let binaries = Binaries::locate().map_err(|why| {
        anyhow::anyhow!(
            "control-plane binaries not found: {why}\nbuild them with: {}",
            probity_testenv::BUILD_HINT
        )
    })?;
    eprintln!(
        "starting etcd + kube-apiserver from {} ...",
        binaries.dir().display()
    );
    let env = tokio::task::spawn_blocking(move || TestEnv::start(binaries, &Options::default()))
        .await
        .context("start-up task")?
        .context("starting the control plane")?;
    let client = env.client()?;
    let version = client
        .apiserver_version()
        .await
        .context("reading the server version")?;
    let mut kubeconfig = env.kubeconfig().to_path_buf();
    if let Some(dest) = copy_to {
        std::fs::copy(env.kubeconfig(), &dest)
            .with_context(|| format!("copying the kubeconfig to {}", dest.display()))?;
        kubeconfig = dest;
    }
    println!(
        "kube-apiserver {} ready at {}",
        version.git_version,
        env.server()
    );
    println!("KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl: {}", env.binaries().kubectl().display());
    println!("  helm:    {}", env.binaries().helm().display());
    println!("Press Ctrl-C to stop.");
    wait_for_signal().await?;
    eprintln!("stopping ...");
    drop(env);
    Ok(())
}

/// The pause image: `<registry>/probity/pause:3.10@sha256:...`.
fn images(host: &str) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("probity-images-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = (|| {
        let pause = probity_testenv::image::pause(&work)?;
        let registry = probity_testenv::registry::Registry::at(host);
        let digest = registry.push_image("probity/pause", "3.10", &pause)?;
        println!("{host}/probity/pause:3.10@{digest}");
        Ok::<_, probity_testenv::Error>(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    Ok(result?)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
