//! The tour's steps, in the order it runs them.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use probity_testenv::orders::Database;
use probity_testenv::{Process, free_addr};

use super::fixtures::{
    BASELINE, DIGEST, DIGEST_OTHER, LEGACY_APPS, REPORT, WEB_LATEST, orders_pods, pod_status,
};
use super::http::{http_get, show_probe, slow_database, wait_until_ok};
use super::kubectl::{listing, shell_words};
use super::{SYSTEM_NS, Tour, WAIT, note, step, stop, wait};

impl Tour {
    /// CRDs, webhook configurations pointing at a local operator, and the
    /// operator with self-managed certificates.
    pub(super) fn install(&self) -> anyhow::Result<Process> {
        step(
            2,
            "Installing probity: CRDs, webhook configurations, the operator",
        );
        std::fs::copy(&self.crds, self.work.join("crds.yaml")).context("copying the CRDs")?;
        self.must(&["apply", "--server-side", "-f", "crds.yaml"])?;
        self.quietly(&[
            "wait",
            "--for",
            "condition=Established",
            "crd",
            "--all",
            "--timeout",
            "60s",
        ])?;
        self.must(&["create", "namespace", SYSTEM_NS])?;

        let webhook = free_addr()?;
        let admin = free_addr()?;
        let url = format!("https://{webhook}");
        let args = ["webhook-config", "--namespace", SYSTEM_NS, "--url", &url];
        println!("  $ probity {} > webhooks.yaml", shell_words(&args));
        let out = Command::new(&self.probity)
            .args(args)
            .output()
            .context("running probity webhook-config")?;
        if !out.status.success() {
            bail!(
                "probity webhook-config failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::write(self.work.join("webhooks.yaml"), &out.stdout)
            .context("writing webhooks.yaml")?;
        self.must(&["apply", "-f", "webhooks.yaml"])?;

        let (webhook_s, admin_s) = (webhook.to_string(), admin.to_string());
        let args = [
            "operator",
            "--lease-namespace",
            SYSTEM_NS,
            "--admin-addr",
            &admin_s,
            "--webhook-addr",
            &webhook_s,
            "--tls-ip-address",
            "127.0.0.1",
        ];
        println!("  $ probity {} &", shell_words(&args));
        let mut command = Command::new(&self.probity);
        command
            .args(args)
            .env("KUBECONFIG", self.env.kubeconfig())
            .env("POD_NAMESPACE", SYSTEM_NS)
            .env_remove("POD_NAME")
            .env_remove("PROBITY_LOG");
        let t = Instant::now();
        let mut operator = self.spawn("operator", command)?;
        wait_until_ok(&mut operator, admin, "/readyz")?;
        for kind in [
            "validatingwebhookconfiguration",
            "mutatingwebhookconfiguration",
        ] {
            self.wait_for_output(
                &format!("the CA bundle in the {kind}"),
                &[
                    "get",
                    kind,
                    "probity",
                    "-o",
                    "jsonpath={.webhooks[0].clientConfig.caBundle}",
                ],
            )?;
        }
        note(&format!(
            "operator ready in {:.1} s: /readyz 200 on {admin}, webhooks on {url}, its CA written into both webhook configurations",
            t.elapsed().as_secs_f64()
        ));
        Ok(operator)
    }

    /// The policy's denial and admission; `orders` is the Deployment it
    /// admits.
    pub(super) fn enforce(&self, orders: &str) -> anyhow::Result<()> {
        step(
            3,
            "Enforce: a ClusterReadinessPolicy for namespaces labelled probity.dev/policy=enforce",
        );
        self.file("baseline.yaml", BASELINE)?;
        self.file("web-latest.yaml", WEB_LATEST)?;
        self.file("orders.yaml", orders)?;
        self.must(&["apply", "-f", "baseline.yaml"])?;
        self.must(&[
            "wait",
            "--for",
            "condition=Ready",
            "clusterreadinesspolicy/baseline",
            "--timeout",
            "60s",
        ])?;
        // The leader also writes a ValidatingAdmissionPolicy backstop; the
        // API server loads it within a second or two. Wait for it, so the
        // answer below is the same on every run.
        let dry_run = [
            "create",
            "--dry-run=server",
            "-n",
            "shop",
            "-f",
            "web-latest.yaml",
        ];
        wait(WAIT, "the backstop to be loaded", || {
            let out = self.kubectl(&dry_run).ok()?;
            String::from_utf8_lossy(&out.stderr)
                .contains("ValidatingAdmissionPolicy")
                .then_some(())
        })?;
        println!("\n  An image by tag, `:latest`, and no probes: denied.");
        let out = self.show(&["apply", "-n", "shop", "-f", "web-latest.yaml"])?;
        if out.status.success() {
            bail!("the :latest Deployment was admitted");
        }
        println!(
            "  (The API server runs admission policies before webhooks: the backstop answered"
        );
        println!("   first, and it still answers while the operator is down. The webhook, like");
        println!("   `probity lint` in CI, reports every rule with its fix:)");
        self.probity(&["lint", "web-latest.yaml"])?;
        println!("\n  Pinned by digest, with honest probes: admitted.");
        self.must(&["apply", "-n", "shop", "-f", "orders.yaml"])?;
        Ok(())
    }

    pub(super) fn audit(&self) -> anyhow::Result<()> {
        step(
            4,
            "Audit: a ReadinessPolicy in namespace legacy reports without blocking",
        );
        self.file("report.yaml", REPORT)?;
        self.file("legacy-apps.yaml", LEGACY_APPS)?;
        self.must(&["apply", "-f", "report.yaml"])?;
        self.quietly(&[
            "wait",
            "-n",
            "legacy",
            "--for",
            "condition=Ready",
            "readinesspolicy/report",
            "--timeout",
            "60s",
        ])?;
        println!("\n  Admitted, with warnings:");
        self.must(&["apply", "-n", "legacy", "-f", "legacy-apps.yaml"])?;
        self.wait_for(
            &["readinesspolicy", "report", "-n", "legacy"],
            "{.status.violating}",
            "2",
        )?;
        println!("\n  The policy's status counts and lists them:");
        self.must(&["get", "readinesspolicies", "-n", "legacy"])?;
        self.must(&[
            "get",
            "readinesspolicy",
            "report",
            "-n",
            "legacy",
            "-o",
            r#"jsonpath={range .status.violations[*]}{.rule}  {.kind}/{.name} {.container}: {.message}{"\n"}{end}"#,
        ])?;
        Ok(())
    }

    pub(super) fn drift(&self) -> anyhow::Result<()> {
        step(
            5,
            "Digest drift: three replicas of orders, one pulled a different image for the same tag",
        );
        println!(
            "  (Nothing runs pods here: the demo creates them and writes their status as a kubelet would.)"
        );
        self.file("orders-pods.yaml", &orders_pods())?;
        self.must(&["create", "-n", "shop", "-f", "orders-pods.yaml"])?;
        self.file("status-ok.json", &pod_status(DIGEST))?;
        self.file("status-drifted.json", &pod_status(DIGEST_OTHER))?;
        for pod in ["a", "b", "c"] {
            let name = format!("orders-5d8f7b9c4-{pod}");
            let status = if pod == "c" {
                "status-drifted.json"
            } else {
                "status-ok.json"
            };
            let args = [
                "patch",
                "pod",
                &name,
                "-n",
                "shop",
                "--subresource=status",
                "--type=merge",
                "--patch-file",
                status,
            ];
            if pod == "c" {
                self.must(&args)?;
            } else {
                self.quietly(&args)?;
            }
        }
        self.drift_events("shop", "The operator noticed, from the pods' imageIDs:")?;
        Ok(())
    }

    pub(super) fn probes(&self) -> anyhow::Result<()> {
        let db = Database::listen("127.0.0.1:0").context("starting the database stand-in")?;
        let addr = free_addr()?;
        step(
            6,
            "probity-probe: the orders example in front of a database stand-in",
        );
        println!(
            "  $ HOST=127.0.0.1 PORT={} DEP_ADDR={} orders &",
            addr.port(),
            db.addr()
        );
        let mut command = Command::new(&self.orders);
        command
            .env("HOST", "127.0.0.1")
            .env("PORT", addr.port().to_string())
            .env("DEP_ADDR", db.addr().to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let mut orders = self.spawn("orders", command)?;
        wait_until_ok(&mut orders, addr, "/startupz")?;
        wait(WAIT, "orders ready", || {
            (http_get(addr, "/readyz").ok()?.status == 200).then_some(())
        })?;

        println!("\n  Healthy (a query takes 5 ms):");
        let ok = http_get(addr, "/orders")?;
        println!("  GET /orders -> {}", ok.status);
        show_probe(addr, "/livez")?;
        show_probe(addr, "/readyz?verbose")?;

        slow_database(&db, addr, "")?;
        println!(
            "  (An open breaker is reported, not fatal: every replica shares this database, so"
        );
        println!(
            "   taking them all out of rotation would not help. Dependency::critical() opts in.)"
        );
        show_probe(addr, "/livez")?;

        println!("\n  The database goes down (connection refused):");
        drop(db);
        let t = Instant::now();
        wait(Duration::from_secs(20), "orders unready", || {
            (http_get(addr, "/readyz").ok()?.status == 503).then_some(())
        })?;
        println!(
            "  /readyz failed {:.1} s later (checked every second, 2 misses to fail):",
            t.elapsed().as_secs_f64()
        );
        show_probe(addr, "/readyz?verbose")?;
        println!("  (Reasons go to the service's log, not to unauthenticated probe callers.)");
        show_probe(addr, "/livez")?;
        println!("  (Liveness checks only the process, so the kubelet restarts nothing.)");

        println!("\n  SIGTERM: readiness fails at once, requests are served for the drain delay:");
        let t = Instant::now();
        orders.terminate();
        wait(Duration::from_secs(5), "orders draining", || {
            let r = http_get(addr, "/readyz?verbose").ok()?;
            (r.status == 503 && r.body.contains("[-]shutdown")).then_some(())
        })?;
        let livez = http_get(addr, "/livez")?;
        println!(
            "  {:.1} s after SIGTERM: /readyz 503, /livez {}",
            t.elapsed().as_secs_f64(),
            livez.status
        );
        if orders.wait_exit(Duration::from_secs(30)).is_none() {
            stop(&mut orders, Duration::from_secs(5));
        }
        println!(
            "  orders exited ({}) {:.1} s after SIGTERM",
            orders.how_it_ended(),
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Waits for an ImageDigestDrift event in `namespace`, then shows them
    /// after `intro`.
    pub(super) fn drift_events(&self, namespace: &str, intro: &str) -> anyhow::Result<()> {
        let events = |output| {
            listing(
                "events",
                namespace,
                "--field-selector",
                "reason=ImageDigestDrift",
                output,
            )
        };
        self.wait_for_output("an ImageDigestDrift event", &events("name"))?;
        println!("\n  {intro}");
        self.must(&events(
            "custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message",
        ))
        .map(drop)
    }
}
