//! What a route made of a series' labels, remembered per router worker.
//!
//! A Prometheus sender writes the same series every scrape interval, and
//! relabeling, the task id and the label encoding depend on the labels
//! alone. So the fast path (`route::route_fast`) looks the series' labels
//! up here first: a hit gives the relabeled labels already encoded as
//! `TimeSeries.labels`, the task id and the partition key (or that the
//! rules drop the series), and skips the rules, the task hash and the
//! encoding.
//!
//! The key is the series' labels before relabeling as `TimeSeries.labels`
//! entries: the request's own bytes of them when they are one run of
//! entries (`FastSeries::label_run`, as Prometheus writes them), else
//! encoded anew (`entry::put_labels`). Those bytes decode to exactly the
//! series' labels, so different labels never give the same key; the same
//! labels written two ways give two keys, which only costs a miss. A hit
//! compares all the bytes, so a hash collision is only a miss.
//!
//! Memory is bounded by `router.relabel_cache_bytes` per route and worker:
//! one arena holds every key and value, a table of slots points into it,
//! and when the next entry would pass the budget all of it is forgotten at
//! once (counted in `streamroute_router_relabel_cache_clears_total`). The
//! buffers stay, so once they have grown a miss allocates nothing; the
//! arena grows by doubling but never past the budget (the entries and
//! slots, about a sixth of it, grow by doubling).
//! Lookups probe at most [`MAX_PROBE`] slots, so labels crafted to collide
//! cost a bounded number of comparisons and are just routed uncached.
//!
//! Depends on `aggregation::Routed` and xxh3 only.

use std::ops::Range;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::aggregation::Routed;

/// Slots looked at before giving up on a key.
pub const MAX_PROBE: usize = 32;

/// What a route did with a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'c> {
    /// Its rules dropped it.
    Dropped,
    /// It is routed.
    Kept(Kept<'c>),
}

/// A routed series, as remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept<'c> {
    /// Its stream_task_id.
    pub task: u32,
    /// How the aggregation rules decided.
    pub routed: Routed,
    /// `jump_hash(partition_key, partitions)` is its partition.
    pub partition_key: u64,
    /// Its labels after relabeling, with the task label, encoded as
    /// `TimeSeries.labels`.
    pub labels: &'c [u8],
    /// Its `__name__` after relabeling, "" without one.
    pub name: &'c str,
}

#[derive(Debug, Clone)]
struct Entry {
    hash: u64,
    key: Range<usize>,
    outcome: Stored,
}

#[derive(Debug, Clone)]
enum Stored {
    Dropped,
    Kept {
        task: u32,
        routed: Routed,
        partition_key: u64,
        labels: Range<usize>,
        /// Within the arena too (a copy, so the name needs no parsing).
        name: Range<usize>,
    },
}

/// The memo of one route on one worker.
#[derive(Debug)]
pub struct RelabelCache {
    /// `router.relabel_cache_bytes`: 0 keeps nothing.
    budget: usize,
    /// Of the hash: random per cache, so collisions cannot be planned
    /// across processes.
    seed: u64,
    /// Index + 1 into `entries`; 0 is empty. A power of two long.
    slots: Vec<u32>,
    entries: Vec<Entry>,
    arena: Vec<u8>,
    /// The route (see `Route::id`) whose outcomes these are.
    route: u64,
}

/// Where a key that was not found would go.
#[derive(Debug, Clone, Copy)]
pub struct Miss {
    hash: u64,
    /// The empty slot it may take; None when the probe found none.
    slot: Option<usize>,
}

impl RelabelCache {
    /// An empty cache of at most `budget` bytes for the route `route`.
    pub fn new(budget: usize, route: u64) -> RelabelCache {
        RelabelCache {
            budget,
            seed: rand::random(),
            slots: Vec::new(),
            entries: Vec::new(),
            arena: Vec::new(),
            route,
        }
    }

    /// Forgets everything when the outcomes are of another route than
    /// `route` (the rules were reloaded).
    pub fn serve(&mut self, route: u64) {
        if self.route != route {
            self.clear();
            self.route = route;
        }
    }

    /// What was remembered for `key`, else where it would go.
    pub fn get(&self, key: &[u8]) -> Result<Outcome<'_>, Miss> {
        let hash = xxh3_64_with_seed(key, self.seed);
        if self.slots.is_empty() {
            return Err(Miss { hash, slot: None });
        }
        let mask = self.slots.len() - 1;
        for probe in 0..MAX_PROBE.min(self.slots.len()) {
            let slot = (hash as usize).wrapping_add(probe) & mask;
            let Some(index) = self.slots[slot].checked_sub(1) else {
                return Err(Miss {
                    hash,
                    slot: Some(slot),
                });
            };
            let entry = &self.entries[index as usize];
            if entry.hash == hash && self.arena.get(entry.key.clone()) == Some(key) {
                return Ok(self.outcome(entry));
            }
        }
        Err(Miss { hash, slot: None })
    }

    /// Remembers `outcome` for `key`, which `get` did not find (`miss`).
    /// Returns whether it forgot everything to make room.
    pub fn insert(&mut self, key: &[u8], miss: Miss, outcome: Outcome<'_>) -> bool {
        let value_len = match outcome {
            Outcome::Dropped => 0,
            Outcome::Kept(k) => k.labels.len() + k.name.len(),
        };
        let cost = key.len() + value_len + std::mem::size_of::<Entry>() + 2 * 4;
        if cost > self.budget {
            return false;
        }
        let mut cleared = false;
        if self.used() + cost > self.budget {
            self.clear();
            cleared = true;
        }
        // Keep the table at most half full: grow it (and place every entry
        // again) before it passes that.
        let grown = (self.entries.len() + 1) * 2 > self.slots.len();
        if grown {
            self.grow();
        }
        let slot = match (cleared || grown, miss.slot) {
            (false, Some(slot)) => slot,
            _ => match self.free_slot(miss.hash) {
                Some(slot) => slot,
                None => return cleared,
            },
        };
        let key = self.push(key);
        let outcome = match outcome {
            Outcome::Dropped => Stored::Dropped,
            Outcome::Kept(k) => Stored::Kept {
                task: k.task,
                routed: k.routed,
                partition_key: k.partition_key,
                labels: self.push(k.labels),
                name: self.push(k.name.as_bytes()),
            },
        };
        self.entries.push(Entry {
            hash: miss.hash,
            key,
            outcome,
        });
        self.slots[slot] = self.entries.len() as u32;
        cleared
    }

    /// Bytes held: the arena, the entries and the slots in use.
    pub fn used(&self) -> usize {
        self.arena.len() + self.entries.len() * std::mem::size_of::<Entry>() + self.slots.len() * 4
    }

    fn clear(&mut self) {
        self.arena.clear();
        self.entries.clear();
        self.slots.fill(0);
    }

    fn grow(&mut self) {
        let len = (self.slots.len() * 2).max(1024);
        self.slots.clear();
        self.slots.resize(len, 0);
        for index in 0..self.entries.len() {
            // One that finds no slot near enough is only forgotten (its
            // bytes stay in the arena until the next clear).
            if let Some(slot) = self.free_slot(self.entries[index].hash) {
                self.slots[slot] = index as u32 + 1;
            }
        }
    }

    fn free_slot(&self, hash: u64) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        (0..MAX_PROBE.min(self.slots.len()))
            .map(|probe| (hash as usize).wrapping_add(probe) & mask)
            .find(|&slot| self.slots[slot] == 0)
    }

    fn push(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.arena.len();
        let need = start + bytes.len();
        if need > self.arena.capacity() {
            // Doubling, as a Vec grows, but never past the budget: what is
            // kept never passes it, so neither does the memory held.
            let target = (self.arena.capacity() * 2).min(self.budget).max(need);
            self.arena.reserve_exact(target - start);
        }
        self.arena.extend_from_slice(bytes);
        start..need
    }

    fn outcome(&self, entry: &Entry) -> Outcome<'_> {
        match &entry.outcome {
            Stored::Dropped => Outcome::Dropped,
            Stored::Kept {
                task,
                routed,
                partition_key,
                labels,
                name,
            } => Outcome::Kept(Kept {
                task: *task,
                routed: *routed,
                partition_key: *partition_key,
                labels: self.arena.get(labels.clone()).unwrap_or_default(),
                // Copied from a &str, so always UTF-8.
                name: std::str::from_utf8(self.arena.get(name.clone()).unwrap_or_default())
                    .unwrap_or_default(),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn kept<'c>(task: u32, labels: &'c [u8], name: &'c str) -> Outcome<'c> {
        Outcome::Kept(Kept {
            task,
            routed: Routed::Unmatched,
            partition_key: u64::from(task) * 7,
            labels,
            name,
        })
    }

    fn remember(cache: &mut RelabelCache, key: &[u8], outcome: Outcome<'_>) -> bool {
        let miss = cache.get(key).unwrap_err();
        cache.insert(key, miss, outcome)
    }

    #[test]
    fn gives_back_what_it_was_told_for_each_key() {
        let mut cache = RelabelCache::new(1 << 20, 1);
        let keys: Vec<Vec<u8>> = (0..5_000u32).map(|i| i.to_string().into_bytes()).collect();
        for (i, key) in keys.iter().enumerate() {
            let outcome = if i % 3 == 0 {
                Outcome::Dropped
            } else {
                kept(i as u32, key, "up")
            };
            assert!(!remember(&mut cache, key, outcome));
        }
        for (i, key) in keys.iter().enumerate() {
            let found = cache.get(key).unwrap();
            if i % 3 == 0 {
                assert_eq!(found, Outcome::Dropped);
            } else {
                assert_eq!(found, kept(i as u32, key, "up"));
            }
        }
        assert!(cache.get(b"not there").is_err());
        // A key that is a prefix of another is another key.
        assert!(cache.get(b"1").is_ok() && cache.get(b"").is_err());
    }

    #[test]
    fn forgets_everything_when_the_budget_is_reached() {
        let mut cache = RelabelCache::new(48 << 10, 1);
        let mut cleared_at = None;
        // Long keys: the arena is most of what is kept.
        let pad = "x".repeat(500);
        let long = |i: u32| format!("series-{i}-{pad}");
        for i in 0..10_000u32 {
            let key = long(i);
            if remember(&mut cache, key.as_bytes(), kept(i, b"labels", "n")) {
                cleared_at = Some(i);
                break;
            }
        }
        let at = cleared_at.expect("a 48 KiB budget fills up");
        assert!(cache.used() <= 48 << 10);
        // The arena held at most the budget, not the doubling past it.
        assert!(
            cache.arena.capacity() <= 48 << 10,
            "{}",
            cache.arena.capacity()
        );
        // Only the entry that made it forget is left.
        assert!(cache.get(long(at).as_bytes()).is_ok());
        assert!(cache.get(long(0).as_bytes()).is_err());
    }

    #[test]
    fn no_budget_keeps_nothing_and_another_route_forgets() {
        let mut none = RelabelCache::new(0, 1);
        assert!(!remember(&mut none, b"k", Outcome::Dropped));
        assert!(none.get(b"k").is_err());

        let mut cache = RelabelCache::new(1 << 20, 1);
        remember(&mut cache, b"k", Outcome::Dropped);
        cache.serve(1);
        assert!(cache.get(b"k").is_ok());
        cache.serve(2);
        assert!(cache.get(b"k").is_err());
    }

    #[test]
    fn a_full_probe_is_a_miss_that_is_not_kept() {
        let mut cache = RelabelCache::new(1 << 20, 1);
        remember(&mut cache, b"first", Outcome::Dropped);
        // Fill every slot the probe of `key` would look at.
        let key = b"crafted";
        let hash = xxh3_64_with_seed(key, cache.seed);
        let mask = cache.slots.len() - 1;
        for probe in 0..MAX_PROBE {
            cache.slots[(hash as usize + probe) & mask] = 1;
        }
        let miss = cache.get(key).unwrap_err();
        assert!(miss.slot.is_none());
        cache.insert(key, miss, Outcome::Dropped);
        assert!(cache.get(key).is_err());
    }
}
