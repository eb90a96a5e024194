//! One shutdown signal for every server in a process.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first Ctrl-C or SIGTERM. Every server and
/// background loop of a service holds a clone and stops when it fires.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        terminated().await;
        trigger.cancel();
    });
    token
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, whichever comes first.
pub async fn terminated() {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
}
