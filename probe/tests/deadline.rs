//! Deadline budgets over real HTTP hops on loopback.

mod support;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use probity_probe::deadline::{self, DeadlineLayer};
use support::{request, serve};

/// Answers with the budget it sees, in ms.
fn reporter() -> Router {
    Router::new()
        .route(
            "/budget",
            get(|| async {
                deadline::remaining()
                    .map(|r| r.as_millis().to_string())
                    .unwrap_or_else(|| "none".into())
            }),
        )
        .layer(
            DeadlineLayer::new(Duration::from_secs(30))
                .floor(Duration::from_millis(50))
                .header(http::HeaderName::from_static("x-budget-ms")),
        )
}

async fn budget_seen(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> (u16, String) {
    let reply = request(addr, "GET", "/budget", headers)
        .await
        .expect("request");
    (reply.status, reply.body)
}

fn millis(body: &str) -> u64 {
    body.parse()
        .unwrap_or_else(|_| panic!("a budget in ms, got {body:?}"))
}

#[tokio::test]
async fn inbound_budgets_are_read_clamped_and_floored() {
    let addr = serve(reporter()).await;
    let (status, body) = budget_seen(addr, &[]).await;
    assert_eq!(status, 200);
    assert!(
        (29_000..=30_000).contains(&millis(&body)),
        "no header: the server maximum, got {body}"
    );

    let (_, body) = budget_seen(addr, &[("grpc-timeout", "1500m")]).await;
    assert!((1_400..=1_500).contains(&millis(&body)), "{body}");
    let (_, body) = budget_seen(
        addr,
        &[
            ("grpc-timeout", "2S"),
            ("x-envoy-expected-rq-timeout-ms", "800"),
        ],
    )
    .await;
    assert!(
        (700..=800).contains(&millis(&body)),
        "the smallest budget wins: {body}"
    );
    let (_, body) = budget_seen(addr, &[("x-budget-ms", "600")]).await;
    assert!(
        (500..=600).contains(&millis(&body)),
        "custom header: {body}"
    );
    let (_, body) = budget_seen(addr, &[("grpc-timeout", "1H")]).await;
    assert!(millis(&body) <= 30_000, "clamped to the maximum: {body}");
    let (_, body) = budget_seen(addr, &[("grpc-timeout", "garbage")]).await;
    assert!(
        millis(&body) >= 29_000,
        "unparseable headers are ignored: {body}"
    );

    let (status, body) = budget_seen(addr, &[("x-envoy-expected-rq-timeout-ms", "10")]).await;
    assert_eq!(
        (status, body.as_str()),
        (504, "budget exhausted\n"),
        "below the floor"
    );
}

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn the_downstream_sees_the_remaining_budget_not_the_original() {
    let downstream = serve(reporter()).await;
    let url = format!("http://{downstream}/budget");
    let client = reqwest::Client::new();
    let upstream = Router::new()
        .route(
            "/checkout",
            get(move || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let reply =
                        deadline::reqwest_ext::send(client.get(&url), Duration::from_millis(50))
                            .await
                            .expect("downstream call");
                    reply.text().await.expect("body")
                }
            }),
        )
        .layer(DeadlineLayer::new(Duration::from_secs(30)));
    let upstream = serve(upstream).await;

    let reply = request(
        upstream,
        "GET",
        "/checkout",
        &[("x-envoy-expected-rq-timeout-ms", "2000")],
    )
    .await
    .expect("request");
    assert_eq!(reply.status, 200);
    let seen = millis(&reply.body);
    assert!(
        (1_000..=1_650).contains(&seen),
        "2000 ms - 300 ms spent - 50 ms headroom = at most 1650 ms, got {seen}"
    );
}

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn an_exhausted_budget_makes_no_call() {
    let result = deadline::scope(Duration::from_millis(10), async {
        deadline::reqwest_ext::send(
            reqwest::Client::new().get("http://127.0.0.1:9/"),
            Duration::from_millis(50),
        )
        .await
    })
    .await;
    assert!(
        matches!(result, Err(deadline::reqwest_ext::SendError::Exhausted(_))),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn nested_scopes_only_shrink() {
    deadline::scope(Duration::from_secs(1), async {
        deadline::scope(Duration::from_secs(5), async {
            assert_eq!(deadline::remaining(), Some(Duration::from_secs(1)));
        })
        .await;
        deadline::scope(Duration::from_millis(200), async {
            assert_eq!(deadline::remaining(), Some(Duration::from_millis(200)));
            assert!(deadline::check(Duration::from_millis(300)).is_err());
        })
        .await;
    })
    .await;
    assert!(
        deadline::check(Duration::from_secs(100)).is_ok(),
        "no scope, no deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn a_huge_budget_is_a_century_not_an_overflow() {
    deadline::scope(Duration::MAX, async {
        let left = deadline::remaining().expect("in a scope");
        assert!(
            left >= Duration::from_secs(99 * 365 * 24 * 3600),
            "Duration::MAX counts as a century: {left:?}"
        );
        deadline::scope(Duration::from_secs(1), async {
            assert_eq!(deadline::remaining(), Some(Duration::from_secs(1)));
            deadline::scope(Duration::MAX, async {
                assert_eq!(
                    deadline::remaining(),
                    Some(Duration::from_secs(1)),
                    "a huge inner budget cannot grow the outer one"
                );
            })
            .await;
        })
        .await;
    })
    .await;
}
