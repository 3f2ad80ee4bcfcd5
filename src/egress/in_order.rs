//! Which position a partition may store while several of its requests are
//! in flight (`egress.max_in_flight`): every collected request is split
//! over the partition's lanes, the lanes deliver their parts in any
//! interleaving, and the position moves only past requests all of whose
//! parts are delivered, and every one before them too. Pure state.
//!
//! May depend on: nothing in the crate.

use std::collections::VecDeque;

/// The requests not yet fully delivered, oldest first.
#[derive(Debug, Default)]
pub struct InOrder {
    waiting: VecDeque<Waiting>,
    /// Sequence number of the next request pushed.
    next_seq: u64,
}

#[derive(Debug)]
struct Waiting {
    seq: u64,
    /// Where the position goes once this request and all before it are
    /// delivered (None: it read no record, so it moves nothing).
    next_offset: Option<i64>,
    /// Parts not yet delivered.
    parts_left: usize,
}

impl InOrder {
    /// A request of `parts` parts (0: nothing to send), after which the
    /// position is `next_offset`. Returns its sequence number.
    pub fn push(&mut self, next_offset: Option<i64>, parts: usize) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.waiting.push_back(Waiting {
            seq,
            next_offset,
            parts_left: parts,
        });
        seq
    }

    /// One part of request `seq` is delivered.
    pub fn delivered(&mut self, seq: u64) {
        let Some(front) = self.waiting.front() else {
            return;
        };
        let Some(index) = seq.checked_sub(front.seq) else {
            return;
        };
        if let Some(w) = self.waiting.get_mut(index as usize) {
            w.parts_left = w.parts_left.saturating_sub(1);
        }
    }

    /// Removes the delivered requests at the front and returns the
    /// position after the last of them that read records, if any.
    pub fn advance(&mut self) -> Option<i64> {
        let mut position = None;
        while self.waiting.front().is_some_and(|w| w.parts_left == 0) {
            if let Some(w) = self.waiting.pop_front() {
                position = w.next_offset.or(position);
            }
        }
        position
    }

    /// Requests pushed and not yet removed by [`Self::advance`].
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_moves_only_past_a_delivered_prefix() {
        let mut o = InOrder::default();
        let a = o.push(Some(10), 2);
        let b = o.push(Some(20), 1);
        let c = o.push(Some(30), 3);
        // b first: a is not delivered, so nothing moves.
        o.delivered(b);
        assert_eq!(o.advance(), None);
        o.delivered(a);
        assert_eq!(o.advance(), None, "a has one part left");
        o.delivered(a);
        assert_eq!(o.advance(), Some(20), "a and b");
        assert_eq!(o.len(), 1);
        o.delivered(c);
        o.delivered(c);
        assert_eq!(o.advance(), None);
        o.delivered(c);
        assert_eq!(o.advance(), Some(30));
        assert!(o.is_empty());
        // Nothing waiting: nothing moves, and stray sequence numbers are ignored.
        o.delivered(c);
        o.delivered(99);
        assert_eq!(o.advance(), None);
    }

    #[test]
    fn requests_without_parts_or_records_complete_in_their_turn() {
        let mut o = InOrder::default();
        let a = o.push(Some(5), 1);
        // Read only markers or a dead-lettered record: no parts.
        o.push(Some(7), 0);
        // Sent nothing and read nothing.
        o.push(None, 0);
        assert_eq!(o.advance(), None, "behind a");
        o.delivered(a);
        assert_eq!(o.advance(), Some(7), "the last one that read records");
        assert!(o.is_empty());
        o.push(None, 0);
        assert_eq!(o.advance(), None);
        assert!(o.is_empty());
    }
}
