//! The receivers as last reloaded (`src/reload.rs`): the sender, which
//! holds auth and headers, and each partition's URL. Read before every
//! request, so a reload takes effect between requests, retries included.
//!
//! Depends on: `send` (the sender), `config` (the section), `live`.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tracing::{info, warn};

use super::config::{EgressConfig, SendEncoding};
use super::send::{Outcome, Sender};
use crate::live::Live;

pub struct Targets {
    live: Live<EgressConfig>,
    /// The sender built for the version of `live` it names.
    current: Mutex<(u64, Arc<Sender>)>,
}

impl Targets {
    /// `sender` is built from `live`'s current value.
    pub fn new(live: Live<EgressConfig>, sender: Sender) -> Targets {
        let version = live.version();
        Targets {
            live,
            current: Mutex::new((version, Arc::new(sender))),
        }
    }

    /// Sends one request for `partition` to its receiver as of the last
    /// reload; `started_with` when the reloaded target has no URL for it
    /// (validation refuses such a config, so only as a safeguard).
    pub async fn send(
        &self,
        partition: i32,
        started_with: &str,
        body: Bytes,
        encoding: SendEncoding,
        tenant: Option<&str>,
    ) -> Outcome {
        let config = self.live.get();
        let url = config.target.url(partition);
        let sender = self.sender(&config);
        sender
            .send(
                url.as_deref().unwrap_or(started_with),
                body,
                encoding,
                tenant,
            )
            .await
    }

    /// The sender for the current config, rebuilt after a reload.
    fn sender(&self, config: &EgressConfig) -> Arc<Sender> {
        let version = self.live.version();
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0 != version {
            match Sender::new(config) {
                Ok(sender) => {
                    info!("egress takes the reloaded targets, auth and headers from the next request on");
                    *current = (version, Arc::new(sender));
                }
                Err(e) => {
                    // Validation refuses what Sender::new refuses; keep the old one.
                    warn!(error = %e, "cannot build a sender from the reloaded egress config; keeping the previous one");
                    current.0 = version;
                }
            }
        }
        current.1.clone()
    }
}
