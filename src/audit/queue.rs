//! The bounded per-worker record queue, its in-flight batches and the retry
//! backoff. Pure bookkeeping: [`super::shipper::Shipper`] drives it from the
//! host's ticks and call answers.
//!
//! Bound: records waiting plus records in flight never exceed `max_queue`. A
//! record pushed beyond it is dropped (tail drop: what is already queued keeps its
//! place, so a chain shows one gap rather than many) and counted. Records of a
//! failed batch go back to the front of the queue, in order, so within the bound a
//! collector outage loses nothing.

use std::collections::VecDeque;

/// One encoded record (an NDJSON line or an OTLP logRecord object).
pub type Item = Vec<u8>;

/// What happened to a pushed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued.
    Queued,
    /// Dropped because the queue is full. `episode_start` is true for the first
    /// drop since the queue last had room: log once per episode, not per record.
    Dropped {
        /// First drop of this overflow episode.
        episode_start: bool,
    },
}

/// A batch handed to the host, waiting for its answer.
#[derive(Debug, Clone)]
struct InFlight {
    call_id: u32,
    items: Vec<Item>,
    deadline_ms: u64,
}

/// The bounded queue and its in-flight batches.
#[derive(Debug, Clone)]
pub struct RecordQueue {
    pending: VecDeque<Item>,
    in_flight: Vec<InFlight>,
    in_flight_records: usize,
    max_queue: usize,
    max_batch: usize,
    dropped: u64,
    overflowing: bool,
}

impl RecordQueue {
    /// A queue holding at most `max_queue` records, sent `max_batch` at a time.
    pub fn new(max_queue: usize, max_batch: usize) -> RecordQueue {
        RecordQueue {
            pending: VecDeque::new(),
            in_flight: Vec::new(),
            in_flight_records: 0,
            max_queue,
            max_batch: max_batch.max(1),
            dropped: 0,
            overflowing: false,
        }
    }

    /// Queues `item` if the bound allows.
    pub fn push(&mut self, item: Item) -> PushOutcome {
        if self.held() >= self.max_queue {
            self.dropped = self.dropped.saturating_add(1);
            let episode_start = !self.overflowing;
            self.overflowing = true;
            return PushOutcome::Dropped { episode_start };
        }
        self.overflowing = false;
        self.pending.push_back(item);
        PushOutcome::Queued
    }

    /// Records waiting plus records in flight.
    pub fn held(&self) -> usize {
        self.pending.len() + self.in_flight_records
    }

    /// Records waiting to be sent.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Batches waiting for an answer.
    pub fn in_flight_batches(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether batch `call_id` is awaiting its answer.
    pub fn is_in_flight(&self, call_id: u32) -> bool {
        self.in_flight.iter().any(|f| f.call_id == call_id)
    }

    /// Records dropped on overflow since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether a whole batch is waiting.
    pub fn has_full_batch(&self) -> bool {
        self.pending.len() >= self.max_batch
    }

    /// Removes the next batch (up to `max_batch` records, oldest first).
    pub fn take_batch(&mut self) -> Vec<Item> {
        let n = self.pending.len().min(self.max_batch);
        self.pending.drain(..n).collect()
    }

    /// Puts a batch that could not be started back at the front, in order.
    pub fn unsend(&mut self, items: Vec<Item>) {
        for item in items.into_iter().rev() {
            self.pending.push_front(item);
        }
    }

    /// Records that `items` are in flight as `call_id`, to be given up on at
    /// `deadline_ms` if the host never answers.
    pub fn sent(&mut self, call_id: u32, items: Vec<Item>, deadline_ms: u64) {
        self.in_flight_records += items.len();
        self.in_flight.push(InFlight { call_id, items, deadline_ms });
    }

    /// Removes the in-flight batch `call_id` and returns its records; `None` for an
    /// unknown id (a late answer to a batch already given up on).
    pub fn answered(&mut self, call_id: u32) -> Option<Vec<Item>> {
        let index = self.in_flight.iter().position(|f| f.call_id == call_id)?;
        let batch = self.in_flight.swap_remove(index);
        self.in_flight_records = self.in_flight_records.saturating_sub(batch.items.len());
        Some(batch.items)
    }

    /// Removes and returns the in-flight batches whose deadline has passed.
    pub fn expired(&mut self, now_ms: u64) -> Vec<Vec<Item>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight.get(i).is_some_and(|f| f.deadline_ms <= now_ms) {
                let batch = self.in_flight.swap_remove(i);
                self.in_flight_records = self.in_flight_records.saturating_sub(batch.items.len());
                out.push(batch.items);
            } else {
                i += 1;
            }
        }
        out
    }

    /// Puts the records of a failed batch back at the front, in order: they are
    /// the oldest, and they already count against the bound.
    pub fn retry(&mut self, items: Vec<Item>) {
        self.unsend(items);
    }
}

/// Exponential backoff after failures: `initial`, doubled per consecutive
/// failure, capped at `max`; reset by a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    failures: u32,
    retry_at_ms: u64,
}

impl Backoff {
    /// A backoff that is not waiting.
    pub fn new(initial_ms: u64, max_ms: u64) -> Backoff {
        Backoff { initial_ms, max_ms: max_ms.max(initial_ms), failures: 0, retry_at_ms: 0 }
    }

    /// Records a failure at `now_ms`; returns the wait before the next attempt.
    pub fn failed(&mut self, now_ms: u64) -> u64 {
        let wait =
            self.initial_ms.saturating_mul(2u64.saturating_pow(self.failures)).min(self.max_ms);
        self.failures = self.failures.saturating_add(1);
        self.retry_at_ms = now_ms.saturating_add(wait);
        wait
    }

    /// Records a success: the next failure waits `initial` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at_ms = 0;
    }

    /// Whether an attempt may be made at `now_ms`.
    pub fn ready(&self, now_ms: u64) -> bool {
        now_ms >= self.retry_at_ms
    }

    /// Consecutive failures so far (0: healthy).
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: usize) -> Item {
        n.to_string().into_bytes()
    }

    #[test]
    fn exactly_the_overflow_is_dropped_and_one_episode_is_reported() {
        let mut q = RecordQueue::new(10, 4);
        let outcomes: Vec<PushOutcome> = (0..15).map(|n| q.push(item(n))).collect();
        assert!(outcomes[..10].iter().all(|o| *o == PushOutcome::Queued));
        assert_eq!(outcomes[10], PushOutcome::Dropped { episode_start: true });
        assert!(outcomes[11..].iter().all(|o| *o == PushOutcome::Dropped { episode_start: false }));
        assert_eq!(q.dropped(), 5);
        assert_eq!(q.held(), 10);
    }

    #[test]
    fn a_new_episode_starts_after_the_queue_had_room() {
        let mut q = RecordQueue::new(2, 2);
        q.push(item(0));
        q.push(item(1));
        assert_eq!(q.push(item(2)), PushOutcome::Dropped { episode_start: true });
        let batch = q.take_batch();
        q.sent(1, batch, 100);
        // In-flight records still count against the bound.
        assert_eq!(q.push(item(3)), PushOutcome::Dropped { episode_start: false });
        q.answered(1);
        assert_eq!(q.push(item(4)), PushOutcome::Queued);
        q.push(item(5));
        assert_eq!(q.push(item(6)), PushOutcome::Dropped { episode_start: true });
        assert_eq!(q.dropped(), 3);
    }

    #[test]
    fn batches_are_oldest_first_and_failed_ones_go_back_to_the_front() {
        let mut q = RecordQueue::new(100, 3);
        for n in 0..7 {
            q.push(item(n));
        }
        let first = q.take_batch();
        assert_eq!(first, vec![item(0), item(1), item(2)]);
        q.sent(7, first, 1000);
        assert_eq!((q.pending(), q.held(), q.in_flight_batches()), (4, 7, 1));
        let back = q.answered(7).unwrap();
        q.retry(back);
        assert_eq!(q.take_batch(), vec![item(0), item(1), item(2)]);
        assert_eq!(q.take_batch(), vec![item(3), item(4), item(5)]);
        assert_eq!(q.take_batch(), vec![item(6)]);
        assert!(q.take_batch().is_empty());
    }

    #[test]
    fn unknown_answers_are_ignored_and_deadlines_expire() {
        let mut q = RecordQueue::new(100, 2);
        for n in 0..4 {
            q.push(item(n));
        }
        let a = q.take_batch();
        q.sent(1, a, 500);
        let b = q.take_batch();
        q.sent(2, b, 900);
        assert_eq!(q.answered(99), None);
        assert!(q.expired(499).is_empty());
        assert_eq!(q.expired(500), vec![vec![item(0), item(1)]]);
        assert_eq!(q.answered(1), None, "an expired batch is no longer in flight");
        assert_eq!(q.held(), 2);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(500, 4000);
        let waits: Vec<u64> = (0..7).map(|_| b.failed(0)).collect();
        assert_eq!(waits, vec![500, 1000, 2000, 4000, 4000, 4000, 4000]);
        b.succeeded();
        assert_eq!(b.failed(10_000), 500);
        assert!(!b.ready(10_499));
        assert!(b.ready(10_500));
    }

    #[test]
    fn backoff_never_overflows() {
        let mut b = Backoff::new(u64::MAX / 2, u64::MAX);
        for _ in 0..100 {
            assert!(b.failed(u64::MAX - 1) >= u64::MAX / 2);
        }
        assert!(!b.ready(0));
    }
}
