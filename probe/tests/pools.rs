//! Pool exhaustion makes the pod unready: the deadpool and sqlx adapters.
#![cfg(any(feature = "deadpool", feature = "sqlx"))]

use probity_probe::health::{Health, Probe, Thresholds};

fn ready(health: &Health) -> bool {
    health.report(Probe::Readiness, &[]).ok
}

#[cfg(feature = "deadpool")]
#[tokio::test]
async fn deadpool_exhaustion_fails_readiness_with_hysteresis() {
    use deadpool::managed::{Manager, Metrics, Pool, RecycleResult};

    #[derive(Debug)]
    struct Conns;
    impl Manager for Conns {
        type Type = u32;
        type Error = std::convert::Infallible;
        async fn create(&self) -> Result<u32, Self::Error> {
            Ok(0)
        }
        async fn recycle(&self, _: &mut u32, _: &Metrics) -> RecycleResult<Self::Error> {
            Ok(())
        }
    }

    let pool: Pool<Conns> = Pool::builder(Conns).max_size(4).build().expect("pool");
    let health = Health::builder()
        .saturation_with("db-pool", pool.clone(), Thresholds::new(1.0, 0.5))
        .build()
        .expect("valid");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pool.get().await.expect("object"));
    }
    assert!(ready(&health), "3 of 4");
    held.push(pool.get().await.expect("object"));
    assert!(!ready(&health), "4 of 4: exhausted");
    held.pop();
    assert!(!ready(&health), "3 of 4 is above the exit threshold");
    held.pop();
    assert!(ready(&health), "2 of 4");
}

#[cfg(feature = "sqlx")]
#[tokio::test]
async fn sqlx_exhaustion_fails_readiness() {
    use sqlx::sqlite::SqlitePoolOptions;

    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect("sqlite::memory:")
        .await
        .expect("sqlite pool");
    let health = Health::builder()
        .saturation_with("db-pool", pool.clone(), Thresholds::new(1.0, 0.5))
        .build()
        .expect("valid");
    let first = pool.acquire().await.expect("connection");
    assert!(ready(&health), "1 of 2");
    let second = pool.acquire().await.expect("connection");
    assert!(!ready(&health), "2 of 2: exhausted");
    drop(second);
    drop(first);
    // Released connections return to the idle set asynchronously.
    for _ in 0..100 {
        if ready(&health) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("readiness did not recover after the connections were released");
}
