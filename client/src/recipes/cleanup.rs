//! Deleting recipe nodes that are ours: now and only if still ours (`delete_own`), with
//! bounded retries (`delete_eventually`), and from drop guards, which cannot await
//! (`spawn_detached`).
//!
//! Invariant: a delete is always conditioned on the node's create revision (its token), so a
//! later node that reuses the name is never deleted by mistake. What these helpers fail to
//! delete goes with the session that owns it.

use super::wait::{transient, Backoff};
use crate::client::Client;
use crate::error::Error;
use crate::txn::{Compare, CompareOp, Op, Txn};

/// Attempts of a background clean-up (each one retried by the client within its request
/// timeout) before it leaves the node to the session's end.
pub(crate) const CLEANUP_ATTEMPTS_MAX: u32 = 10;

/// Deletes the node at `path` only if it is still the node created at revision `token`: a
/// later node that reuses the name (after its directory was deleted and recreated) is left
/// alone. Returns whether it deleted anything.
pub(crate) async fn delete_own(client: &Client, path: &str, token: u64) -> Result<bool, Error> {
    let txn = Txn::new()
        .when(Compare::create_revision(path, CompareOp::Equal, token))
        .then(Op::delete(path, None, false));
    Ok(client.txn(txn).await?.succeeded)
}

/// Deletes the node created at `token`, retrying transient failures a bounded number of times.
pub(crate) async fn delete_eventually(client: Client, path: String, token: u64) {
    let mut backoff = Backoff::new();
    for _ in 0..CLEANUP_ATTEMPTS_MAX {
        match delete_own(&client, &path, token).await {
            Err(error) if transient(&error) => {
                backoff.pause(None).await;
            }
            _ => return,
        }
    }
}

/// Runs `future` on the current Tokio runtime, if there is one; used by drop guards, which
/// cannot await. Without a runtime the session's end removes what the future would have.
pub(crate) fn spawn_detached<F>(future: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(future);
    }
}
