//! Every committed fuzz input replayed through the fuzz targets' own code
//! (`fuzz/src/lib.rs`): the corpora in `fuzz/corpus/<target>/`, the crash
//! reproducers in `fuzz/regressions/<target>/`, and the seeds `hack/fuzz.sh`
//! starts from (the admission and lint fixtures). A panic names the input.
//! Timed fuzzing with libFuzzer is `make fuzz`.

use std::path::{Path, PathBuf};

#[allow(unreachable_pub, dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod targets;

/// Every file under `dirs` (recursively), sorted, so a failure is
/// reproducible by name.
fn inputs(dirs: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n != "README.md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    for dir in dirs {
        walk(Path::new(dir), &mut out);
    }
    out.sort();
    out
}

/// Runs `target` on each input, reporting every input that panics.
fn replay(name: &str, seeds: &[&str], target: fn(&[u8])) {
    let corpus = format!("fuzz/corpus/{name}");
    let regressions = format!("fuzz/regressions/{name}");
    let mut dirs = vec![corpus.as_str(), regressions.as_str()];
    dirs.extend_from_slice(seeds);
    let files = inputs(&dirs);
    assert!(
        files.len() >= 5,
        "{name}: only {} inputs found in {dirs:?}; the corpus is missing",
        files.len()
    );
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if std::panic::catch_unwind(|| target(&data)).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{name}: {} of {} inputs panicked (reproduce with `cargo fuzz run {name} FILE` in fuzz/):\n  {}",
        failed.len(),
        files.len(),
        failed.join("\n  ")
    );
}

#[test]
fn admission_corpus_replays_without_panics() {
    replay(
        "admission",
        &["tests/fixtures/admission"],
        targets::admission,
    );
}

#[test]
fn manifest_corpus_replays_without_panics() {
    replay("manifest", &["tests/fixtures/lint"], targets::manifest);
}

#[test]
fn reference_corpus_replays_without_panics() {
    replay("reference", &[], targets::reference);
}

#[test]
fn object_corpus_replays_without_panics() {
    replay("object", &[], targets::object);
}
