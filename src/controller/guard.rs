//! A reconcile that panics is a bug, but it must not take the operator
//! down: the panic becomes an [`Error::Panicked`], logged and retried with
//! the policy's backoff like any other failure.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;

use super::Error;

/// Runs `work`, turning a panic into [`Error::Panicked`] naming `what`.
pub(crate) async fn catch_panic<T>(
    what: String,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            tracing::error!(%what, panic = %message, "reconcile panicked; it will be retried");
            Err(Error::Panicked { what, message })
        }
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_and_the_caller_goes_on() {
        let work = async {
            let list: Vec<u32> = Vec::new();
            // An index out of bounds, as a bug in a reconcile would have it.
            let index = list.len() + 3;
            Ok::<u32, Error>(list[index])
        };
        let err = catch_panic("reconcile of ReadinessPolicy shop/web".to_owned(), work)
            .await
            .expect_err("the panic is caught");
        match err {
            Error::Panicked { what, message } => {
                assert_eq!(what, "reconcile of ReadinessPolicy shop/web");
                assert!(message.contains("index out of bounds"), "{message}");
            }
            other => panic!("expected Panicked, got {other}"),
        }
        let fine = catch_panic("next".to_owned(), async { Ok::<_, Error>(7) }).await;
        assert!(matches!(fine, Ok(7)), "later reconciles run normally");
    }

    #[test]
    fn payloads_of_every_kind_are_read() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&42_u8), "a non-string panic payload");
    }
}
