//! `probity pin` against a real OCI registry (Debian's docker-registry on
//! loopback): digests written in place with formatting and comments kept,
//! `--dry-run` diffs without writing, failures leave the file untouched.

use std::process::{Command, Output};

use probity_testenv::registry::Registry;

fn pin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_probity"))
        .arg("pin")
        .args(args)
        .env("HOME", std::env::temp_dir())
        .env_remove("DOCKER_CONFIG")
        .output()
        .expect("run probity pin")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn manifest(host: &str) -> String {
    format!(
        "# payments API\n\
         apiVersion: apps/v1\n\
         kind: Deployment\n\
         metadata:\n  name: api   # owned by payments\n\
         spec:\n  template:\n    spec:\n      containers:\n\
         \x20       - name: api\n          image: \"{host}/team/api:1.0\"  # pinned by CI\n\
         \x20       - name: proxy\n          image: {host}/team/proxy:2\n"
    )
}

#[test]
fn pins_in_place_dry_runs_and_reports_failures() -> anyhow::Result<()> {
    let Some(mut registry) = Registry::start_or_skip() else {
        return Ok(());
    };
    let api = registry.push("team/api", "1.0", "api")?;
    let proxy = registry.push("team/proxy", "2", "proxy")?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("deploy.yaml");
    let original = manifest(&registry.host);
    std::fs::write(&file, &original)?;
    let path = file.to_str().unwrap_or_default();

    // Dry run: a diff, exit 1 (images would change), file untouched.
    let out = pin(&["--dry-run", path]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let diff = String::from_utf8(out.stdout)?;
    assert!(
        diff.contains(&format!(
            "+          image: \"{}/team/api:1.0@{api}\"  # pinned by CI",
            registry.host
        )),
        "{diff}"
    );
    assert_eq!(std::fs::read_to_string(&file)?, original);

    // For real: only the image strings change.
    let out = pin(&[path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected = original
        .replace("team/api:1.0\"", &format!("team/api:1.0@{api}\""))
        .replace("team/proxy:2\n", &format!("team/proxy:2@{proxy}\n"));
    assert_eq!(std::fs::read_to_string(&file)?, expected);
    assert!(stderr(&out).contains(":11:18: pinned"), "{}", stderr(&out));

    // Already pinned: nothing to do.
    let out = pin(&["--dry-run", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    // An unknown tag and a registry that is down: exit 1, file untouched.
    let other = dir.path().join("other.yaml");
    let text = manifest(&registry.host).replace("team/proxy:2", "team/proxy:9");
    std::fs::write(&other, &text)?;
    let out = pin(&[other.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has no manifest team/proxy:9"),
        "{}",
        stderr(&out)
    );
    let partially = std::fs::read_to_string(&other)?;
    assert!(
        partially.contains(&format!("team/api:1.0@{api}")),
        "the resolvable image is still pinned"
    );
    registry.kill();
    std::fs::write(&other, &text)?;
    let out = pin(&["--timeout", "2", other.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot pin"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&other)?, text);

    // Input errors: exit 2 with the location.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: [unclosed\n")?;
    let out = pin(&[bad.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad.yaml:"), "{}", stderr(&out));
    Ok(())
}
