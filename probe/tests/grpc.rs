//! `grpc.health.v1` over a real tonic server on loopback.
#![cfg(feature = "grpc")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use probity_probe::health::{CheckOptions, Health};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn start(db_up: &Arc<AtomicBool>) -> (HealthClient<tonic::transport::Channel>, Health) {
    let flag = Arc::clone(db_up);
    let health = Health::builder()
        .readiness_with(
            "db",
            move || {
                let up = flag.load(Ordering::SeqCst);
                async move { if up { Ok(()) } else { Err("down") } }
            },
            CheckOptions::new()
                .interval(Duration::from_millis(30))
                .timeout(Duration::from_millis(20))
                .debounce(1, 1),
        )
        .build()
        .expect("valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = health.grpc_service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .expect("grpc server");
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let client = HealthClient::new(channel);
    (client, health)
}

fn req(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

async fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<ServingStatus, tonic::Code> {
    client
        .check(req(service))
        .await
        .map(|r| ServingStatus::try_from(r.into_inner().status).expect("known status"))
        .map_err(|s| s.code())
}

#[tokio::test]
async fn check_answers_from_the_registry() {
    let db = Arc::new(AtomicBool::new(true));
    let (mut client, _health) = start(&db).await;
    for _ in 0..500 {
        if check(&mut client, "").await == Ok(ServingStatus::Serving) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(check(&mut client, "").await, Ok(ServingStatus::Serving));
    assert_eq!(
        check(&mut client, "readyz/db").await,
        Ok(ServingStatus::Serving)
    );
    assert_eq!(
        check(&mut client, "livez").await,
        Ok(ServingStatus::Serving)
    );
    assert_eq!(check(&mut client, "nope").await, Err(tonic::Code::NotFound));
    assert_eq!(
        check(&mut client, "readyz/nope").await,
        Err(tonic::Code::NotFound)
    );

    db.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        check(&mut client, "readyz").await,
        Ok(ServingStatus::NotServing)
    );
    assert_eq!(
        check(&mut client, "livez").await,
        Ok(ServingStatus::Serving),
        "liveness ignores db"
    );
}

#[tokio::test]
async fn watch_streams_changes_and_unknown_services_stay_open() {
    let db = Arc::new(AtomicBool::new(true));
    let (mut client, _health) = start(&db).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut stream = client
        .watch(req("readyz/db"))
        .await
        .expect("watch")
        .into_inner();
    let first = stream.message().await.expect("message").expect("open");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    db.store(false, Ordering::SeqCst);
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a change is sent")
        .expect("message")
        .expect("open");
    assert_eq!(next.status, ServingStatus::NotServing as i32);

    let mut unknown = client.watch(req("nope")).await.expect("watch").into_inner();
    let first = unknown.message().await.expect("message").expect("open");
    assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);
    let more = tokio::time::timeout(Duration::from_millis(700), unknown.message()).await;
    assert!(
        more.is_err(),
        "the stream stays open with no further message: {more:?}"
    );
}
