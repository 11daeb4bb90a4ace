//! Docker credential helpers (`credsStore`, `credHelpers`): the program
//! `docker-credential-<name>` on `$PATH`, asked as Docker asks it (`get`,
//! the server URL on stdin, `{"Username", "Secret"}` on stdout). A
//! Username of `<token>` makes Secret an identity token (a refresh token
//! for the registry's token service).
//!
//! Its answer is bounded (64 KiB, 10 s) and its error output is reported
//! only in part; the name must be a plain program name.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::auth::Credential;

/// Longest helper answer read.
const MAX_OUTPUT: u64 = 64 * 1024;

/// How long a helper may take (a keychain may prompt; Docker waits too).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a helper gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credential helper docker-credential-{helper}: {reason}")]
pub struct HelperFailed {
    /// The helper's name (`desktop`, `ecr-login`).
    pub helper: String,
    /// What went wrong.
    pub reason: String,
}

/// Whether `name` may name a helper: letters, digits, `.`, `_`, `-`, no
/// path, at most 64 characters.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// What Docker sends a helper for `registry` (`docker.io` is known to
/// helpers by its v1 index URL).
pub(crate) fn server_url(registry: &str) -> &str {
    if registry == "docker.io" {
        "https://index.docker.io/v1/"
    } else {
        registry
    }
}

/// Asks `docker-credential-<helper>` for `registry`'s credential; `None`
/// when it has none.
///
/// # Errors
///
/// When the helper cannot be run, takes too long, or answers something
/// else than credentials or "not found".
pub(crate) async fn get(helper: &str, registry: &str) -> Result<Option<Credential>, HelperFailed> {
    let failed = |reason: String| HelperFailed {
        helper: helper.to_owned(),
        reason,
    };
    if !valid_name(helper) {
        return Err(failed("not a plain program name".to_owned()));
    }
    run(&format!("docker-credential-{helper}"), registry)
        .await
        .map_err(failed)
}

/// Runs `program get` for `registry`.
async fn run(program: &str, registry: &str) -> Result<Option<Credential>, String> {
    let failed = |reason: String| reason;
    let mut child = tokio::process::Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot run it: {e}")))?;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(server_url(registry).as_bytes())
                .await
                .map_err(|e| failed(format!("writing its input: {e}")))?;
        }
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(out) = child.stdout.take() {
            out.take(MAX_OUTPUT)
                .read_to_end(&mut stdout)
                .await
                .map_err(|e| failed(format!("reading its answer: {e}")))?;
        }
        if let Some(err) = child.stderr.take() {
            let _ = err.take(MAX_OUTPUT).read_to_end(&mut stderr).await;
        }
        let status = child
            .wait()
            .await
            .map_err(|e| failed(format!("waiting for it: {e}")))?;
        Ok::<_, String>((status, stdout, stderr))
    };
    let (status, stdout, stderr) = tokio::time::timeout(TIMEOUT, run)
        .await
        .map_err(|_| failed(format!("no answer within {TIMEOUT:?}")))??;
    if !status.success() {
        // Helpers say "credentials not found in native keychain" on stdout.
        let said = String::from_utf8_lossy(if stdout.is_empty() { &stderr } else { &stdout })
            .trim()
            .to_owned();
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let said: String = said.chars().take(200).collect();
        return Err(failed(format!("{status}: {said}")));
    }
    parse(&stdout).map(Some)
}

/// A helper's `get` answer.
fn parse(stdout: &[u8]) -> Result<Credential, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        #[serde(default)]
        username: String,
        #[serde(default)]
        secret: String,
    }
    let answer: Answer = serde_json::from_slice(stdout)
        .map_err(|e| format!("its answer is not credentials JSON ({e})"))?;
    if answer.secret.is_empty() {
        return Err("its answer has an empty Secret".to_owned());
    }
    Ok(Credential {
        username: answer.username,
        password: answer.secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_programs() {
        for good in [
            "desktop",
            "ecr-login",
            "gcloud",
            "osxkeychain",
            "pass",
            "a.b_c",
        ] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "-v",
            ".hidden",
            "x y",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(server_url("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(server_url("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn answers_are_read_as_docker_writes_them() {
        let c = parse(br#"{"ServerURL": "ghcr.io", "Username": "u", "Secret": "p"}"#).expect("ok");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        let token = parse(br#"{"Username": "<token>", "Secret": "refresh"}"#).expect("ok");
        assert_eq!(token.identity_token(), Some("refresh"));
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"Username": "u", "Secret": ""}"#).is_err());
    }

    #[tokio::test]
    async fn a_helper_is_asked_as_docker_asks_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("docker-credential-test");
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\n\
             case \"$server\" in\n\
               ghcr.io) printf '{\"Username\":\"<token>\",\"Secret\":\"r\"}' ;;\n\
               slow.example) sleep 30 ;;\n\
               *) echo 'credentials not found in native keychain'; exit 1 ;;\n\
             esac\n",
        )
        .expect("script");
        let mut mode = std::fs::metadata(&script).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
        std::fs::set_permissions(&script, mode).expect("chmod");
        let program = script.to_str().expect("utf-8");
        let found = run(program, "ghcr.io")
            .await
            .expect("answer")
            .expect("found");
        assert_eq!(found.identity_token(), Some("r"));
        assert_eq!(run(program, "quay.io").await, Ok(None));
        let started = tokio::time::Instant::now();
        let err = run(program, "slow.example").await.expect_err("too slow");
        assert!(err.contains("no answer within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(15));
    }

    #[tokio::test]
    async fn a_missing_helper_is_a_clear_error() {
        let err = get("probity-no-such-helper", "ghcr.io")
            .await
            .expect_err("not on PATH");
        assert!(
            err.to_string().starts_with(
                "credential helper docker-credential-probity-no-such-helper: cannot run it"
            ),
            "{err}"
        );
        let err = get("../evil", "ghcr.io").await.expect_err("a path");
        assert!(err.reason.contains("plain program name"), "{err}");
    }
}
