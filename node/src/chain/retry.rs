//! Retrying RPC calls on transient failures with exponential backoff; used by the sender, the
//! watcher and the client's reads.

use std::future::IntoFuture;
use std::time::Duration;

use alloy::transports::TransportError;

use super::Error;

/// How often and how patiently to retry a transient RPC failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in total (at least 1).
    pub attempts: u32,
    /// Wait before the second try; doubled after each failure.
    pub first_backoff: Duration,
    /// Longest wait between tries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries (tests that want the first error).
    pub const fn once() -> Self {
        Self {
            attempts: 1,
            first_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    /// The wait after failed try number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Runs `call` until it succeeds, fails with a non-retryable error, or tries run out.
    pub async fn run<T, F, Fut>(&self, op: &str, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: IntoFuture<Output = Result<T, TransportError>>,
    {
        let attempts = self.attempts.max(1);
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let err = Error::from_rpc(op, e);
                    if !err.is_retryable() || attempt >= attempts {
                        return Err(err);
                    }
                    let wait = self.backoff(attempt);
                    tracing::warn!(target: "chain::rpc", op, attempt, ?wait, error = %err, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::transports::TransportErrorKind;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(2), Duration::from_millis(400));
        assert_eq!(p.backoff(10), Duration::from_secs(5));
        assert_eq!(p.backoff(100), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let v = fast()
            .run("probe", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(TransportErrorKind::backend_gone())
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!(v, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_last_attempt() {
        let calls = AtomicU32::new(0);
        let err = fast()
            .run("probe", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(TransportErrorKind::backend_gone())
            })
            .await
            .unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let err = fast()
            .run("probe", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(TransportErrorKind::non_retryable_str("bad request"))
            })
            .await
            .unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
