//! `probity pin`: resolve every unpinned image in the given manifests and
//! write the digests into the files.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt as _;
use probity::image::{Digest, Reference};
use probity::manifest::{self, Input};
use probity::pin::{self, Site};
use probity::registry::{self, DockerConfig, RegistryClient, ResolveError};

use super::cli::PinArgs;
use super::{Exit, Output};

/// Registry calls in flight at once.
const CONCURRENCY: usize = 8;

pub(super) fn run(args: &PinArgs) -> Exit {
    let mut err = std::io::stderr().lock();
    let credentials = match credentials(args) {
        Ok(c) => c,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            return Exit::Error;
        }
    };
    let client = match RegistryClient::new(registry::Options {
        cache_ttl: Duration::from_secs(600),
        insecure: args.insecure_registry.clone(),
        credentials,
        // A workstation's Docker config names its keychain helpers.
        credential_helpers: true,
        ..registry::Options::default()
    }) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Error;
        }
    };
    let (inputs, unreadable) = manifest::collect(&args.paths);
    let mut input_error = false;
    for u in &unreadable {
        let _ = writeln!(err, "error: {u}");
        input_error = true;
    }
    let mut files: Vec<(&Input, Vec<Site>)> = Vec::new();
    for input in &inputs {
        match pin::sites(&input.text) {
            Ok(sites) => files.push((input, sites)),
            Err(e) => {
                let _ = writeln!(err, "error: {}:{e}", input.name);
                input_error = true;
            }
        }
    }

    let unique: BTreeMap<String, Reference> = files
        .iter()
        .flat_map(|(_, sites)| sites.iter())
        .map(|s| (s.image.clone(), s.reference.clone()))
        .collect();
    let resolved = resolve(&client, unique, Duration::from_secs(args.timeout));

    let mut unpinned = false;
    let mut out = Output::stdout();
    for (input, sites) in files {
        let mut edits = Vec::new();
        for site in sites {
            match resolved.get(&site.image) {
                Some(Ok(digest)) => {
                    let pinned = format!("{}@{digest}", site.image);
                    edits.push((site, pinned));
                }
                Some(Err(e)) => {
                    let _ = writeln!(
                        err,
                        "{}:{}:{}: cannot pin {}: {}",
                        input.name, site.pos.line, site.pos.col, site.image, e.reason
                    );
                    unpinned = true;
                }
                None => unpinned = true,
            }
        }
        let (after, failed) = pin::rewrite(&input.text, &edits);
        for f in &failed {
            let _ = writeln!(err, "{}:{f}", input.name);
            unpinned = true;
        }
        let stdin = input.name == "<stdin>";
        if args.dry_run {
            out.print(&pin::diff(&input.name, &input.text, &after));
            unpinned |= after != input.text;
            continue;
        }
        if stdin {
            out.print(&after);
        } else if after != input.text
            && let Err(e) = write_atomically(
                input.path.as_deref().unwrap_or(Path::new(&input.name)),
                &after,
            )
        {
            let _ = writeln!(err, "error: {}: {e}", input.name);
            input_error = true;
            continue;
        }
        for (site, pinned) in &edits {
            if !failed.iter().any(|f| f.pos == site.pos) {
                let _ = writeln!(
                    err,
                    "{}:{}:{}: pinned {pinned}",
                    input.name, site.pos.line, site.pos.col
                );
            }
        }
    }
    out.finish(if input_error {
        Exit::Error
    } else if unpinned {
        Exit::Findings
    } else {
        Exit::Success
    })
}

fn credentials(args: &PinArgs) -> Result<DockerConfig, String> {
    if let Some(path) = &args.registry_config {
        return DockerConfig::read(path).map_err(|e| e.to_string());
    }
    let default = std::env::var_os("DOCKER_CONFIG")
        .map(|d| PathBuf::from(d).join("config.json"))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")));
    match default {
        Some(path) if path.is_file() => DockerConfig::read(&path).map_err(|e| e.to_string()),
        _ => Ok(DockerConfig::default()),
    }
}

fn resolve(
    client: &RegistryClient,
    references: BTreeMap<String, Reference>,
    timeout: Duration,
) -> BTreeMap<String, Result<Digest, ResolveError>> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return references
                .into_keys()
                .map(|image| {
                    let reason = format!("cannot start the async runtime: {e}");
                    (image.clone(), Err(ResolveError { image, reason }))
                })
                .collect();
        }
    };
    runtime.block_on(async {
        futures::stream::iter(references)
            .map(|(image, reference)| async move {
                let result =
                    probity_probe::deadline::scope(timeout, client.digest(&reference)).await;
                (image, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await
    })
}

/// Writes `text` over `path` so that a crash never leaves a half-written
/// manifest and no one else can slip a file in: a symbolic link is
/// followed and its target rewritten (the link stays a link); the new
/// content goes to a fresh temporary file in the target's directory,
/// created exclusively (`O_EXCL`) with the target's permissions from the
/// start, synced, then renamed over the target.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let target = std::fs::canonicalize(path)?;
    let dir = target.parent().unwrap_or(Path::new("/"));
    let mode = std::fs::metadata(&target)?.permissions().mode() & 0o7777;
    let mut name = std::ffi::OsString::from(".");
    name.push(target.file_name().unwrap_or_default());
    let mut created = None;
    for _ in 0..16 {
        let mut candidate = name.clone();
        candidate.push(format!(".probity-pin.{:016x}", fastrand::u64(..)));
        let tmp = dir.join(candidate);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => {
                created = Some((tmp, file));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let Some((tmp, mut file)) = created else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "no free temporary file name in the target's directory",
        ));
    };
    // The umask may have narrowed the mode given to open.
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &target));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename itself is durable once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn writes_replace_the_target_of_a_link_and_keep_its_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real.yaml");
        std::fs::write(&real, "old").expect("write");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        write_atomically(&link, "new").expect("written");
        assert_eq!(std::fs::read_to_string(&real).expect("read"), "new");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("meta")
                .file_type()
                .is_symlink(),
            "the link stays a link"
        );
        let mode = std::fs::metadata(&real).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().as_bytes().starts_with(b"."))
            .collect();
        assert!(leftovers.is_empty(), "no temporary file is left behind");
    }

    #[test]
    fn non_utf8_paths_are_written_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.yaml");
        let path = dir.path().join(name);
        std::fs::write(&path, "old").expect("write");
        write_atomically(&path, "new").expect("written");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }
}
