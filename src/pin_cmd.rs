//! `probity pin`: resolve every unpinned image in the given manifests and
//! write the digests into the files.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt as _;
use probity::lint::input::{self, Input};
use probity::pin::{self, Site};
use probity::policy::{Digest, Reference};
use probity::registry::{self, DockerConfig, RegistryClient};

use crate::cli::PinArgs;

/// Registry calls in flight at once.
const CONCURRENCY: usize = 8;

pub(crate) fn run(args: &PinArgs) -> u8 {
    let mut err = std::io::stderr().lock();
    let credentials = match credentials(args) {
        Ok(c) => c,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            return 2;
        }
    };
    let client = match RegistryClient::new(registry::Options {
        cache_ttl: Duration::from_secs(600),
        insecure: args.insecure_registry.clone(),
        credentials,
    }) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return 2;
        }
    };
    let (inputs, unreadable) = input::collect(&args.paths);
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
    let mut out = std::io::stdout().lock();
    for (input, sites) in files {
        let mut edits = Vec::new();
        for site in sites {
            match resolved.get(&site.image) {
                Some(Ok(digest)) => {
                    let pinned = format!("{}@{digest}", site.image);
                    edits.push((site, pinned));
                }
                Some(Err(reason)) => {
                    let _ = writeln!(
                        err,
                        "{}:{}:{}: cannot pin {}: {reason}",
                        input.name, site.pos.line, site.pos.col, site.image
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
            let _ = out.write_all(pin::diff(&input.name, &input.text, &after).as_bytes());
            unpinned |= after != input.text;
            continue;
        }
        if stdin {
            let _ = out.write_all(after.as_bytes());
        } else if after != input.text
            && let Err(e) = write_atomically(Path::new(&input.name), &after)
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
    if input_error { 2 } else { u8::from(unpinned) }
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
) -> BTreeMap<String, Result<Digest, String>> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return references
                .into_keys()
                .map(|image| (image, Err(format!("cannot start the async runtime: {e}"))))
                .collect();
        }
    };
    runtime.block_on(async {
        futures::stream::iter(references)
            .map(|(image, reference)| async move {
                let result = probity_probe::deadline::scope(timeout, client.digest(&reference))
                    .await
                    .map_err(|e| e.reason);
                (image, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await
    })
}

/// Writes through a temporary file in the same directory and renames it
/// over `path`, so a crash never leaves a half-written manifest.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.probity-pin.{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
