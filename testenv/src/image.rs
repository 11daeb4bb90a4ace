//! OCI images without a container engine: layers written as plain tar
//! archives, an image config, and a manifest, pushed to a registry by
//! [`crate::registry::Registry::push_image`].
//!
//! Layers are uncompressed (`application/vnd.oci.image.layer.v1.tar`),
//! which every OCI runtime pulls; their entries carry fixed owners and a
//! fixed time, so the same files always make the same digest.

use serde_json::json;

/// Media type of an uncompressed layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of an image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

const BLOCK: usize = 512;

/// One layer: a tar archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    tar: Vec<u8>,
}

/// Builds a [`Layer`] entry by entry. Paths are relative (`etc/passwd`),
/// at most 100 bytes, and parents come before their children.
#[derive(Debug, Default)]
pub struct LayerBuilder {
    tar: Vec<u8>,
}

/// An image: its layers, bottom first, and how its container starts.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    /// The command the container runs.
    pub entrypoint: Vec<String>,
    /// `uid:gid` or a name from the image's `/etc/passwd`.
    pub user: Option<String>,
    /// `NAME=value` pairs.
    pub env: Vec<String>,
}

// === impl LayerBuilder ===

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory, owned by root.
    #[must_use]
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.entry(&format!("{}/", path.trim_end_matches('/')), mode, b'5', &[]);
        self
    }

    /// A regular file, owned by root.
    #[must_use]
    pub fn file(mut self, path: &str, mode: u32, contents: &[u8]) -> Self {
        self.entry(path, mode, b'0', contents);
        self
    }

    /// The finished archive.
    pub fn build(mut self) -> Layer {
        self.tar.extend_from_slice(&[0; 2 * BLOCK]);
        Layer { tar: self.tar }
    }

    fn entry(&mut self, path: &str, mode: u32, kind: u8, contents: &[u8]) {
        assert!(
            path.len() <= 100 && !path.starts_with('/'),
            "layer path {path:?}: relative and at most 100 bytes"
        );
        let mut header = [0u8; BLOCK];
        header[..path.len()].copy_from_slice(path.as_bytes());
        octal(&mut header[100..108], u64::from(mode));
        octal(&mut header[108..116], 0); // uid
        octal(&mut header[116..124], 0); // gid
        octal(&mut header[124..136], contents.len() as u64);
        octal(&mut header[136..148], 0); // mtime: fixed, for reproducible digests
        header[156] = kind;
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        // The checksum is computed with its own field as spaces.
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(field.as_bytes());
        self.tar.extend_from_slice(&header);
        self.tar.extend_from_slice(contents);
        let padding = (BLOCK - contents.len() % BLOCK) % BLOCK;
        self.tar.extend(std::iter::repeat_n(0, padding));
    }
}

/// Writes `value` as zero-padded octal filling `field` but its last byte
/// (a NUL).
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(&text.as_bytes()[text.len() - width..]);
    field[width] = 0;
}

// === impl Layer ===

impl Layer {
    /// The archive's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.tar
    }

    /// Its digest, which is also its diff ID (it is not compressed).
    pub fn digest(&self) -> String {
        sha256(&self.tar)
    }
}

// === impl Image ===

impl Image {
    /// The image config (OCI image spec), as JSON bytes.
    pub fn config(&self) -> Vec<u8> {
        let diff_ids: Vec<String> = self.layers.iter().map(Layer::digest).collect();
        let mut config = json!({
            "Entrypoint": self.entrypoint,
            "Env": self.env,
        });
        if let Some(user) = &self.user {
            config["User"] = json!(user);
        }
        json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string()
        .into_bytes()
    }

    /// The manifest for this image with `config` (from [`Image::config`]).
    pub fn manifest(&self, config: &[u8]) -> Vec<u8> {
        let layers: Vec<serde_json::Value> = self
            .layers
            .iter()
            .map(|l| json!({"mediaType": LAYER_MEDIA_TYPE, "digest": l.digest(), "size": l.tar.len()}))
            .collect();
        json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": sha256(config), "size": config.len()},
            "layers": layers,
        })
        .to_string()
        .into_bytes()
    }
}

/// The pause source, compiled by [`pause`].
const PAUSE_C: &str = include_str!("../images/pause.c");

/// The pod sandbox image: a static pause binary built from source with the
/// machine's C compiler (`$CC`, default `cc`) in `work`, and a non-root
/// user (65535, as upstream's pause image). No image comes from the
/// internet.
///
/// # Errors
///
/// When the compiler cannot be run or fails.
pub fn pause(work: &std::path::Path) -> Result<Image, crate::Error> {
    let source = work.join("pause.c");
    let binary = work.join("pause");
    std::fs::write(&source, PAUSE_C).map_err(|e| crate::Error::io(&source, e))?;
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let out = std::process::Command::new(&cc)
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .map_err(|source| crate::Error::Spawn {
            program: cc.clone().into(),
            source,
        })?;
    if !out.status.success() {
        return Err(crate::Error::Client(format!(
            "compiling the pause binary failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let pause = std::fs::read(&binary).map_err(|e| crate::Error::io(&binary, e))?;
    Ok(Image {
        layers: vec![
            LayerBuilder::new()
                .dir("etc", 0o755)
                .file(
                    "etc/passwd",
                    0o644,
                    b"nonroot:x:65535:65535::/:/sbin/nologin\n",
                )
                .file("etc/group", 0o644, b"nonroot:x:65535:\n")
                .file("pause", 0o755, &pause)
                .build(),
        ],
        entrypoint: vec!["/pause".to_owned()],
        user: Some("65535:65535".to_owned()),
        env: Vec::new(),
    })
}

/// Where Debian and distroless keep the CA bundle.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An image of one program built on this machine, in the Dockerfile's
/// layout: the binary (debug sections stripped when `objcopy` is there) at
/// `/usr/local/bin/<name>`, this machine's CA bundle at distroless's
/// `/etc/ssl/certs/ca-certificates.crt` (when it has one), and a non-root
/// user (65532, as distroless images); also the shared libraries `ldd`
/// lists for it, at their paths. The Dockerfile builds static release
/// binaries instead; tests use the binaries `cargo test` built.
///
/// # Errors
///
/// When the binary cannot be read, `ldd` cannot be run or fails, or a
/// library it names cannot be read.
pub fn program(
    binary: &std::path::Path,
    name: &str,
    work: &std::path::Path,
) -> Result<Image, crate::Error> {
    let stripped = work.join(name);
    let objcopy = std::process::Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&stripped)
        .status();
    let used = if objcopy.is_ok_and(|s| s.success()) {
        stripped.as_path()
    } else {
        binary
    };
    let contents = std::fs::read(used).map_err(|e| crate::Error::io(used, e))?;
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| crate::Error::Spawn {
            program: "ldd".into(),
            source,
        })?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let libraries = if out.status.success() {
        shared_libraries(&listing).map_err(|missing| {
            crate::Error::Client(format!(
                "{}: ldd finds no {missing} on this machine",
                binary.display()
            ))
        })?
    } else if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        || listing.contains("not a dynamic executable")
    {
        Vec::new()
    } else {
        return Err(crate::Error::Client(format!(
            "ldd {} failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    };
    let mut dirs = std::collections::BTreeSet::new();
    for lib in &libraries {
        let mut parent = std::path::Path::new(lib).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
    }
    let bundle = std::fs::read(CA_BUNDLE).ok();
    dirs.extend(["usr", "usr/local", "usr/local/bin"].map(str::to_owned));
    if bundle.is_some() {
        dirs.extend(["etc/ssl", "etc/ssl/certs"].map(str::to_owned));
    }
    let mut layer = LayerBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"nonroot:x:65532:65532::/:/sbin/nologin\n",
        )
        .file("etc/group", 0o644, b"nonroot:x:65532:\n");
    for dir in &dirs {
        layer = layer.dir(dir, 0o755);
    }
    for lib in &libraries {
        let path = std::path::Path::new("/").join(lib);
        let bytes = std::fs::read(&path).map_err(|e| crate::Error::io(&path, e))?;
        layer = layer.file(lib, 0o755, &bytes);
    }
    if let Some(bundle) = &bundle {
        layer = layer.file(&CA_BUNDLE[1..], 0o644, bundle);
    }
    let path = format!("usr/local/bin/{name}");
    Ok(Image {
        layers: vec![layer.file(&path, 0o755, &contents).build()],
        entrypoint: vec![format!("/{path}")],
        user: Some("65532:65532".to_owned()),
        env: Vec::new(),
    })
}

/// The project's images, as the registry holds them for a node:
/// `probity/probity:dev` and `probity/orders:dev`.
pub const PROJECT_IMAGES: [(&str, &str); 2] = [
    ("probity/probity", "probity"),
    ("probity/orders", "examples/orders"),
];

/// `file` (`probity`, `examples/orders`) in the cargo profile directory
/// the running test binary was built into; an error saying how to build
/// it when it is not there.
///
/// # Errors
///
/// When the binary is missing or the executable's path is unknown.
pub fn project_binary(file: &str) -> Result<std::path::PathBuf, crate::Error> {
    let exe = std::env::current_exe()
        .map_err(|e| crate::Error::io(std::path::Path::new("/proc/self/exe"), e))?;
    let mut profile = exe
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    if profile.ends_with("deps") {
        profile.pop();
    }
    let binary = profile.join(file);
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(crate::Error::Client(format!(
            "{} is missing: build it with `cargo build --workspace --all-features --bins --examples`",
            binary.display()
        )))
    }
}

/// Builds and pushes the [`PROJECT_IMAGES`] from the binaries cargo left in
/// the profile directory this executable runs from (`target/debug`, also
/// when it runs from `target/debug/deps`), tagged `dev`. Returns each image
/// as `<registry>/<repository>:dev@<digest>`.
///
/// # Errors
///
/// When a binary is missing (build with `cargo build --workspace --bins
/// --examples` first), or building or pushing fails.
pub fn push_project_images(
    registry: &crate::registry::Registry,
    work: &std::path::Path,
) -> Result<Vec<String>, crate::Error> {
    let mut programs = Vec::new();
    for (repository, file) in PROJECT_IMAGES {
        programs.push((repository, project_binary(file)?));
    }
    push_programs(registry, work, &programs)
}

/// Builds an image of each `(repository, binary)` ([`program`]) and pushes
/// it tagged `dev`; returns each as `<registry>/<repository>:dev@<digest>`.
///
/// # Errors
///
/// When building or pushing one fails.
pub fn push_programs(
    registry: &crate::registry::Registry,
    work: &std::path::Path,
    programs: &[(&str, std::path::PathBuf)],
) -> Result<Vec<String>, crate::Error> {
    let mut pushed = Vec::new();
    for (repository, binary) in programs {
        let name = binary.file_name().map_or_else(
            || (*repository).to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        let image = program(binary, &name, work)?;
        let digest = registry.push_image(repository, "dev", &image)?;
        pushed.push(format!("{}/{repository}:dev@{digest}", registry.host));
    }
    Ok(pushed)
}

/// The absolute paths in `ldd`'s listing, relative to `/`, in order, each
/// once; the kernel's `linux-vdso` has no file and is left out. A library
/// ldd cannot find is the error, by name.
fn shared_libraries(listing: &str) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for line in listing.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((library, target)) if target.trim() == "not found" => {
                return Err(library.trim().to_owned());
            }
            Some((_, target)) => target.trim(),
            None => line,
        };
        let Some(path) = path
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        else {
            continue;
        };
        let relative = path.trim_start_matches('/').to_owned();
        if !found.contains(&relative) {
            found.push(relative);
        }
    }
    Ok(found)
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn layers_are_tar_archives_that_tar_reads_back() {
        let layer = LayerBuilder::new()
            .dir("etc", 0o755)
            .file("etc/passwd", 0o644, b"app:x:65532:65532::/:/sbin/nologin\n")
            .file("app", 0o755, &[7u8; 1000])
            .build();
        assert_eq!(layer.bytes().len() % BLOCK, 0);
        let path = std::env::temp_dir().join(format!("probity-layer-{}.tar", std::process::id()));
        std::fs::write(&path, layer.bytes()).expect("write");
        let out = Command::new("tar")
            .arg("-tvf")
            .arg(&path)
            .output()
            .expect("tar");
        let _ = std::fs::remove_file(&path);
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 3, "{listing}");
        assert!(
            lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with("etc/"),
            "{listing}"
        );
        assert!(
            lines[1].starts_with("-rw-r--r--") && lines[1].ends_with("etc/passwd"),
            "{listing}"
        );
        assert!(
            lines[2].contains(" 1000 ") && lines[2].ends_with(" app"),
            "{listing}"
        );
    }

    #[test]
    fn a_program_image_has_the_dockerfiles_layout() {
        let work = std::env::temp_dir().join(format!("probity-program-{}", std::process::id()));
        std::fs::create_dir_all(&work).expect("work dir");
        let image = program(std::path::Path::new("/bin/true"), "true", &work);
        let _ = std::fs::remove_dir_all(&work);
        let image = image.expect("an image of /bin/true");
        assert_eq!(image.entrypoint, ["/usr/local/bin/true"]);
        assert_eq!(image.user.as_deref(), Some("65532:65532"));
        let path = std::env::temp_dir().join(format!("probity-program-{}.tar", std::process::id()));
        std::fs::write(&path, image.layers[0].bytes()).expect("write");
        let out = Command::new("tar")
            .arg("-tf")
            .arg(&path)
            .output()
            .expect("tar");
        let _ = std::fs::remove_file(&path);
        let listing = String::from_utf8_lossy(&out.stdout);
        let mut want = vec!["etc/passwd", "usr/local/bin/", "usr/local/bin/true"];
        if std::path::Path::new(CA_BUNDLE).exists() {
            want.push("etc/ssl/certs/ca-certificates.crt");
        }
        for entry in want {
            assert!(
                listing.lines().any(|l| l == entry),
                "{entry} in:\n{listing}"
            );
        }
    }

    #[test]
    fn ldd_listings_name_each_library_file_once() {
        let listing = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f78)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f78)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f78)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f78)\n";
        assert_eq!(
            shared_libraries(listing).expect("every library found"),
            [
                "lib/x86_64-linux-gnu/libgcc_s.so.1",
                "lib/x86_64-linux-gnu/libc.so.6",
                "lib64/ld-linux-x86-64.so.2",
            ]
        );
        let missing = "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f78)\n\
            \tlibfoo.so.1 => not found\n";
        assert_eq!(shared_libraries(missing), Err("libfoo.so.1".to_owned()));
    }

    #[test]
    fn the_same_files_make_the_same_digest() {
        let build = || LayerBuilder::new().file("a", 0o644, b"x").build();
        assert_eq!(build().digest(), build().digest());
        let other = LayerBuilder::new().file("a", 0o600, b"x").build();
        assert_ne!(build().digest(), other.digest());
    }

    #[test]
    fn config_and_manifest_name_the_layers() {
        let image = Image {
            layers: vec![LayerBuilder::new().file("pause", 0o755, b"\x7fELF").build()],
            entrypoint: vec!["/pause".to_owned()],
            user: Some("65532:65532".to_owned()),
            env: vec![],
        };
        let config = image.config();
        let parsed: serde_json::Value = serde_json::from_slice(&config).expect("config");
        assert_eq!(parsed["rootfs"]["diff_ids"][0], image.layers[0].digest());
        assert_eq!(parsed["config"]["User"], "65532:65532");
        let manifest: serde_json::Value =
            serde_json::from_slice(&image.manifest(&config)).expect("manifest");
        assert_eq!(manifest["config"]["digest"], sha256(&config));
        assert_eq!(manifest["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(manifest["layers"][0]["size"], image.layers[0].bytes().len());
    }
}
