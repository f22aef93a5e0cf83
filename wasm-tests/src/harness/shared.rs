//! Process-wide state shared by every worker (sandbox) of one emulated Envoy:
//! the shared-data key/value store with compare-and-swap, shared queues and
//! metrics (Envoy's stats are process-wide too).
//!
//! Semantics follow Envoy (proxy-wasm-cpp-host `SharedData`): one CAS counter
//! for the whole store, starting at 1 and skipping 0; a set with `cas == 0` is
//! unconditional; a set with a non-zero `cas` fails with `CasMismatch` only if
//! the key exists with a different `cas` (a missing key is always written).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::abi::{MetricType, Status};

/// A handle on the shared store; clones share the same data, so two sandboxes
/// built with clones of one `SharedData` behave like two workers of one Envoy.
#[derive(Clone, Default, Debug)]
pub struct SharedData {
    inner: Arc<Mutex<SharedInner>>,
}

#[derive(Debug)]
struct SharedInner {
    entries: BTreeMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    forced_mismatches: u32,
    cas_writes: u64,
    queues: Vec<Queue>,
    queue_ids: HashMap<(String, String), u32>,
    metrics: Vec<Metric>,
}

#[derive(Debug)]
struct Metric {
    name: String,
    kind: MetricType,
    value: u64,
    samples: Vec<u64>,
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Vec<u8>>,
}

impl Default for SharedInner {
    fn default() -> Self {
        SharedInner {
            entries: BTreeMap::new(),
            next_cas: 1,
            forced_mismatches: 0,
            cas_writes: 0,
            queues: Vec::new(),
            queue_ids: HashMap::new(),
            metrics: Vec::new(),
        }
    }
}

/// Why a shared-data write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// The `cas` did not match (or a mismatch was forced by the test).
    CasMismatch,
}

impl SharedData {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, SharedInner> {
        // A test that panicked while holding the lock must not poison others.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value and its CAS token, as `proxy_get_shared_data` returns them.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.lock().entries.get(key).cloned()
    }

    /// The value alone.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.get(key).map(|(value, _)| value)
    }

    /// All keys currently stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().entries.keys().cloned().collect()
    }

    /// Writes with Envoy's CAS rules (see the module docs).
    pub fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        let mut inner = self.lock();
        if cas != 0 {
            inner.cas_writes += 1;
            if inner.forced_mismatches > 0 {
                inner.forced_mismatches -= 1;
                return Err(SetError::CasMismatch);
            }
            if let Some((_, current)) = inner.entries.get(key) {
                if *current != cas {
                    return Err(SetError::CasMismatch);
                }
            }
        }
        let next = inner.take_cas();
        inner.entries.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }

    /// Makes the next `n` CAS-checked writes (non-zero `cas`) fail with
    /// `CasMismatch`, as if another worker had written in between.
    pub fn force_cas_mismatches(&self, n: u32) {
        self.lock().forced_mismatches = n;
    }

    /// Forced mismatches not yet consumed.
    pub fn pending_forced_mismatches(&self) -> u32 {
        self.lock().forced_mismatches
    }

    /// How many writes carried a non-zero `cas` (attempts, successful or not).
    pub fn cas_writes(&self) -> u64 {
        self.lock().cas_writes
    }

    /// Registers (or opens) the queue `name` of VM `vm_id`; returns its id.
    pub fn register_queue(&self, vm_id: &str, name: &str) -> u32 {
        let mut inner = self.lock();
        let key = (vm_id.to_string(), name.to_string());
        if let Some(id) = inner.queue_ids.get(&key) {
            return *id;
        }
        inner.queues.push(Queue { items: VecDeque::new() });
        // Ids start at 1 so that 0 never names a queue.
        let id = u32::try_from(inner.queues.len()).unwrap_or(u32::MAX);
        inner.queue_ids.insert(key, id);
        id
    }

    /// The id of an existing queue.
    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.lock()
            .queue_ids
            .get(&(vm_id.to_string(), name.to_string()))
            .copied()
    }

    /// Appends to a queue; `false` if the id is unknown.
    pub fn enqueue(&self, id: u32, value: &[u8]) -> bool {
        let mut inner = self.lock();
        match inner.queue_mut(id) {
            Some(queue) => {
                queue.items.push_back(value.to_vec());
                true
            }
            None => false,
        }
    }

    /// Pops the front of a queue: `None` if the id is unknown, `Some(None)` if empty.
    pub fn dequeue(&self, id: u32) -> Option<Option<Vec<u8>>> {
        let mut inner = self.lock();
        inner.queue_mut(id).map(|queue| queue.items.pop_front())
    }
}

/// A metric's current value, as tests read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricValue {
    /// A counter's total.
    Counter(u64),
    /// A gauge's level.
    Gauge(u64),
    /// Every sample a histogram recorded, in order.
    Histogram(Vec<u64>),
}

impl SharedData {
    /// Defines (or finds, by name: Envoy dedups stats by name) a metric.
    pub fn define_metric(&self, kind: MetricType, name: &str) -> u32 {
        let mut inner = self.lock();
        let found = inner.metrics.iter().position(|m| m.name == name && m.kind == kind);
        let index = match found {
            Some(index) => index,
            None => {
                inner.metrics.push(Metric {
                    name: name.to_string(),
                    kind,
                    value: 0,
                    samples: Vec::new(),
                });
                inner.metrics.len() - 1
            }
        };
        u32::try_from(index + 1).unwrap_or(u32::MAX)
    }

    /// `proxy_increment_metric`: counters refuse negative deltas, histograms
    /// cannot be incremented.
    pub fn increment_metric(&self, id: u32, delta: i64) -> Status {
        let mut inner = self.lock();
        let Some(metric) = inner.metric_mut(id) else {
            return Status::NotFound;
        };
        match metric.kind {
            MetricType::Counter if delta < 0 => Status::BadArgument,
            MetricType::Counter | MetricType::Gauge => {
                metric.value = if delta < 0 {
                    metric.value.saturating_sub(delta.unsigned_abs())
                } else {
                    metric.value.saturating_add(delta.unsigned_abs())
                };
                Status::Ok
            }
            MetricType::Histogram => Status::BadArgument,
        }
    }

    /// `proxy_record_metric`: a gauge is set, a histogram gets a sample, a
    /// counter is raised to the value (Envoy never lowers a counter).
    pub fn record_metric(&self, id: u32, value: u64) -> Status {
        let mut inner = self.lock();
        let Some(metric) = inner.metric_mut(id) else {
            return Status::NotFound;
        };
        match metric.kind {
            MetricType::Counter => metric.value = metric.value.max(value),
            MetricType::Gauge => metric.value = value,
            MetricType::Histogram => metric.samples.push(value),
        }
        Status::Ok
    }

    /// `proxy_get_metric`: histograms have no single value (BadArgument).
    pub fn get_metric(&self, id: u32) -> Result<u64, Status> {
        let mut inner = self.lock();
        let metric = inner.metric_mut(id).ok_or(Status::NotFound)?;
        match metric.kind {
            MetricType::Histogram => Err(Status::BadArgument),
            MetricType::Counter | MetricType::Gauge => Ok(metric.value),
        }
    }

    /// Every metric by name.
    pub fn metrics(&self) -> BTreeMap<String, MetricValue> {
        self.lock()
            .metrics
            .iter()
            .map(|m| {
                let value = match m.kind {
                    MetricType::Counter => MetricValue::Counter(m.value),
                    MetricType::Gauge => MetricValue::Gauge(m.value),
                    MetricType::Histogram => MetricValue::Histogram(m.samples.clone()),
                };
                (m.name.clone(), value)
            })
            .collect()
    }
}

impl SharedInner {
    fn metric_mut(&mut self, id: u32) -> Option<&mut Metric> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.metrics.get_mut(index)
    }

    fn take_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(1);
        if self.next_cas == 0 {
            self.next_cas = 1;
        }
        cas
    }

    fn queue_mut(&mut self, id: u32) -> Option<&mut Queue> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.queues.get_mut(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_follows_envoy() {
        let store = SharedData::new();
        assert_eq!(store.set("k", b"a", 0), Ok(()));
        let (_, cas) = store.get("k").unwrap_or_default();
        assert_eq!(cas, 1);
        assert_eq!(store.set("k", b"b", cas + 7), Err(SetError::CasMismatch));
        assert_eq!(store.set("k", b"b", cas), Ok(()));
        assert_eq!(store.get("k"), Some((b"b".to_vec(), 2)));
        // A missing key ignores the cas.
        assert_eq!(store.set("new", b"x", 99), Ok(()));
        store.force_cas_mismatches(1);
        assert_eq!(store.set("k", b"c", 2), Err(SetError::CasMismatch));
        assert_eq!(store.set("k", b"c", 2), Ok(()));
        // Unconditional writes do not consume forced mismatches.
        store.force_cas_mismatches(1);
        assert_eq!(store.set("k", b"d", 0), Ok(()));
        assert_eq!(store.pending_forced_mismatches(), 1);
    }

    #[test]
    fn metrics_follow_envoy() {
        let store = SharedData::new();
        let c = store.define_metric(MetricType::Counter, "c");
        assert_eq!(store.define_metric(MetricType::Counter, "c"), c);
        let g = store.define_metric(MetricType::Gauge, "g");
        let h = store.define_metric(MetricType::Histogram, "h");
        assert_eq!(store.increment_metric(c, 2), Status::Ok);
        assert_eq!(store.increment_metric(c, -1), Status::BadArgument);
        assert_eq!(store.increment_metric(g, -1), Status::Ok);
        assert_eq!(store.record_metric(g, 7), Status::Ok);
        assert_eq!(store.record_metric(h, 5), Status::Ok);
        assert_eq!(store.get_metric(c), Ok(2));
        assert_eq!(store.get_metric(h), Err(Status::BadArgument));
        assert_eq!(store.get_metric(99), Err(Status::NotFound));
        let all = store.metrics();
        assert_eq!(all.get("g"), Some(&MetricValue::Gauge(7)));
        assert_eq!(all.get("h"), Some(&MetricValue::Histogram(vec![5])));
    }

    #[test]
    fn queues() {
        let store = SharedData::new();
        let id = store.register_queue("vm", "q");
        assert_eq!(store.register_queue("vm", "q"), id);
        assert_eq!(store.resolve_queue("vm", "q"), Some(id));
        assert_eq!(store.resolve_queue("vm", "other"), None);
        assert!(store.enqueue(id, b"1"));
        assert_eq!(store.dequeue(id), Some(Some(b"1".to_vec())));
        assert_eq!(store.dequeue(id), Some(None));
        assert_eq!(store.dequeue(id + 1), None);
    }
}
