//! What `probity lint` reads: files, directories (recursive), or stdin.

use std::io::Read as _;
use std::path::{Path, PathBuf};

/// One source of manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The name findings are reported under (`-` becomes `<stdin>`).
    pub name: String,
    /// The text.
    pub text: String,
}

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
            match std::io::stdin().lock().read_to_end(&mut bytes) {
                Ok(_) => push(&mut inputs, &mut errors, "<stdin>".to_owned(), bytes),
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
                walk(path, &mut files, &mut errors);
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

fn walk(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<Unreadable>) {
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
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if file_type.is_dir() && !hidden {
            walk(&path, files, errors);
        } else if file_type.is_file()
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
    match std::fs::read(path) {
        Ok(bytes) => push(inputs, errors, display(path), bytes),
        Err(e) => errors.push(Unreadable {
            name: display(path),
            message: e.to_string(),
        }),
    }
}

fn push(inputs: &mut Vec<Input>, errors: &mut Vec<Unreadable>, name: String, bytes: Vec<u8>) {
    if bytes.contains(&0) {
        errors.push(Unreadable {
            name,
            message: "binary data (NUL bytes), not a YAML or JSON manifest".to_owned(),
        });
        return;
    }
    match String::from_utf8(bytes) {
        Ok(text) => inputs.push(Input { name, text }),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            errors.push(Unreadable {
                name,
                message: format!("not UTF-8 text (invalid byte at offset {at})"),
            });
        }
    }
}
