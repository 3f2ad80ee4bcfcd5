//! Several requests in flight per partition (`egress.max_in_flight` above
//! 1), the way Prometheus spreads remote write over shards: the partition's
//! series are split by a hash of their labels over that many lanes, and
//! each lane sends one request at a time, so the samples of one series
//! reach the receiver in the order they were read, a retry included (the
//! lane's later parts wait behind it).
//!
//! Every request the worker collects is split into one part per lane that
//! has series of it; a lane sends the parts it has waiting as one request
//! (within the request limits), so under load each lane's requests are as
//! large as one lane alone would send. At most `max_in_flight` collected
//! requests wait for their lanes at a time; the stored position moves only
//! past the requests all of whose parts are delivered, and all before them
//! (`egress::in_order`).
//!
//! Depends on the worker's `Delivery`, `batch`, `scan`, `in_order`.

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Delivery;
use crate::egress::batch::{Batch, BatchLimits, Record};
use crate::egress::in_order::InOrder;
use crate::egress::EgressError;
use crate::remote_write::scan::{count, split_series};
use crate::state::next_offset_after;

/// One lane's share of a collected request.
struct Part {
    /// The collected request's sequence number ([`InOrder`]).
    seq: u64,
    batch: Batch,
}

/// The lanes of one partition.
pub struct Lanes {
    lanes: Vec<mpsc::UnboundedSender<Part>>,
    /// Sequence numbers of delivered parts, from every lane.
    delivered: mpsc::UnboundedReceiver<u64>,
    tasks: JoinSet<Result<(), EgressError>>,
    order: InOrder,
    /// `max_in_flight`: collected requests that may wait at once.
    limit: usize,
    /// The lanes' bodies while a request is split.
    split: Vec<Vec<u8>>,
}

impl Lanes {
    /// Starts `n` lanes sending with copies of `delivery`. A lane finishes
    /// the request it is sending when `shutdown` comes, then stops.
    pub fn start(n: usize, delivery: &Delivery, shutdown: &CancellationToken) -> Lanes {
        let (done_tx, delivered) = mpsc::unbounded_channel();
        let limits = BatchLimits::from(delivery.shared.config.as_ref());
        let mut tasks = JoinSet::new();
        let lanes = (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tasks.spawn(lane(
                    delivery.clone(),
                    rx,
                    done_tx.clone(),
                    limits,
                    shutdown.clone(),
                ));
                tx
            })
            .collect();
        Lanes {
            lanes,
            delivered,
            tasks,
            order: InOrder::default(),
            limit: 2 * n,
            split: vec![Vec::new(); n],
        }
    }

    /// Whether every collected request is delivered.
    pub fn idle(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether as many collected requests wait as may.
    pub fn full(&self) -> bool {
        self.order.len() >= self.limit
    }

    /// Splits `batch` over the lanes and hands each its part. Returns the
    /// position to store when that completes a delivered prefix (a batch
    /// with nothing to send, behind nothing).
    pub fn submit(&mut self, batch: Batch) -> Result<Option<i64>, EgressError> {
        let mut parts: Vec<Batch> = (0..self.lanes.len()).map(|_| Batch::default()).collect();
        for record in &batch.records {
            let value = batch.body.get(record.start..record.end).unwrap_or_default();
            for body in &mut self.split {
                body.clear();
            }
            // A record the worker read was counted, so it splits; if it
            // did not, it goes whole to lane 0 rather than being lost.
            if split_series(value, &mut self.split).is_err() {
                self.split[0].clear();
                self.split[0].extend_from_slice(value);
                for body in &mut self.split[1..] {
                    body.clear();
                }
            }
            for (part, body) in parts.iter_mut().zip(&self.split) {
                if body.is_empty() {
                    continue;
                }
                let start = part.body.len();
                part.body.extend_from_slice(body);
                part.records.push(Record {
                    offset: record.offset,
                    start,
                    end: part.body.len(),
                    key: record.key.clone(),
                    headers: record.headers.clone(),
                });
            }
        }
        let next_offset = batch.last_offset.map(next_offset_after);
        let sent = parts.iter().filter(|p| !p.records.is_empty()).count();
        let seq = self.order.push(next_offset, sent);
        for (lane, mut part) in self.lanes.iter().zip(parts) {
            if part.records.is_empty() {
                continue;
            }
            part.counts = count(&part.body).unwrap_or(batch.counts);
            part.tenant.clone_from(&batch.tenant);
            part.first_at = batch.first_at;
            part.last_offset = batch.last_offset;
            if lane.send(Part { seq, batch: part }).is_err() {
                return Err(EgressError::Thread("an egress lane stopped".into()));
            }
        }
        Ok(self.order.advance())
    }

    /// Waits for the next delivered part; returns the position to store
    /// when it completed a delivered prefix.
    pub async fn delivered(&mut self) -> Result<Option<i64>, EgressError> {
        match self.delivered.recv().await {
            Some(seq) => {
                self.order.delivered(seq);
                Ok(self.order.advance())
            }
            None => Err(self.failure().await),
        }
    }

    /// Stops the lanes after their current request and returns the
    /// position to store for what they delivered.
    pub async fn stop(mut self) -> Result<Option<i64>, EgressError> {
        self.lanes.clear();
        let mut failed = None;
        while let Some(joined) = self.tasks.join_next().await {
            if let Some(e) = lane_error(joined) {
                failed.get_or_insert(e);
            }
        }
        let mut position = None;
        while let Ok(seq) = self.delivered.try_recv() {
            self.order.delivered(seq);
            position = self.order.advance().or(position);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(position),
        }
    }

    /// Why the lanes stopped on their own.
    async fn failure(&mut self) -> EgressError {
        while let Some(joined) = self.tasks.join_next().await {
            if let Some(e) = lane_error(joined) {
                return e;
            }
        }
        EgressError::Thread("the egress lanes stopped".into())
    }
}

fn lane_error(
    joined: Result<Result<(), EgressError>, tokio::task::JoinError>,
) -> Option<EgressError> {
    match joined {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(EgressError::Thread(format!("an egress lane failed: {e}"))),
    }
}

/// One lane: sends its waiting parts as one request at a time, each until
/// delivered or dead-lettered, and reports their sequence numbers.
async fn lane(
    mut delivery: Delivery,
    mut parts: mpsc::UnboundedReceiver<Part>,
    delivered: mpsc::UnboundedSender<u64>,
    limits: BatchLimits,
    shutdown: CancellationToken,
) -> Result<(), EgressError> {
    let mut next: Option<Part> = None;
    loop {
        let first = match next.take() {
            Some(part) => part,
            None => match parts.recv().await {
                Some(part) => part,
                None => return Ok(()),
            },
        };
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let mut seqs = vec![first.seq];
        let mut request = first.batch;
        while !request.full(&limits) {
            let Ok(part) = parts.try_recv() else { break };
            if !request.fits_batch(&part.batch, &limits) {
                next = Some(part);
                break;
            }
            seqs.push(part.seq);
            request.append(part.batch);
        }
        if !delivery.deliver(&request, &shutdown).await? {
            return Ok(());
        }
        for seq in seqs {
            // The worker gone means it stopped: nothing to report to.
            let _ = delivered.send(seq);
        }
    }
}
