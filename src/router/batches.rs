//! The open transaction's batches: one task record in the making per
//! [`BatchKey`] (route, output partition, tenant), so a record never mixes
//! routes, partitions or tenants. Pure state, no Kafka.
//!
//! The batch-full rule lives here only ([`BatchLimits::full`]): a batch is
//! written once it holds `router.batch_max_samples` samples, or once one
//! more entry like the last would take it past `router.batch_max_bytes`.
//!
//! Depends on `route::Output` (the encoded batch) only.

use std::collections::HashMap;

use super::route::Output;

/// What a batch is for: a task record goes to one route's topic, one
/// partition of it, and carries one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    /// Index of the route in the router's configuration.
    pub route: usize,
    /// The task topic's partition.
    pub partition: u32,
    /// The tenant of the ingress records in it.
    pub tenant: Option<String>,
}

/// When a batch is full (`router.batch_max_samples`, `router.batch_max_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_samples: usize,
    pub max_bytes: usize,
}

impl BatchLimits {
    /// Whether `batch` is full: its float and histogram samples reached
    /// `max_samples`, or another entry of `next` bytes would take it past
    /// `max_bytes`.
    pub fn full(&self, batch: &Output, next: usize) -> bool {
        batch.samples + batch.histograms >= self.max_samples
            || batch.encoded.len() + next > self.max_bytes
    }
}

/// The batches of the open transaction, and which of them are full.
#[derive(Debug)]
pub struct Batches {
    limits: BatchLimits,
    open: HashMap<BatchKey, Output>,
    /// Keys that filled up since the last [`Batches::take_full`], in the
    /// order they did (a key may be listed twice).
    full: Vec<BatchKey>,
}

impl Batches {
    pub fn new(limits: BatchLimits) -> Batches {
        Batches {
            limits,
            open: HashMap::new(),
            full: Vec::new(),
        }
    }

    /// Appends an entry of `len` encoded bytes to `key`'s batch with
    /// `append`, and notes the batch when that filled it.
    pub fn add(&mut self, key: BatchKey, len: usize, append: impl FnOnce(&mut Output)) {
        // Looked up first: the key is cloned only for a new batch.
        let batch = match self.open.get_mut(&key) {
            Some(batch) => batch,
            None => self.open.entry(key.clone()).or_default(),
        };
        append(batch);
        if self.limits.full(batch, len) {
            self.full.push(key);
        }
    }

    /// Takes the batches that filled up, in the order they did.
    pub fn take_full(&mut self) -> Vec<(BatchKey, Output)> {
        let keys = std::mem::take(&mut self.full);
        keys.into_iter()
            .filter_map(|key| self.open.remove_entry(&key))
            .collect()
    }

    /// Takes every batch (the end of a transaction).
    pub fn take_all(&mut self) -> Vec<(BatchKey, Output)> {
        self.full.clear();
        self.open.drain().collect()
    }

    /// Series waiting in open batches, per route (of `routes`).
    pub fn buffered_series(&self, routes: usize) -> Vec<usize> {
        let mut buffered = vec![0usize; routes];
        for (key, batch) in &self.open {
            buffered[key.route] += batch.series;
        }
        buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(route: usize, partition: u32, tenant: Option<&str>) -> BatchKey {
        BatchKey {
            route,
            partition,
            tenant: tenant.map(str::to_string),
        }
    }

    /// An entry of `len` bytes and `samples` samples.
    fn entry(len: usize, samples: usize) -> impl FnOnce(&mut Output) {
        move |b: &mut Output| {
            b.encoded.extend(std::iter::repeat(0).take(len));
            b.series += 1;
            b.samples += samples;
        }
    }

    const LIMITS: BatchLimits = BatchLimits {
        max_samples: 10,
        max_bytes: 100,
    };

    #[test]
    fn a_batch_is_full_at_max_samples_or_when_the_next_entry_would_pass_max_bytes() {
        let batch = |len: usize, samples: usize| Output {
            encoded: vec![0; len],
            samples,
            ..Output::default()
        };
        assert!(!LIMITS.full(&batch(0, 9), 0));
        assert!(LIMITS.full(&batch(0, 10), 0));
        let histograms = Output {
            histograms: 4,
            ..batch(0, 6)
        };
        assert!(LIMITS.full(&histograms, 0), "histogram samples count too");
        assert!(!LIMITS.full(&batch(60, 1), 40), "exactly max_bytes fits");
        assert!(LIMITS.full(&batch(60, 1), 41));
    }

    #[test]
    fn batches_are_kept_apart_by_route_partition_and_tenant() {
        let mut batches = Batches::new(LIMITS);
        for k in [
            key(0, 0, None),
            key(0, 1, None),
            key(1, 0, None),
            key(0, 0, Some("a")),
            key(0, 0, None),
        ] {
            batches.add(k, 10, entry(10, 1));
        }
        assert_eq!(batches.buffered_series(2), [4, 1]);
        assert!(batches.take_full().is_empty());
        let mut all = batches.take_all();
        all.sort_by_key(|(k, _)| (k.route, k.partition, k.tenant.clone()));
        let series: Vec<(BatchKey, usize)> = all.into_iter().map(|(k, b)| (k, b.series)).collect();
        assert_eq!(
            series,
            [
                (key(0, 0, None), 2),
                (key(0, 0, Some("a")), 1),
                (key(0, 1, None), 1),
                (key(1, 0, None), 1)
            ]
        );
        assert_eq!(batches.buffered_series(2), [0, 0]);
    }

    #[test]
    fn full_batches_are_taken_in_the_order_they_filled_and_once() {
        let mut batches = Batches::new(LIMITS);
        batches.add(key(0, 1, None), 10, entry(10, 9));
        batches.add(key(0, 2, None), 50, entry(50, 1));
        batches.add(key(0, 2, None), 50, entry(50, 1)); // 100 + 50 > 100
        batches.add(key(0, 1, None), 10, entry(10, 1)); // 10 samples
        batches.add(key(0, 1, None), 1, |_| {}); // listed again, taken once
        let full: Vec<(u32, usize)> = batches
            .take_full()
            .into_iter()
            .map(|(k, b)| (k.partition, b.encoded.len()))
            .collect();
        assert_eq!(full, [(2, 100), (1, 20)]);
        assert!(batches.take_full().is_empty());
        assert!(batches.take_all().is_empty());
    }
}
