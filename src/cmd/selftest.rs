//! `probity selftest`: what the chart's `helm test` Job runs. Every
//! operator pod answers `/readyz`, and admission denies a `:latest` Deployment (a
//! server-side dry run, so nothing is stored) in a namespace an Enforce
//! policy covers.

use std::time::Duration;

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{ListParams, PostParams};
use tokio::time::Instant;

use super::cli::SelftestArgs;
use super::{Exit, on_cluster};

/// Runs `probity selftest`.
pub(super) fn run(args: &SelftestArgs) -> Exit {
    let timeout = Duration::from_secs(args.timeout);
    on_cluster(|client| async move {
        let deadline = Instant::now() + timeout;
        let urls = endpoints(&client, args, deadline).await?;
        for url in &urls {
            let took = readyz(url, deadline).await?;
            println!("GET {url}: 200 ({:.1} s)", took.as_secs_f64());
        }
        let message = denied(client, &args.namespace, deadline).await?;
        println!(
            "a :latest Deployment in {} is denied: {message}",
            args.namespace
        );
        Ok(())
    })
}

/// `http://<address>:<port>/readyz` of each ready endpoint of the
/// Service, once it lists one.
async fn endpoints(
    client: &kube::Client,
    args: &SelftestArgs,
    deadline: Instant,
) -> anyhow::Result<Vec<String>> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &args.service_namespace);
    let params =
        ListParams::default().labels(&format!("kubernetes.io/service-name={}", args.service));
    loop {
        let listed = slices
            .list(&params)
            .await
            .with_context(|| format!("listing the endpoints of {}", args.service))?;
        let urls: Vec<String> = listed
            .items
            .iter()
            .flat_map(|slice| slice.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .flat_map(|e| e.addresses.iter())
            .map(|address| match address.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(ip)) => format!("http://[{ip}]:{}/readyz", args.port),
                _ => format!("http://{address}:{}/readyz", args.port),
            })
            .collect();
        if !urls.is_empty() {
            return Ok(urls);
        }
        if Instant::now() >= deadline {
            bail!(
                "service {}/{} lists no ready endpoint",
                args.service_namespace,
                args.service
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until `url` answers 200; how long that took.
async fn readyz(url: &str, deadline: Instant) -> anyhow::Result<Duration> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("--readyz {url:?}"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let started = Instant::now();
    loop {
        let last = match tokio::time::timeout(Duration::from_secs(5), client.get(uri.clone())).await
        {
            Ok(Ok(response)) if response.status() == hyper::StatusCode::OK => {
                return Ok(started.elapsed());
            }
            Ok(Ok(response)) => {
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let body = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
                format!("{status}: {}", body.trim())
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 5 s".to_owned(),
        };
        if Instant::now() >= deadline {
            bail!("GET {url}: {last}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Dry-runs the create of a `:latest` Deployment in `namespace` until
/// admission denies it (the operator needs a moment to see a new policy);
/// the denial's message.
async fn denied(
    client: kube::Client,
    namespace: &str,
    deadline: Instant,
) -> anyhow::Result<String> {
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "probity-selftest", "labels": {"app": "probity-selftest"}},
        "spec": {
            "selector": {"matchLabels": {"app": "probity-selftest"}},
            "template": {
                "metadata": {"labels": {"app": "probity-selftest"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/selftest:latest"}]},
            },
        },
    }))?;
    let api: Api<Deployment> = Api::namespaced(client, namespace);
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    loop {
        let last = match api.create(&params, &deployment).await {
            Err(kube::Error::Api(status)) if status.message.contains("PRB001") => {
                return Ok(status.message);
            }
            Err(e) => format!("not denied for PRB001: {e}"),
            Ok(_) => "admitted".to_owned(),
        };
        if Instant::now() >= deadline {
            bail!("a :latest Deployment in {namespace}: {last}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
