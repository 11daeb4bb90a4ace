//! The operator drains as it tells services to: on SIGTERM `/readyz` fails
//! at once while the process keeps serving for the drain delay, then it
//! stops cleanly; a second SIGTERM stops it at once.

use std::time::{Duration, Instant};

use crate::common::{Operator, eventually};

const WAIT: Duration = Duration::from_secs(30);

async fn ready(operator: &Operator) {
    eventually(WAIT, "the operator is ready", || async {
        match operator.get("/readyz").await {
            Some((200, body)) => Ok(body),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn sigterm_fails_readiness_first_and_a_second_one_stops_at_once() -> anyhow::Result<()> {
    let _operators = crate::common::operators_together().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, WAIT).await?;
    let ns = env.namespace(&client, "drain").await?;

    let mut draining = Operator::start(
        env.kubeconfig(),
        "draining",
        &ns,
        &["--drain-delay", "3", "--drain-deadline", "2"],
    );
    ready(&draining).await;
    let signalled = Instant::now();
    draining.sigterm();
    let body = eventually(
        Duration::from_secs(2),
        "readiness fails on SIGTERM",
        || async {
            match draining.get("/readyz?verbose").await {
                Some((503, body)) => Ok(body),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(body.contains("[-]shutdown"), "{body}");
    // Still serving: liveness holds and the process is there.
    assert_eq!(draining.get("/livez").await.map(|(s, _)| s), Some(200));
    assert!(!draining.exited(), "{}", draining.log());
    let code = draining.wait_exit(Duration::from_secs(15));
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "{}", draining.log());
    assert!(
        took >= Duration::from_millis(2_800),
        "stopped {took:?} after SIGTERM, before the 3 s drain delay"
    );

    let mut aborted = Operator::start(env.kubeconfig(), "aborted", &ns, &["--drain-delay", "60"]);
    ready(&aborted).await;
    let signalled = Instant::now();
    aborted.sigterm();
    eventually(
        Duration::from_secs(2),
        "readiness fails on SIGTERM",
        || async {
            match aborted.get("/readyz").await {
                Some((503, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    aborted.sigterm();
    let code = aborted.wait_exit(Duration::from_secs(10));
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "{}", aborted.log());
    assert!(
        took < Duration::from_secs(10),
        "a second SIGTERM took {took:?} to stop the operator"
    );
    Ok(())
}
