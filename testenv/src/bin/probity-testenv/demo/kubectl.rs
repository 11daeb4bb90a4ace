//! How the tour runs commands: kubectl and probity shown as a user would
//! type them, files in the working directory, bounded waits on what kubectl
//! reads, and the processes it starts.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use probity_testenv::Process;

use super::{Tour, WAIT, wait};

impl Tour {
    /// Writes `text` to `name` in the working directory.
    pub(super) fn file(&self, name: &str, text: &str) -> anyhow::Result<()> {
        let path = self.work.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// kubectl in the working directory, quietly.
    pub(super) fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.env
            .kubectl()
            .args(args)
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .output()
            .context("running kubectl")
    }

    /// kubectl, showing the command and its answer.
    pub(super) fn show(&self, args: &[&str]) -> anyhow::Result<Output> {
        println!("  $ kubectl {}", shell_words(args));
        let out = self.kubectl(args)?;
        print_indented(&out.stdout);
        print_indented(&out.stderr);
        Ok(out)
    }

    /// kubectl that must succeed; shown.
    pub(super) fn must(&self, args: &[&str]) -> anyhow::Result<Output> {
        let out = self.show(args)?;
        if !out.status.success() {
            bail!("kubectl {} failed", shell_words(args));
        }
        Ok(out)
    }

    /// kubectl that must succeed; not shown.
    pub(super) fn quietly(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                shell_words(args),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `probity`, showing the command and its answer.
    pub(super) fn probity(&self, args: &[&str]) -> anyhow::Result<Output> {
        println!("  $ probity {}", shell_words(args));
        let out = Command::new(&self.probity)
            .args(args)
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .output()
            .context("running probity")?;
        print_indented(&out.stdout);
        print_indented(&out.stderr);
        Ok(out)
    }

    /// Waits (bounded) until `kubectl <args>` succeeds and prints something.
    pub(super) fn wait_for_output(&self, what: &str, args: &[&str]) -> anyhow::Result<()> {
        wait(WAIT, what, || {
            self.quietly(args)
                .ok()
                .filter(|out| !out.trim().is_empty())
                .map(drop)
        })
    }

    /// Waits until `jsonpath` of `object` reads `want` (bounded).
    pub(super) fn wait_for(
        &self,
        object: &[&str],
        jsonpath: &str,
        want: &str,
    ) -> anyhow::Result<()> {
        let mut args = vec!["get"];
        args.extend_from_slice(object);
        let expr = format!("jsonpath={jsonpath}");
        args.extend(["-o", &expr]);
        let mut last = String::new();
        wait(
            WAIT,
            &format!("{} {jsonpath} = {want}", object.join(" ")),
            || {
                last = self.quietly(&args).unwrap_or_else(|e| e.to_string());
                (last.trim() == want).then_some(())
            },
        )
        .with_context(|| format!("last value: {last:?}"))
    }

    /// Starts `command` in the working directory with its output in
    /// `<name>.log` there, handed to the control plane's reaper; stopped
    /// (SIGTERM, 10 s, SIGKILL) when dropped.
    pub(super) fn spawn(&self, name: &str, mut command: Command) -> anyhow::Result<Process> {
        let log = self.work.join(format!("{name}.log"));
        let process = Process::spawn(name, command.current_dir(&self.work), Some(&log))
            .with_context(|| format!("starting {name}"))?
            .stop_on_drop(Duration::from_secs(10));
        self.env.adopt(process.pid()).context("recording the pid")?;
        self.procs.borrow_mut().push(log);
        Ok(process)
    }
}

pub(super) fn print_indented(bytes: &[u8]) {
    for line in String::from_utf8_lossy(bytes).lines() {
        println!("    {line}");
    }
}

/// `kubectl get <kind> -n <namespace> <selector flag> <selector> -o <output>`
/// as arguments (`-l` or `--field-selector`).
pub(super) fn listing<'a>(
    kind: &'a str,
    namespace: &'a str,
    flag: &'a str,
    selector: &'a str,
    output: &'a str,
) -> [&'a str; 8] {
    ["get", kind, "-n", namespace, flag, selector, "-o", output]
}

/// Arguments as a shell would need them typed.
pub(super) fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
            {
                (*a).to_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
