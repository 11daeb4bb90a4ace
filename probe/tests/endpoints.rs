//! The endpoints over real HTTP on loopback: kube-apiserver's formats,
//! exactly.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use probity_probe::health::{CheckOptions, Health, TcpCheck};
use support::{eventually, get, request, serve};

fn fast() -> CheckOptions {
    CheckOptions::new()
        .interval(Duration::from_millis(30))
        .timeout(Duration::from_millis(20))
        .debounce(1, 1)
}

fn switch(
    flag: &Arc<AtomicBool>,
) -> impl Fn() -> std::future::Ready<Result<(), &'static str>> + use<> {
    let flag = Arc::clone(flag);
    move || {
        std::future::ready(if flag.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err("connection refused by db.internal:5432")
        })
    }
}

async fn service(show_reasons: bool) -> (std::net::SocketAddr, Arc<AtomicBool>, Health) {
    let db_up = Arc::new(AtomicBool::new(true));
    let health = Health::builder()
        .startup_with("warmup", || async { Ok::<(), String>(()) }, fast())
        .readiness_with("db", switch(&db_up), fast())
        .readiness_with("cache", TcpCheck::new("127.0.0.1:1"), fast().non_critical())
        .show_reasons(show_reasons)
        .build()
        .expect("valid registry");
    let addr = serve(health.router()).await;
    eventually("startup done and db passing", || async {
        get(addr, "/readyz").await.status == 200
    })
    .await;
    (addr, db_up, health)
}

/// Takes the dependency down and waits until readiness has failed and the
/// check has run again, so that its reason is the dependency's.
async fn take_db_down(addr: std::net::SocketAddr, db: &AtomicBool) {
    db.store(false, Ordering::Release);
    eventually("readiness fails", || async {
        get(addr, "/readyz").await.status == 503
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn ready_service_answers_ok_and_verbose_lists_every_check() {
    let (addr, _db, _health) = service(false).await;
    let plain = get(addr, "/readyz").await;
    assert_eq!((plain.status, plain.body.as_str()), (200, "ok"));
    assert_eq!(plain.header("cache-control"), Some("no-store"));
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    let verbose = get(addr, "/readyz?verbose").await;
    assert_eq!(verbose.status, 200);
    assert_eq!(
        verbose.body,
        "[+]startup ok\n[+]db ok\n[+]cache degraded: reason withheld\n[+]shutdown ok\nreadyz check passed\n"
    );
    assert_eq!(get(addr, "/startupz").await.body, "ok");
    assert_eq!(
        get(addr, "/livez?verbose=1").await.body,
        "[+]watchdog ok\nlivez check passed\n"
    );
}

#[tokio::test]
async fn dependency_outage_fails_readiness_and_never_liveness() {
    let (addr, db, _health) = service(false).await;
    take_db_down(addr, &db).await;

    let ready = get(addr, "/readyz").await;
    assert_eq!(
        ready.body,
        "[+]startup ok\n[-]db failed: reason withheld\n[+]cache degraded: reason withheld\n[+]shutdown ok\nreadyz check failed\n",
        "a failing probe lists its checks even without ?verbose"
    );
    let live = get(addr, "/livez").await;
    assert_eq!((live.status, live.body.as_str()), (200, "ok"));

    let one = get(addr, "/readyz/db").await;
    assert_eq!(
        (one.status, one.body.as_str()),
        (503, "[-]db failed: reason withheld\nreadyz check failed\n")
    );
    let cache = get(addr, "/readyz/cache").await;
    assert_eq!((cache.status, cache.body.as_str()), (200, "ok"));

    db.store(true, Ordering::Release);
    eventually("readiness recovers", || async {
        get(addr, "/readyz").await.status == 200
    })
    .await;
}

#[tokio::test]
async fn exclude_skips_checks_and_warns_about_unknown_names() {
    let (addr, db, _health) = service(false).await;
    take_db_down(addr, &db).await;

    let excluded = get(addr, "/readyz?exclude=db&exclude=nope&exclude=nope").await;
    assert_eq!((excluded.status, excluded.body.as_str()), (200, "ok"));
    let verbose = get(addr, "/readyz?verbose&exclude=db&exclude=nope").await;
    assert_eq!(
        verbose.body,
        "[+]startup ok\n[+]db excluded: ok\n[+]cache degraded: reason withheld\n[+]shutdown ok\n\
         warn: some health checks cannot be excluded: no matches for \"nope\"\nreadyz check passed\n"
    );
}

#[tokio::test]
async fn unknown_check_path_is_404_and_head_has_no_body() {
    let (addr, _db, _health) = service(false).await;
    let missing = get(addr, "/readyz/nope").await;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, "no readyz check named \"nope\"\n")
    );
    assert_eq!(
        get(addr, "/livez/db").await.status,
        404,
        "db is not a liveness check"
    );

    let head = request(addr, "HEAD", "/livez", &[]).await.expect("HEAD");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(head.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn json_reports_status_age_and_consecutive_failures() {
    let (addr, db, _health) = service(false).await;
    take_db_down(addr, &db).await;
    let reply = request(
        addr,
        "GET",
        "/readyz?exclude=nope",
        &[("Accept", "application/json")],
    )
    .await
    .expect("request");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON body");
    assert_eq!(body["probe"], "readyz");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["unknownExcludes"], serde_json::json!(["nope"]));
    let checks = body["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["startup", "db", "cache", "shutdown"]);
    let db = &checks[1];
    assert_eq!(db["status"], "failed");
    assert!(
        db["consecutiveFailures"].as_u64().is_some_and(|n| n >= 1),
        "{db}"
    );
    assert!(db["ageSeconds"].as_f64().is_some_and(|a| a < 5.0), "{db}");
    assert!(
        db.get("reason").is_none(),
        "reasons are withheld by default: {db}"
    );
    assert_eq!(checks[2]["status"], "degraded");
}

#[tokio::test]
async fn reasons_are_shown_only_when_opted_in() {
    let (addr, db, _health) = service(true).await;
    take_db_down(addr, &db).await;
    let body = get(addr, "/readyz/db").await.body;
    assert_eq!(
        body,
        "[-]db failed: connection refused by db.internal:5432\nreadyz check failed\n"
    );
    let json = request(addr, "GET", "/readyz/db", &[("Accept", "application/json")])
        .await
        .expect("request");
    assert!(
        json.body
            .contains("\"reason\":\"connection refused by db.internal:5432\""),
        "{}",
        json.body
    );
}
