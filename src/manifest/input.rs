//! What `probity lint` and `probity pin` read: files, directories (recursive, following
//! symbolic links without looping), or stdin. Only regular files are read,
//! each of at most [`MAX_INPUT_BYTES`].

use std::collections::HashSet;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// One source of manifests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Input {
    /// The name findings are reported under (`-` becomes `<stdin>`).
    pub name: String,
    /// The text.
    pub text: String,
    /// The file it was read from, exactly as given (the name is lossy for
    /// paths that are not UTF-8); `None` for stdin.
    pub path: Option<PathBuf>,
}

/// The largest source read: a named file, a file found in a directory, or
/// stdin.
pub const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

/// A source that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct Unreadable {
    /// The path.
    pub name: String,
    /// Why.
    pub message: String,
}

/// Extensions read when walking a directory.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Expands `paths` into sources: files as given, directories walked
/// recursively for `*.yaml`, `*.yml`, `*.json` in sorted order, `-` for
/// stdin. Returns the readable sources and the errors for the rest.
pub fn collect(paths: &[PathBuf]) -> (Vec<Input>, Vec<Unreadable>) {
    let mut inputs = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            match std::io::stdin()
                .lock()
                .take(MAX_INPUT_BYTES + 1)
                .read_to_end(&mut bytes)
            {
                Ok(n) if n as u64 > MAX_INPUT_BYTES => errors.push(Unreadable {
                    name: "<stdin>".to_owned(),
                    message: format!("larger than {} MiB", MAX_INPUT_BYTES >> 20),
                }),
                Ok(_) => push(&mut inputs, &mut errors, None, "<stdin>".to_owned(), bytes),
                Err(e) => errors.push(Unreadable {
                    name: "<stdin>".to_owned(),
                    message: e.to_string(),
                }),
            }
            continue;
        }
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                let mut files = Vec::new();
                let mut seen = HashSet::new();
                walk(path, &mut files, &mut errors, &mut seen);
                files.sort();
                if files.is_empty() {
                    errors.push(Unreadable {
                        name: display(path),
                        message: "directory holds no *.yaml, *.yml or *.json files".to_owned(),
                    });
                }
                for file in files {
                    read_file(&file, &mut inputs, &mut errors);
                }
            }
            Ok(_) => read_file(path, &mut inputs, &mut errors),
            Err(e) => errors.push(Unreadable {
                name: display(path),
                message: e.to_string(),
            }),
        }
    }
    (inputs, errors)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Collects manifest files under `dir`. Symbolic links are followed;
/// `seen` holds the (device, inode) of every directory entered, so a link
/// back up the tree is not walked twice.
fn walk(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    errors: &mut Vec<Unreadable>,
    seen: &mut HashSet<(u64, u64)>,
) {
    match std::fs::metadata(dir) {
        Ok(meta) if !seen.insert((meta.dev(), meta.ino())) => return,
        Ok(_) => {}
        Err(e) => {
            errors.push(Unreadable {
                name: display(dir),
                message: e.to_string(),
            });
            return;
        }
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(Unreadable {
                name: display(dir),
                message: e.to_string(),
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Follows a symbolic link to what it points at; a dangling one is
        // skipped.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if meta.is_dir() && !hidden {
            walk(&path, files, errors, seen);
        } else if meta.is_file()
            && path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            files.push(path);
        }
    }
}

fn read_file(path: &Path, inputs: &mut Vec<Input>, errors: &mut Vec<Unreadable>) {
    match read_bounded(path) {
        Ok(bytes) => push(
            inputs,
            errors,
            Some(path.to_path_buf()),
            display(path),
            bytes,
        ),
        Err(message) => errors.push(Unreadable {
            name: display(path),
            message,
        }),
    }
}

/// A regular file's bytes, at most [`MAX_INPUT_BYTES`]: a FIFO, a device
/// or `/dev/zero` would never end.
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    let too_big = || format!("larger than {} MiB", MAX_INPUT_BYTES >> 20);
    if meta.len() > MAX_INPUT_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(too_big());
    }
    Ok(bytes)
}

fn push(
    inputs: &mut Vec<Input>,
    errors: &mut Vec<Unreadable>,
    path: Option<PathBuf>,
    name: String,
    bytes: Vec<u8>,
) {
    if bytes.contains(&0) {
        errors.push(Unreadable {
            name,
            message: "binary data (NUL bytes), not a YAML or JSON manifest".to_owned(),
        });
        return;
    }
    match String::from_utf8(bytes) {
        Ok(text) => inputs.push(Input { name, text, path }),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            errors.push(Unreadable {
                name,
                message: format!("not UTF-8 text (invalid byte at offset {at})"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_follow_links_once_and_skip_what_is_not_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir(root.join("apps")).expect("mkdir");
        std::fs::write(root.join("apps/web.yaml"), "kind: Service\n").expect("write");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::fs::write(elsewhere.path().join("db.yaml"), "kind: Service\n").expect("write");
        std::os::unix::fs::symlink(elsewhere.path(), root.join("linked")).expect("symlink");
        std::os::unix::fs::symlink(root, root.join("apps/loop")).expect("loop");
        std::os::unix::fs::symlink(root.join("apps/web.yaml"), root.join("alias.yaml"))
            .expect("file link");
        std::os::unix::fs::symlink(root.join("missing"), root.join("dangling.yaml"))
            .expect("dangling");
        let (inputs, errors) = collect(&[root.to_path_buf()]);
        assert!(errors.is_empty(), "{errors:?}");
        let mut names: Vec<String> = inputs
            .iter()
            .map(|i| {
                i.name
                    .trim_start_matches(&*root.display().to_string())
                    .to_owned()
            })
            .collect();
        names.sort();
        assert_eq!(names, ["/alias.yaml", "/apps/web.yaml", "/linked/db.yaml"]);
        assert!(inputs.iter().all(|i| i.path.is_some()));
    }

    #[test]
    fn a_named_file_must_be_regular() {
        let (inputs, errors) = collect(&[PathBuf::from("/dev/zero")]);
        assert!(inputs.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].message.contains("not a regular file"),
            "{errors:?}"
        );
    }
}
