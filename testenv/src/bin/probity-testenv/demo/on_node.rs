//! The tour on a real node: the operator runs from its image through its
//! chart, kubelet runs the pods and executes their probes, the runtime pulls
//! a moving `:latest`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use probity_testenv::node::{NODE_IP, Node};
use probity_testenv::orders::{Database, Probes, recommended_probes};

use super::http::{http_get, show_probe, slow_database};
use super::kubectl::{listing, print_indented, shell_words};
use super::{STEPS, SYSTEM_NS, Tour, WAIT, note, print_tail, step, wait};

/// The orders example's port in its pods.
const PORT: u16 = 8080;

impl Tour {
    pub(super) fn run_on_node(&self, node: &Node) -> anyhow::Result<()> {
        let orders_image = self.install_chart(node)?;
        let probes = recommended_probes(&self.orders, PORT).context("the orders example")?;
        let mut db =
            Database::listen(&format!("{NODE_IP}:0")).context("starting the database stand-in")?;
        self.enforce(&orders_deployment(&orders_image, db.addr(), &probes))?;
        let t = Instant::now();
        self.rollout("orders", "shop")?;
        note(&format!(
            "2 replicas available {:.1} s later: pulled, started, startup and readiness probes passed",
            t.elapsed().as_secs_f64()
        ));
        self.audit()?;
        self.drift_on_node(node)?;
        self.probes_on_node(&mut db, probes.grace_seconds)?;
        step(STEPS, "Cleaning up");
        let t = Instant::now();
        self.helm(&[
            "uninstall",
            "probity",
            "--namespace",
            SYSTEM_NS,
            "--wait",
            "--timeout",
            "120s",
        ])?;
        note(&format!(
            "the release removed in {:.1} s; the node and the control plane stop next",
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Builds and pushes the images, installs the chart; returns the
    /// orders example's image.
    fn install_chart(&self, node: &Node) -> anyhow::Result<String> {
        step(
            2,
            "Installing probity with its Helm chart, from images built here (no Docker)",
        );
        let registry = node.registry();
        let t = Instant::now();
        let pushed = probity_testenv::image::push_programs(
            registry,
            &self.work,
            &[
                ("probity/probity", self.probity.clone()),
                ("probity/orders", self.orders.clone()),
            ],
        )
        .context("building and pushing the images")?;
        for image in &pushed {
            println!("  pushed {image}");
        }
        note(&format!(
            "each image: the binary, the C libraries it links, the CA bundle, a non-root user ({:.1} s)",
            t.elapsed().as_secs_f64()
        ));
        let find = |repository: &str| {
            pushed
                .iter()
                .find(|i| i.contains(&format!("/{repository}:")))
                .cloned()
                .with_context(|| format!("no {repository} image pushed"))
        };
        let sets = node.chart_values(&find("probity/probity")?)?;
        let chart = self.chart.to_string_lossy().into_owned();
        let mut args = vec![
            "install",
            "probity",
            &chart,
            "--namespace",
            SYSTEM_NS,
            "--create-namespace",
            "--wait",
            "--timeout",
            "180s",
        ];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let t = Instant::now();
        self.helm(&args)?;
        note(&format!(
            "installed and Ready in {:.1} s (the registry is plain HTTP and private: named, so the operator may resolve its tags)",
            t.elapsed().as_secs_f64()
        ));
        self.must(&["get", "pods", "-n", SYSTEM_NS, "-o", "wide"])?;
        find("probity/orders")
    }

    /// A `:latest` that moves while a Deployment runs it.
    fn drift_on_node(&self, node: &Node) -> anyhow::Result<()> {
        step(
            5,
            "Digest drift for real: three replicas of app:latest, and the tag moves",
        );
        let registry = node.registry();
        let release = |n: &str| -> anyhow::Result<String> {
            let mut image = probity_testenv::image::pause(&self.work)?;
            image.layers.push(
                probity_testenv::image::LayerBuilder::new()
                    .file("release", 0o644, n.as_bytes())
                    .build(),
            );
            Ok(registry.push_image("app", "latest", &image)?)
        };
        let first = release("A").context("pushing app:latest")?;
        let image = format!("{}/app:latest", registry.host);
        println!("  pushed {image} -> {first}");
        self.file(
            "app.yaml",
            &format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  replicas: 3\n\
                 \x20 selector:\n    matchLabels: {{app: app}}\n  template:\n    metadata:\n      labels: {{app: app}}\n\
                 \x20   spec:\n      containers:\n        - name: app\n          image: {image}\n\
                 \x20         imagePullPolicy: Always\n"
            ),
        )?;
        self.must(&["apply", "-n", "legacy", "-f", "app.yaml"])?;
        self.rollout("app", "legacy")?;
        let columns = listing(
            "pods",
            "legacy",
            "-l",
            "app=app",
            "custom-columns=POD:.metadata.name,IMAGE-ID:.status.containerStatuses[0].imageID",
        );
        self.must(&columns)?;
        let second = release("B").context("pushing app:latest again")?;
        println!("\n  A new build is pushed to the same tag: {image} -> {second}");
        println!("  and one pod is replaced (an eviction, a node drain):");
        let pods = self.quietly(&listing(
            "pods",
            "legacy",
            "-l",
            "app=app",
            "jsonpath={.items[0].metadata.name}",
        ))?;
        self.must(&["delete", "pod", pods.trim(), "-n", "legacy", "--wait=false"])?;
        self.drift_events(
            "legacy",
            "The operator noticed, from the imageIDs kubelet reported:",
        )?;
        self.must(&columns)?;
        println!(
            "  (With `images: {{pin: Admission}}` the Deployment is pinned to the digest the tag"
        );
        println!("   named when it was admitted, and every replica stays on it.)");
        Ok(())
    }

    /// The orders pods through a slow, then a gone, database, and a drain.
    fn probes_on_node(&self, db: &mut Database, grace: u64) -> anyhow::Result<()> {
        step(
            6,
            "probity-probe under kubelet: the orders pods, their probes and the Service's endpoints",
        );
        let pods = self.orders_pods()?;
        let Some((_, ip)) = pods.first().cloned() else {
            bail!("no orders pods");
        };
        let addr: SocketAddr = format!("{ip}:{PORT}")
            .parse()
            .with_context(|| format!("pod IP {ip}"))?;
        self.must(&[
            "get",
            "pods",
            "-n",
            "shop",
            "-l",
            "app=orders",
            "-o",
            "wide",
        ])?;
        println!("\n  Healthy, on pod IP {ip} (a query takes 5 ms):");
        println!("  GET /orders -> {}", http_get(addr, "/orders")?.status);
        show_probe(addr, "/readyz?verbose")?;

        slow_database(db, addr, " on one pod")?;
        println!("  (Deadlines bound the wait, the breaker sheds the rest; an open breaker is");
        println!("   reported, not fatal: every replica shares this database.)");
        db.set_delay(Duration::from_millis(5));

        println!("\n  The database goes down (connection refused):");
        let at = db.addr();
        db.close();
        let t = Instant::now();
        wait(WAIT, "the orders pods out of the endpoints", || {
            (self.endpoint_states().ok()? == ["false", "false"]).then_some(())
        })?;
        note(&format!(
            "both pods NotReady {:.1} s later: out of the Service's endpoints, not restarted",
            t.elapsed().as_secs_f64()
        ));
        self.must(&["get", "pods", "-n", "shop", "-l", "app=orders"])?;
        self.must(&slices(
            "custom-columns=SLICE:.metadata.name,ADDRESSES:.endpoints[*].addresses[0],READY:.endpoints[*].conditions.ready",
        ))?;
        std::thread::sleep(Duration::from_secs(12).saturating_sub(t.elapsed()));
        println!(
            "\n  {:.0} s into the outage, what kubelet's probes reported:",
            t.elapsed().as_secs_f64()
        );
        let out = self.must(&listing(
            "events",
            "shop",
            "--field-selector",
            "reason=Unhealthy",
            "custom-columns=COUNT:.count,OBJECT:.involvedObject.name,MESSAGE:.message",
        ))?;
        if String::from_utf8_lossy(&out.stdout).contains("Liveness probe failed") {
            bail!("a liveness probe failed during the outage");
        }
        show_probe(addr, "/livez")?;
        println!(
            "  (Readiness fails, liveness checks only the process: kubelet restarts nothing.)"
        );

        println!("\n  The database comes back:");
        let t = Instant::now();
        *db = Database::listen(&at.to_string()).context("restarting the database stand-in")?;
        wait(WAIT, "the orders pods back in the endpoints", || {
            (self.endpoint_states().ok()? == ["true", "true"]).then_some(())
        })?;
        note(&format!(
            "both pods Ready again {:.1} s later",
            t.elapsed().as_secs_f64()
        ));
        let restarts = self.quietly(&listing(
            "pods",
            "shop",
            "-l",
            "app=orders",
            "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
        ))?;
        self.must(&["get", "pods", "-n", "shop", "-l", "app=orders"])?;
        if restarts.split_whitespace().any(|n| n != "0") {
            bail!("an orders pod was restarted: {restarts}");
        }

        let (pod, ip) = pods[0].clone();
        println!("\n  A pod is deleted (a rollout, a scale-down): it drains before it exits.");
        let t = Instant::now();
        self.must(&["delete", "pod", &pod, "-n", "shop", "--wait=false"])?;
        wait(WAIT, "the deleted pod's endpoint terminating", || {
            let states = self
                .quietly(&slices(&format!(
                    "jsonpath={{.items[*].endpoints[?(@.addresses[0]==\"{ip}\")].conditions.terminating}}"
                )))
                .ok()?;
            (states.trim() == "true").then_some(())
        })?;
        let answer = http_get(addr, "/orders")?;
        println!(
            "  {:.1} s after the delete its endpoint is terminating (no new traffic), and it still",
            t.elapsed().as_secs_f64()
        );
        println!(
            "  answers what is in flight: GET /orders -> {} (drain delay 5 s, grace {grace} s)",
            answer.status
        );
        self.rollout("orders", "shop")?;
        note(&format!(
            "replaced and Ready {:.1} s after the delete",
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// The orders pods' names and IPs.
    fn orders_pods(&self) -> anyhow::Result<Vec<(String, String)>> {
        let out = self.quietly(&[
            "get",
            "pods",
            "-n",
            "shop",
            "-l",
            "app=orders",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}"#,
        ])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (name, ip) = l.split_once(' ')?;
                Some((name.to_owned(), ip.trim().to_owned()))
            })
            .collect())
    }

    /// `ready` of each endpoint of the orders Service.
    fn endpoint_states(&self) -> anyhow::Result<Vec<String>> {
        let out = self.quietly(&slices(
            "jsonpath={.items[*].endpoints[*].conditions.ready}",
        ))?;
        Ok(out.split_whitespace().map(str::to_owned).collect())
    }

    /// `kubectl rollout status` of Deployment `name`, shown; within 90 s.
    fn rollout(&self, name: &str, namespace: &str) -> anyhow::Result<()> {
        let deployment = format!("deployment/{name}");
        let args = [
            "rollout",
            "status",
            &deployment,
            "-n",
            namespace,
            "--timeout=90s",
        ];
        self.must(&args).map(drop)
    }

    /// `helm <args>`, shown; it must succeed.
    fn helm(&self, args: &[&str]) -> anyhow::Result<()> {
        println!("  $ helm {}", shell_words(args));
        let out = self
            .env
            .helm()
            .args(args)
            .current_dir(&self.work)
            .stdin(std::process::Stdio::null())
            .output()
            .context("running helm")?;
        print_indented(&out.stdout);
        print_indented(&out.stderr);
        if !out.status.success() {
            bail!("helm {} failed", shell_words(args));
        }
        Ok(())
    }

    pub(super) fn dump_node_logs(&self, node: &Node) {
        println!("--- the operator's pods (last 30 lines each)");
        if let Ok(out) = self.kubectl(&[
            "logs",
            "-n",
            SYSTEM_NS,
            "-l",
            "app.kubernetes.io/name=probity",
            "--tail",
            "30",
            "--prefix",
        ]) {
            print_indented(&out.stdout);
        }
        print_tail(&node.dir().join("kubelet.log"));
    }
}

/// `kubectl get` of the orders Service's EndpointSlices, `-o output`.
fn slices(output: &str) -> [&str; 8] {
    listing(
        "endpointslices",
        "shop",
        "-l",
        "kubernetes.io/service-name=orders",
        output,
    )
}

/// The orders example as a 2-replica Deployment with the probes it
/// recommends, its database at `database`, and a Service.
fn orders_deployment(image: &str, database: SocketAddr, probes: &Probes) -> String {
    let indented: String = probes
        .yaml
        .lines()
        .map(|l| format!("          {l}\n"))
        .collect();
    let grace = probes.grace_seconds;
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  replicas: 2\n\
         \x20 selector:\n    matchLabels: {{app: orders}}\n  template:\n    metadata:\n      labels: {{app: orders}}\n\
         \x20   spec:\n      terminationGracePeriodSeconds: {grace}\n      containers:\n\
         \x20       - name: orders\n          image: {image}\n          env:\n\
         \x20           - {{name: PORT, value: \"{PORT}\"}}\n            - {{name: HOST, value: 0.0.0.0}}\n\
         \x20           - {{name: DEP_ADDR, value: \"{database}\"}}\n{indented}\
         ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: orders\nspec:\n  selector: {{app: orders}}\n\
         \x20 ports: [{{port: 80, targetPort: {PORT}}}]\n"
    )
}
