//! A real Kubernetes control plane for probity's end-to-end tests, in the
//! spirit of controller-runtime's envtest: `etcd` and `kube-apiserver` run as
//! child processes on free loopback ports, with generated certificates (a
//! serving certificate for `127.0.0.1` and an admin client certificate in
//! `system:masters`). There is no kubelet and no controller manager: objects
//! are stored and validated, admission runs, nothing schedules.
//!
//! The binaries come from `hack/control-plane.sh build` (found through
//! `$PROBITY_K8S_BIN_DIR` or the cache it fills).
//!
//! # One control plane per test binary
//!
//! Starting kube-apiserver takes seconds, so every test in one test binary
//! shares the control plane [`shared`] starts on first use, and isolates
//! itself with its own namespace ([`TestEnv::namespace`]) and uniquely named
//! cluster-scoped objects. The shared control plane lives in a `static`,
//! whose destructor never runs: a reaper process stops it when the test
//! binary exits, however it exits. A run killed with `SIGKILL` before the
//! reaper could act leaves pid files behind, and a later [`TestEnv::start`]
//! (once they are a minute old; test binaries run side by side) or
//! `probity-testenv sweep` stops those processes ([`sweep_stale`]).
//!
//! # Skip or fail
//!
//! When the binaries are missing, [`shared`] returns `None` and prints how to
//! build them, so a local `cargo test` still works. When `$CI` is set, or
//! `$PROBITY_E2E=require` (which `make test` sets), it panics instead: an
//! end-to-end test never passes without having run.
//!
//! ```no_run
//! # async fn example() -> Result<(), probity_testenv::Error> {
//! let Some(env) = probity_testenv::shared() else { return Ok(()) };
//! let client = env.client()?;
//! let ns = env.namespace(&client, "my-test").await?;
//! # let _ = ns; Ok(()) }
//! ```

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "the harness waits on real processes in wall time"
)]

mod binaries;
pub mod chart_docs;
mod env;
pub mod image;
pub mod isolation;
pub mod node;
pub mod orders;
mod pki;
pub mod process;
pub mod redis;
pub mod registry;
mod sweep;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

pub use binaries::{BIN_DIR_ENV, BUILD_HINT, Binaries, KUBERNETES_VERSION, default_cache_dir};
pub use env::{Options, TestEnv};
pub use process::{Process, free_addr, free_port, free_ports, output_with_stdin};
pub use sweep::{Swept, recorded_pids, sweep_stale};

/// Why a control plane could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or socket operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file, directory or address involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A binary could not be executed.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The binary.
        program: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Pki(String),
    /// A component exited during start-up.
    #[error("{component} exited during start-up ({status}); last log lines:\n{log}")]
    Exited {
        /// `etcd`, `kube-apiserver`, `docker-registry`.
        component: String,
        /// The exit status.
        status: String,
        /// The end of its log.
        log: String,
    },
    /// `/readyz` did not answer `ok` in time.
    #[error("kube-apiserver not ready after {timeout:?}; last log lines:\n{log}")]
    NotReady {
        /// How long we waited.
        timeout: Duration,
        /// The end of the API server's log.
        log: String,
    },
    /// Building or using a client failed.
    #[error("kubernetes client: {0}")]
    Client(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Whether end-to-end tests must run (fail when the control plane is
/// unavailable) rather than skip: `$PROBITY_E2E=require`, or `$CI` set to
/// anything but empty, `0` or `false`.
pub fn e2e_required() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let ci = var("CI");
    var("PROBITY_E2E") == "require"
        || !(ci.is_empty() || ci == "0" || ci.eq_ignore_ascii_case("false"))
}

/// The binaries, or `None` after printing why the calling test is skipped.
///
/// # Panics
///
/// When the binaries are missing and [`e2e_required`] is true.
pub fn binaries_or_skip() -> Option<Binaries> {
    match Binaries::locate() {
        Ok(binaries) => Some(binaries),
        Err(why) => {
            let test = std::thread::current().name().unwrap_or("test").to_owned();
            assert!(
                !e2e_required(),
                "{test}: the control plane is required here (CI or PROBITY_E2E=require) but \
                 unavailable: {why}. Build it with `{BUILD_HINT}`"
            );
            // Straight to stderr: libtest captures `eprintln!`, and a skip
            // that nobody sees looks like a pass.
            let line = format!(
                "skipping {test}: control-plane binaries not found ({why}); build them with \
                 `{BUILD_HINT}` or set {BIN_DIR_ENV}\n"
            );
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            None
        }
    }
}

/// The control plane shared by every test of this test binary, started on
/// first use. `None` when the binaries are missing and tests may skip.
///
/// # Panics
///
/// When the binaries are missing and [`e2e_required`] is true, or when they
/// are present but the control plane fails to start (every later call panics
/// with the same message).
pub fn shared() -> Option<&'static TestEnv> {
    static SHARED: OnceLock<Option<Result<TestEnv, String>>> = OnceLock::new();
    let slot = SHARED.get_or_init(|| {
        let binaries = binaries_or_skip()?;
        Some(TestEnv::start(binaries, &Options::default()).map_err(|e| format!("{e}")))
    });
    match slot {
        None => {
            // Repeat the skip notice for each test that asked.
            let _ = binaries_or_skip();
            None
        }
        Some(Ok(env)) => Some(env),
        Some(Err(e)) => panic!("starting the test control plane failed: {e}"),
    }
}
