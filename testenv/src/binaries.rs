//! Where the control-plane binaries live.

use std::path::{Path, PathBuf};

/// The Kubernetes version `hack/control-plane.sh` builds by default.
pub const KUBERNETES_VERSION: &str = include_str!("../../hack/k8s-version").trim_ascii();

/// Environment variable naming a directory that holds `etcd`,
/// `kube-apiserver`, `kubectl` and `helm`.
pub const BIN_DIR_ENV: &str = "PROBITY_K8S_BIN_DIR";

/// The command that builds the binaries into the cache.
pub const BUILD_HINT: &str = "make control-plane";

/// The binaries of one Kubernetes version.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

/// The names every complete binary directory holds.
const REQUIRED: [&str; 4] = ["etcd", "kube-apiserver", "kubectl", "helm"];

impl Binaries {
    /// Looks in `$PROBITY_K8S_BIN_DIR`, then in the cache that
    /// `hack/control-plane.sh` fills. Returns why nothing usable was found.
    pub fn locate() -> Result<Self, String> {
        let (dir, source) = match std::env::var_os(BIN_DIR_ENV) {
            Some(dir) if !dir.is_empty() => (PathBuf::from(dir), format!("${BIN_DIR_ENV}")),
            _ => match default_cache_dir() {
                Some(dir) => (dir, "the default cache".to_owned()),
                None => return Err("neither $PROBITY_K8S_BIN_DIR nor $HOME is set".to_owned()),
            },
        };
        Self::check(dir, &source)
    }

    /// Accepts `dir` only when it holds every binary, executable.
    fn check(dir: PathBuf, source: &str) -> Result<Self, String> {
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|name| !is_executable(&dir.join(name)))
            .collect();
        if missing.is_empty() {
            Ok(Self { dir })
        } else {
            Err(format!(
                "{} missing from {} ({source})",
                missing.join(", "),
                dir.display()
            ))
        }
    }

    /// A directory assumed to hold every binary (not checked).
    pub fn from_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `etcd`.
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    /// Path of `kube-apiserver`.
    pub fn kube_apiserver(&self) -> PathBuf {
        self.dir.join("kube-apiserver")
    }

    /// Path of `kubectl`.
    pub fn kubectl(&self) -> PathBuf {
        self.dir.join("kubectl")
    }

    /// Path of `helm`.
    pub fn helm(&self) -> PathBuf {
        self.dir.join("helm")
    }
}

/// `${PROBITY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/probity}/k8s/v<version>`,
/// the same rule as `hack/control-plane.sh`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let root = match non_empty("PROBITY_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = match non_empty("XDG_CACHE_HOME") {
                Some(dir) => PathBuf::from(dir),
                None => PathBuf::from(non_empty("HOME")?).join(".cache"),
            };
            cache.join("probity")
        }
    };
    Some(root.join("k8s").join(format!("v{KUBERNETES_VERSION}")))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A tool the harness runs: the path in `$env` when set (it must exist),
/// else `relative` under the cache root (`~/.cache/probity`), where the
/// `hack/` scripts put it.
pub(crate) fn locate_tool(env: &str, relative: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{env}={} does not exist", path.display()))
        };
    }
    let cache = default_cache_dir()
        .and_then(|k8s| k8s.parent().and_then(|p| p.parent()).map(PathBuf::from))
        .ok_or("no cache directory ($HOME unset)")?;
    let path = cache.join(relative);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} not found", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_a_release() {
        let parts: Vec<&str> = KUBERNETES_VERSION.split('.').collect();
        assert_eq!(parts.len(), 3, "{KUBERNETES_VERSION}");
        assert!(
            parts.iter().all(|p| p.parse::<u32>().is_ok()),
            "{KUBERNETES_VERSION}"
        );
    }

    #[test]
    fn missing_binaries_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("probity-bin-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create dir");
        for name in REQUIRED {
            std::fs::write(dir.join(name), "").expect("write");
        }
        let mode = std::fs::Permissions::from_mode(0o755);
        for name in ["etcd", "kubectl"] {
            std::fs::set_permissions(dir.join(name), mode.clone()).expect("chmod");
        }
        // A file that is not executable does not count as present.
        let err = Binaries::check(dir.clone(), "test").expect_err("incomplete dir");
        assert!(
            err.starts_with("kube-apiserver, helm missing from"),
            "{err}"
        );
        for name in REQUIRED {
            std::fs::set_permissions(dir.join(name), mode.clone()).expect("chmod");
        }
        let found = Binaries::check(dir.clone(), "test").expect("complete dir");
        assert_eq!(found.kubectl(), dir.join("kubectl"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
