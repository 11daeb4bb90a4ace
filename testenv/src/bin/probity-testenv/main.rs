//! Runs a local control plane until interrupted, for manual experiments,
//! and the narrated tour `make demo` runs.

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "the demo waits on real processes in wall time"
)]

use std::time::Duration;

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
        /// Also start a node (containerd and kubelet) with a registry that
        /// holds the pause image, probity/probity:dev and probity/orders:dev
        /// (from the binaries beside this one). Needs root and a namespace of the run's
        /// own: run as `hack/isolated.sh probity-testenv up --node`.
        #[arg(long)]
        node: bool,
    },
    /// Stop control planes left behind by killed runs.
    Sweep,
    /// Regenerate the values table of a chart's README from the comments
    /// of its values.yaml.
    ChartDocs {
        /// The chart directory.
        #[arg(long, value_name = "PATH", default_value = "charts/probity")]
        chart: std::path::PathBuf,
    },
    /// Build the test images without a container engine and push them by
    /// digest to a plain-HTTP registry; prints each pushed reference.
    Images {
        /// The registry, `host:port`.
        #[arg(long, value_name = "HOST:PORT")]
        registry: String,
    },
    /// The narrated tour: operator, webhooks, policies, drift and the
    /// orders example on a fresh control plane (and, as root, a real node);
    /// removes everything at the end.
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
        /// On a real node: the operator from its image through its chart,
        /// the orders example as pods under kubelet's probes. `auto`: on a
        /// node when root (through hack/isolated.sh), else without one.
        #[arg(long, value_enum, default_value_t = demo::NodeMode::Auto)]
        node: demo::NodeMode,
        /// The Helm chart the tour on a node installs.
        #[arg(long, value_name = "PATH", default_value = "charts/probity")]
        chart: std::path::PathBuf,
        /// The script that gives the node namespaces of the run's own.
        #[arg(long, value_name = "PATH", default_value = "hack/isolated.sh")]
        isolated: std::path::PathBuf,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Up { kubeconfig, node } => up(kubeconfig, node).await,
        Cmd::Demo {
            probity,
            orders,
            crds,
            node,
            chart,
            isolated,
        } => {
            let inputs = demo::Inputs {
                probity,
                orders,
                crds,
                chart,
                isolated,
            };
            tokio::task::spawn_blocking(move || demo::run(&inputs, node))
                .await
                .context("demo task")?
        }
        Cmd::Images { registry } => tokio::task::spawn_blocking(move || images(&registry))
            .await
            .context("images task")?,
        Cmd::ChartDocs { chart } => {
            let values = std::fs::read_to_string(chart.join("values.yaml"))
                .with_context(|| format!("{}/values.yaml", chart.display()))?;
            let path = chart.join("README.md");
            let readme =
                std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
            let updated = probity_testenv::chart_docs::update(&readme, &values)?;
            if updated != readme {
                std::fs::write(&path, updated).with_context(|| path.display().to_string())?;
                println!("updated {}", path.display());
            }
            Ok(())
        }
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

async fn up(copy_to: Option<std::path::PathBuf>, with_node: bool) -> anyhow::Result<()> {
    let binaries = binaries()?;
    eprintln!(
        "starting etcd + kube-apiserver from {} ...",
        binaries.dir().display()
    );
    let options = Options {
        node: with_node,
        ..Options::default()
    };
    let env = tokio::task::spawn_blocking(move || TestEnv::start(binaries, &options))
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
    let env = std::sync::Arc::new(env);
    let node = if with_node {
        probity_testenv::isolation::check()
            .context("a node runs only in a namespace of its own; start with hack/isolated.sh")?;
        let registry = probity_testenv::registry::locate_or_skip()
            .context("the node's registry: docker-registry not found")?;
        let started = std::time::Instant::now();
        let node = tokio::task::spawn_blocking({
            let env = std::sync::Arc::clone(&env);
            move || probity_testenv::node::Node::start(&env, &registry, Duration::from_secs(120))
        })
        .await
        .context("node start-up task")?
        .context("starting the node")?;
        println!(
            "node {} Ready in {:.1} s",
            probity_testenv::node::NODE_NAME,
            started.elapsed().as_secs_f64()
        );
        Some(node)
    } else {
        None
    };
    println!("KUBECONFIG={}", kubeconfig.display());
    if let Some(node) = &node {
        println!("REGISTRY={}", node.registry().host);
        if let Some(netns) = probity_testenv::isolation::netns_file() {
            println!("NETNS={netns}");
        }
        println!("  pause image: {}", node.pause_image());
        let work = node.dir().join("images");
        let pushed = tokio::task::spawn_blocking({
            let registry = probity_testenv::registry::Registry::at(&node.registry().host);
            move || probity_testenv::image::push_project_images(&registry, &work)
        })
        .await
        .context("image task")?
        .context("pushing the project's images")?;
        for image in pushed {
            println!("  image: {image}");
        }
    }
    println!("  kubectl: {}", env.binaries().kubectl().display());
    println!("  helm:    {}", env.binaries().helm().display());
    println!("Press Ctrl-C to stop.");
    wait_for_signal().await?;
    eprintln!("stopping ...");
    tokio::task::spawn_blocking(move || {
        drop(node);
        drop(env);
    })
    .await
    .context("stopping")?;
    Ok(())
}

/// The control-plane binaries, or how to build them.
fn binaries() -> anyhow::Result<Binaries> {
    Binaries::locate().map_err(|why| {
        anyhow::anyhow!(
            "control-plane binaries not found: {why}\nbuild them with: {}",
            probity_testenv::BUILD_HINT
        )
    })
}

/// The pause image, `<registry>/probity/pause:3.10@sha256:...`, and the
/// project's images (`probity/probity:dev`, `probity/orders:dev`).
fn images(host: &str) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("probity-images-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = (|| {
        let pause = probity_testenv::image::pause(&work)?;
        let registry = probity_testenv::registry::Registry::at(host);
        let digest = registry.push_image("probity/pause", "3.10", &pause)?;
        println!("{host}/probity/pause:3.10@{digest}");
        for image in probity_testenv::image::push_project_images(&registry, &work)? {
            println!("{image}");
        }
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
