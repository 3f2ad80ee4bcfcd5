//! The router's readiness: what the worker, the consumer's callbacks and
//! the readiness watchdog share, and the one place readiness is computed
//! from it ([`Progress::ready`]).
//!
//! Depends on `http::Readiness` only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::http::Readiness;

/// A worker that shows no sign of life for this long is stuck in a call
/// to Kafka: not ready, whatever its last transaction did.
const STALLED: Duration = Duration::from_secs(5);

/// Shared by the worker thread, the consumer's callbacks and [`watch`].
pub struct Progress {
    /// Per ingress partition: the next offset our last committed
    /// transaction stored, the only position that survives a crash.
    pub committed: Mutex<HashMap<i32, i64>>,
    /// Whether librdkafka's last statistics showed a broker connection up.
    pub broker_up: AtomicBool,
    /// False from a failed or long-unconfirmed transaction until one commits.
    healthy: AtomicBool,
    /// When the worker last showed a sign of life, and what it was doing.
    beat: Mutex<(Instant, &'static str)>,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            committed: Mutex::default(),
            broker_up: AtomicBool::new(false),
            healthy: AtomicBool::new(false),
            beat: Mutex::new((Instant::now(), "starting")),
        }
    }

    /// The worker is alive and about to do `what`.
    pub fn beat(&self, what: &'static str) {
        if let Ok(mut beat) = self.beat.lock() {
            *beat = (Instant::now(), what);
        }
    }

    /// Transactions commit (true) or fail or stay unconfirmed (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }

    /// Notes the offsets a committed transaction stored.
    pub fn committed(&self, offsets: impl Iterator<Item = (i32, i64)>) {
        if let Ok(mut committed) = self.committed.lock() {
            committed.extend(offsets);
        }
    }

    /// Ready, or the reason why not.
    pub fn ready(&self) -> Result<(), NotReady> {
        let (at, doing) = self
            .beat
            .lock()
            .map(|b| *b)
            .unwrap_or((Instant::now(), "unknown"));
        if at.elapsed() > STALLED {
            return Err(NotReady::Stalled {
                duration: at.elapsed(),
                doing,
            });
        }
        if !self.healthy.load(Ordering::Acquire) {
            return Err(NotReady::NotCommitting);
        }
        if !self.broker_up.load(Ordering::Acquire) {
            return Err(NotReady::NoBroker);
        }
        Ok(())
    }
}

/// Why the router is not ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("worker stalled for {duration:.0?} in {doing}")]
    Stalled {
        duration: Duration,
        doing: &'static str,
    },
    #[error("transactions are not committing")]
    NotCommitting,
    #[error("no broker connection is up")]
    NoBroker,
}

impl NotReady {
    /// The reason without its duration, so a long stall is one state.
    fn kind(&self) -> &'static str {
        match self {
            NotReady::Stalled { .. } => "stalled",
            NotReady::NotCommitting => "not committing",
            NotReady::NoBroker => "no broker",
        }
    }
}

/// Sets the router's readiness from `progress` twice a second, logging
/// each change with its reason. It runs beside the worker thread, so a
/// worker stuck in a Kafka call still shows as not ready.
pub async fn watch(progress: Arc<Progress>, readiness: Readiness) {
    // The last state logged: None while ready, else the reason's kind
    // ("worker stalled", without its duration), so that a change of
    // reason is logged too and a long stall is not logged every tick.
    let mut logged: Option<Option<&'static str>> = None;
    loop {
        let ready = progress.ready();
        readiness.set("router", ready.is_ok());
        let state = ready.as_ref().err().map(NotReady::kind);
        if logged.as_ref() != Some(&state) {
            match &ready {
                Ok(()) if logged.is_some() => info!("router ready again"),
                Err(reason) if logged.is_some() => warn!(reason = %reason, "router not ready"),
                _ => {}
            }
            logged = Some(state);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_committing_worker_and_a_broker() {
        let p = Progress::new();
        assert_eq!(p.ready(), Err(NotReady::NotCommitting));
        p.set_healthy(true);
        assert_eq!(p.ready(), Err(NotReady::NoBroker));
        p.broker_up.store(true, Ordering::Release);
        assert_eq!(p.ready(), Ok(()));
        p.set_healthy(false);
        assert!(p.ready().is_err());
    }

    #[test]
    fn committed_offsets_are_kept_per_partition() {
        let p = Progress::new();
        p.committed([(0, 5), (1, 7)].into_iter());
        p.committed([(0, 9)].into_iter());
        let committed = p.committed.lock().unwrap().clone();
        assert_eq!(committed, HashMap::from([(0, 9), (1, 7)]));
    }
}
