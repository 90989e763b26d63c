//! Certificate rotation: SIGHUP, or a change of any certificate, key or CA file (polled by
//! modification time, size and inode, so an atomic rename or a Kubernetes secret update
//! counts), rebuilds the rustls configs. A reload that fails keeps the configs in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::TlsSetup;

/// What identifies one version of a file.
type Stamp = Option<(SystemTime, u64, u64)>;

/// Starts watching for SIGHUP and file changes until `cancel`. The signal handler is in place
/// when this returns, so a SIGHUP sent afterwards reloads instead of ending the process.
pub fn spawn(setup: Arc<TlsSetup>, cancel: CancellationToken) -> std::io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let files = setup.files();
    let interval = setup.reload_interval();
    let mut seen = stamps(&files);
    tokio::spawn(async move {
        loop {
            let why = tokio::select! {
                _ = cancel.cancelled() => return,
                got = hangup.recv() => match got {
                    Some(()) => "SIGHUP",
                    None => return,
                },
                _ = poll(interval) => {
                    let now = stamps(&files);
                    if now == seen {
                        continue;
                    }
                    // Remembered even if the reload fails: a half-written pair is retried
                    // when the other file lands, not every poll.
                    seen = now;
                    "file change"
                }
            };
            match setup.reload() {
                Ok(()) => tracing::info!(trigger = why, "TLS certificates reloaded"),
                Err(e) => tracing::error!(
                    trigger = why,
                    error = %e,
                    "TLS reload failed; the previous certificates stay in use"
                ),
            }
        }
    });
    Ok(())
}

/// Waits one poll period; forever when polling is off.
async fn poll(interval: Duration) {
    if interval.is_zero() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(interval).await;
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len(), m.ino()))
        })
        .collect()
}
