//! The `stream_task_id` ("dual hashmod"): series → task → partition.
//!
//! 1. A series' task is `labels_hash(task labels) % task_count`, where the
//!    task labels are the configured subset (or all labels), sorted by name,
//!    never including the task label itself — so re-routing a series that
//!    already carries `stream_task_id` gives the same task.
//! 2. A task's partition is `jump_hash(task_id, partitions)`.
//!
//! The hash is Prometheus' label hash (`labels.StableHash`, and
//! `Labels.Hash()` of the slice-based label implementation): xxHash64, seed
//! 0, over `name 0xff value 0xff` for each label in name order.
//!
//! Invariants: label slices are sorted by name with unique names;
//! [`inject_task_label`] keeps them so.

use serde::Deserialize;
use xxhash_rust::xxh64::{xxh64, Xxh64};

use crate::relabel::LabelPair;
use crate::remote_write::cmp_names;

/// Default name of the injected task label.
pub const DEFAULT_TASK_LABEL: &str = "stream_task_id";

/// Byte written after every name and every value (Prometheus' `sep`).
const SEP: u8 = 0xff;

/// Label sets whose encoding fits this buffer are hashed in one shot from
/// the stack (as Prometheus does with its 1 KiB buffer); larger ones stream.
const STACK_BUF: usize = 1024;

/// How series are assigned to stream tasks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskIdConfig {
    /// Number of tasks; task ids are `0..task_count`.
    pub task_count: u32,
    /// Labels that identify a task's series; `None` means all labels.
    #[serde(default)]
    pub task_labels: Option<Vec<String>>,
    /// Labels left out of the hash (vmagent's `shardByURL.ignoreLabels`);
    /// only used when `task_labels` is `None`.
    #[serde(default)]
    pub task_labels_without: Vec<String>,
    /// Name of the injected task label.
    #[serde(default = "default_label_name")]
    pub label_name: String,
}

fn default_label_name() -> String {
    DEFAULT_TASK_LABEL.to_owned()
}

impl TaskIdConfig {
    /// A config hashing all labels into `task_count` tasks, with the default
    /// label name.
    pub fn new(task_count: u32) -> Self {
        TaskIdConfig {
            task_count,
            task_labels: None,
            task_labels_without: Vec::new(),
            label_name: default_label_name(),
        }
    }
}

/// Prometheus' label-set hash of `labels` (sorted by name).
pub fn labels_hash(labels: &[(String, String)]) -> u64 {
    labels_hash_iter(labels.iter().map(|(n, v)| (n.as_str(), v.as_str())))
}

/// [`labels_hash`] over `(name, value)` pairs, which must come in name order.
/// Does not allocate.
pub fn labels_hash_iter<'a, I>(labels: I) -> u64
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut buf = [0u8; STACK_BUF];
    let mut len = 0;
    let mut labels = labels.into_iter();
    for (name, value) in labels.by_ref() {
        let end = len + name.len() + value.len() + 2;
        if end > STACK_BUF {
            // Too big for the buffer: stream the rest. xxHash64 streaming
            // gives the same result as hashing the concatenation.
            let mut hasher = Xxh64::new(0);
            hasher.update(&buf[..len]);
            write_label(&mut hasher, name, value);
            for (name, value) in labels {
                write_label(&mut hasher, name, value);
            }
            return hasher.digest();
        }
        buf[len..len + name.len()].copy_from_slice(name.as_bytes());
        len += name.len();
        buf[len] = SEP;
        len += 1;
        buf[len..len + value.len()].copy_from_slice(value.as_bytes());
        len += value.len();
        buf[len] = SEP;
        len += 1;
    }
    xxh64(&buf[..len], 0)
}

fn write_label(hasher: &mut Xxh64, name: &str, value: &str) {
    hasher.update(name.as_bytes());
    hasher.update(&[SEP]);
    hasher.update(value.as_bytes());
    hasher.update(&[SEP]);
}

/// The task of a series: the hash of its task labels (those of
/// `cfg.task_labels` present in the series, or all labels but
/// `cfg.task_labels_without`; never `cfg.label_name`) modulo
/// `cfg.task_count`. Returns 0 when `task_count` is
/// 0. `labels` must be sorted by name.
pub fn task_id<L: LabelPair>(labels: &[L], cfg: &TaskIdConfig) -> u32 {
    if cfg.task_count == 0 {
        return 0;
    }
    let selected = labels
        .iter()
        .map(|label| (label.name(), label.value()))
        .filter(|(name, _)| *name != cfg.label_name)
        .filter(|(name, _)| match &cfg.task_labels {
            Some(wanted) => wanted.iter().any(|w| w == name),
            None => !cfg.task_labels_without.iter().any(|w| w == name),
        });
    let task = labels_hash_iter(selected) % u64::from(cfg.task_count);
    // Lossless: the remainder is below task_count, a u32.
    task as u32
}

/// Sets label `name` to `task_id`, overwriting an existing value and keeping
/// `labels` sorted by name.
pub fn inject_task_label(labels: &mut Vec<(String, String)>, name: &str, task_id: u32) {
    inject_task_label_any(labels, name, task_id);
}

/// [`inject_task_label`] for any [`LabelPair`], e.g. remote-write labels.
pub fn inject_task_label_any<L: LabelPair>(labels: &mut Vec<L>, name: &str, task_id: u32) {
    inject_label(labels, L::from_parts(name.to_owned(), task_id.to_string()));
}

/// Puts `label` into `labels` (sorted by name), in place of the label of
/// the same name if there is one.
pub fn inject_label<L: LabelPair>(labels: &mut Vec<L>, label: L) {
    match labels.binary_search_by(|l| cmp_names(l.name(), label.name())) {
        Ok(i) => labels[i] = label,
        Err(i) => labels.insert(i, label),
    }
}

/// Jump consistent hash (Lamping & Veach, 2014): maps `key` to a bucket in
/// `0..buckets`, moving only the minimum number of keys when `buckets`
/// grows. Returns 0 when `buckets` is 0.
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // The paper's formula, in floating point as in its reference code.
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    u32::try_from(b).unwrap_or(0)
}

/// The Kafka partition (of `partitions`) that carries task `task_id`:
/// `jump_hash(task_id, partitions)`.
///
/// Tasks, not series, are mapped to partitions so that all series of a task
/// (and its state) live on one partition. Jump hash instead of `task_id %
/// partitions` because partition counts grow: going from n to n+1 partitions
/// moves only ~1/(n+1) of the tasks, all onto the new partition, while a
/// modulo would reassign almost every task and with it its state. The task
/// count stays fixed, so a series' task never changes with the partition
/// count. Returns 0 when `partitions` is 0.
pub fn partition_for_task(task_id: u32, partitions: u32) -> u32 {
    jump_hash(u64::from(task_id), partitions)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn ls(items: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = items
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    }

    /// Values from Prometheus' TestStableHash (model/labels/sharding_test.go).
    #[test]
    fn labels_hash_matches_prometheus_vectors() {
        assert_eq!(labels_hash(&[]), 0xef46db3751d8e999);
        assert_eq!(labels_hash(&ls(&[("hello", "world")])), 0x347c8ee7a9e29708);
        assert_eq!(
            labels_hash(&ls(&[("__name__", "metric"), ("label", "value")])),
            0xcbab40540f26097d
        );
    }

    #[test]
    fn labels_hash_is_xxh64_of_the_byte_layout() {
        assert_eq!(xxh64(b"", 0), 0xef46db3751d8e999);
        assert_eq!(xxh64(b"hello\xffworld\xff", 0), 0x347c8ee7a9e29708);
        let labels = ls(&[("a", "1"), ("b", "")]);
        assert_eq!(labels_hash(&labels), xxh64(b"a\xff1\xffb\xff\xff", 0));
    }

    #[test]
    fn labels_hash_streams_large_sets_identically() {
        let big = "v".repeat(700);
        for sizes in [vec![1], vec![3], vec![20, 5], vec![200]] {
            let labels: Vec<(String, String)> = sizes
                .iter()
                .enumerate()
                .flat_map(|(group, &n)| {
                    (0..n).map(move |i| (format!("l{group}_{i:04}"), format!("{i}")))
                })
                .chain(std::iter::once(("z_big".to_string(), big.clone())))
                .collect();
            let mut concat = Vec::new();
            for (n, v) in &labels {
                concat.extend_from_slice(n.as_bytes());
                concat.push(0xff);
                concat.extend_from_slice(v.as_bytes());
                concat.push(0xff);
            }
            assert_eq!(labels_hash(&labels), xxh64(&concat, 0));
        }
        // A single label bigger than the buffer, and one exactly filling it.
        let huge_value = "x".repeat(5000);
        let huge = ls(&[("a", &huge_value)]);
        let mut concat = b"a\xff".to_vec();
        concat.extend_from_slice(huge_value.as_bytes());
        concat.push(0xff);
        assert_eq!(labels_hash(&huge), xxh64(&concat, 0));
        let exact = ls(&[("ab", &"x".repeat(STACK_BUF - 4))]);
        let mut concat = b"ab\xff".to_vec();
        concat.extend(vec![b'x'; STACK_BUF - 4]);
        concat.push(0xff);
        assert_eq!(concat.len(), STACK_BUF);
        assert_eq!(labels_hash(&exact), xxh64(&concat, 0));
    }

    /// Every layout size around the stack buffer's, with a last label of
    /// a short value (0 or 1 byte): the buffer and the streaming path must
    /// agree with xxh64 of the concatenation, and never write past the buffer.
    #[test]
    fn labels_hash_at_every_size_around_the_buffer() {
        for total in STACK_BUF - 8..=STACK_BUF + 8 {
            for last in [0usize, 1] {
                // "a" 0xff x..x 0xff "b" 0xff y.. 0xff
                let long = total - 6 - last;
                let labels = ls(&[("a", &"x".repeat(long)), ("b", &"y".repeat(last))]);
                let mut concat = b"a\xff".to_vec();
                concat.extend(vec![b'x'; long]);
                concat.extend_from_slice(b"\xffb\xff");
                concat.extend(vec![b'y'; last]);
                concat.push(0xff);
                assert_eq!(concat.len(), total);
                assert_eq!(labels_hash(&labels), xxh64(&concat, 0), "{total} bytes");
            }
        }
    }

    /// The same with many short labels of empty values before the last, so
    /// the buffer fills label by label up to the boundary.
    #[test]
    fn labels_hash_of_many_short_labels_at_every_size_around_the_buffer() {
        for total in STACK_BUF - 8..=STACK_BUF + 8 {
            for last in [0usize, 1] {
                // ("a", x*r), ("p0000", "")..., ("z", y*last): 3 + r, 7 each, 3 + last.
                let rest = total - 3 - last;
                let r = (rest - 3) % 7;
                let n = (rest - 3 - r) / 7;
                let mut labels = vec![("a".to_string(), "x".repeat(r))];
                labels.extend((0..n).map(|i| (format!("p{i:04}"), String::new())));
                labels.push(("z".to_string(), "y".repeat(last)));
                let mut concat = Vec::new();
                for (name, value) in &labels {
                    concat.extend_from_slice(name.as_bytes());
                    concat.push(0xff);
                    concat.extend_from_slice(value.as_bytes());
                    concat.push(0xff);
                }
                assert_eq!(concat.len(), total);
                assert_eq!(labels_hash(&labels), xxh64(&concat, 0), "{total} bytes");
            }
        }
    }

    #[test]
    fn task_labels_without_leaves_those_labels_out_of_the_hash() {
        let cfg = TaskIdConfig {
            task_labels_without: vec!["instance".into(), "pod".into()],
            ..TaskIdConfig::new(1_000_003)
        };
        let labels = ls(&[
            ("__name__", "up"),
            ("instance", "a:1"),
            ("job", "api"),
            ("pod", "p-1"),
        ]);
        // xxh64 of the layout of the labels that are left (labels.Hash).
        let expected = xxh64(b"__name__\xffup\xffjob\xffapi\xff", 0) % 1_000_003;
        assert_eq!(u64::from(task_id(&labels, &cfg)), expected);
    }

    #[test]
    fn task_label_is_excluded_from_its_own_hash() {
        let cfg = TaskIdConfig::new(64);
        let plain = ls(&[("__name__", "up"), ("job", "api"), ("instance", "a:1")]);
        let mut tagged = plain.clone();
        inject_task_label(&mut tagged, DEFAULT_TASK_LABEL, 17);
        assert_eq!(task_id(&tagged, &cfg), task_id(&plain, &cfg));
        assert_eq!(u64::from(task_id(&plain, &cfg)), labels_hash(&plain) % 64);
        // Also with an explicit subset naming the task label.
        let subset = TaskIdConfig {
            task_labels: Some(vec!["job".into(), DEFAULT_TASK_LABEL.into()]),
            ..cfg.clone()
        };
        assert_eq!(task_id(&tagged, &subset), task_id(&plain, &subset));
        // A custom label name is excluded, the default one then is not.
        let custom = TaskIdConfig {
            label_name: "shard".into(),
            ..cfg
        };
        let mut sharded = plain.clone();
        inject_task_label(&mut sharded, "shard", 3);
        assert_eq!(task_id(&sharded, &custom), task_id(&plain, &custom));
    }

    #[test]
    fn task_labels_subset_selects_the_hashed_labels() {
        let cfg = TaskIdConfig {
            task_count: 1 << 20,
            task_labels: Some(vec!["job".into(), "__name__".into(), "missing".into()]),
            task_labels_without: Vec::new(),
            label_name: DEFAULT_TASK_LABEL.into(),
        };
        let a = ls(&[("__name__", "up"), ("job", "api"), ("instance", "a:1")]);
        let b = ls(&[("__name__", "up"), ("job", "api"), ("instance", "b:2")]);
        let c = ls(&[("__name__", "up"), ("job", "web"), ("instance", "a:1")]);
        assert_eq!(task_id(&a, &cfg), task_id(&b, &cfg));
        assert_ne!(task_id(&a, &cfg), task_id(&c, &cfg));
        // Exactly the hash of the present selected labels, in name order.
        let expected = labels_hash(&ls(&[("__name__", "up"), ("job", "api")])) % (1 << 20);
        assert_eq!(u64::from(task_id(&a, &cfg)), expected);
        // The order of task_labels does not matter.
        let reordered = TaskIdConfig {
            task_labels: Some(vec!["missing".into(), "job".into(), "__name__".into()]),
            ..cfg.clone()
        };
        assert_eq!(task_id(&a, &reordered), task_id(&a, &cfg));
        // No selected label present: hash of the empty set.
        let none = ls(&[("other", "x")]);
        assert_eq!(
            u64::from(task_id(&none, &cfg)),
            0xef46db3751d8e999 % (1 << 20)
        );
    }

    #[test]
    fn task_id_edge_counts() {
        let labels = ls(&[("a", "1")]);
        assert_eq!(task_id(&labels, &TaskIdConfig::new(0)), 0);
        assert_eq!(task_id(&labels, &TaskIdConfig::new(1)), 0);
        let max = task_id(&labels, &TaskIdConfig::new(u32::MAX));
        assert_eq!(u64::from(max), labels_hash(&labels) % u64::from(u32::MAX));
    }

    #[test]
    fn task_config_deserializes_with_defaults() {
        let cfg: TaskIdConfig = serde_yaml::from_str("task_count: 8\n").unwrap();
        assert_eq!(cfg, TaskIdConfig::new(8));
        let cfg: TaskIdConfig =
            serde_yaml::from_str("task_count: 8\ntask_labels: [job]\nlabel_name: t\n").unwrap();
        assert_eq!(cfg.task_labels, Some(vec!["job".to_string()]));
        assert_eq!(cfg.label_name, "t");
    }

    #[test]
    fn inject_keeps_sorted_and_overwrites() {
        let mut labels = ls(&[("a", "1"), ("z", "2")]);
        inject_task_label(&mut labels, "stream_task_id", 5);
        assert_eq!(
            labels,
            ls(&[("a", "1"), ("stream_task_id", "5"), ("z", "2")])
        );
        inject_task_label(&mut labels, "stream_task_id", 42);
        assert_eq!(
            labels,
            ls(&[("a", "1"), ("stream_task_id", "42"), ("z", "2")])
        );
        let mut empty = Vec::new();
        inject_task_label(&mut empty, "t", 0);
        assert_eq!(empty, ls(&[("t", "0")]));
        inject_task_label(&mut empty, "__name__", 7);
        assert_eq!(empty, ls(&[("__name__", "7"), ("t", "0")]));
    }

    /// Vectors shared by the Go (dgryski/go-jump), C, Python and Elixir
    /// implementations of the paper's algorithm.
    #[test]
    fn jump_hash_known_values() {
        let cases: [(u64, u32, u32); 15] = [
            (1, 1, 0),
            (42, 57, 43),
            (0xDEAD10CC, 1, 0),
            (0xDEAD10CC, 666, 361),
            (256, 1024, 520),
            (0, 1, 0),
            (3, 1, 0),
            (0, 2, 0),
            (4, 2, 1),
            (7, 2, 0),
            (1, 128, 55),
            (129, 128, 120),
            (128, 100_000_000, 38_172_097),
            (128, 2_147_483_648, 1_644_467_860),
            (u64::MAX, 128, 92),
        ];
        for (key, buckets, want) in cases {
            assert_eq!(jump_hash(key, buckets), want, "jump_hash({key}, {buckets})");
        }
        // Python test: key -42 reinterpreted as unsigned.
        assert_eq!(jump_hash(42u64.wrapping_neg(), 57), 8);
        assert_eq!(jump_hash(12345, 0), 0);
    }

    #[test]
    fn jump_hash_only_moves_keys_to_the_new_bucket() {
        for key in 0..2_000u64 {
            let key = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut prev = jump_hash(key, 1);
            assert_eq!(prev, 0);
            for buckets in 2..=200 {
                let now = jump_hash(key, buckets);
                assert!(now < buckets);
                assert!(
                    now == prev || now == buckets - 1,
                    "key {key}: {prev} -> {now} at {buckets} buckets"
                );
                prev = now;
            }
        }
    }

    #[test]
    fn jump_hash_moves_about_one_nth_of_tasks() {
        let tasks = 100_000u32;
        let moved = (0..tasks)
            .filter(|&t| partition_for_task(t, 10) != partition_for_task(t, 11))
            .count();
        // Expected 1/11 of the tasks ≈ 9091.
        assert!((8_500..9_700).contains(&moved), "moved {moved}");
    }

    #[test]
    fn partitions_are_roughly_uniform_over_task_ids() {
        let partitions = 12u32;
        let tasks = 120_000u32;
        let mut counts = vec![0u32; partitions as usize];
        for t in 0..tasks {
            counts[partition_for_task(t, partitions) as usize] += 1;
        }
        let mean = tasks / partitions;
        for (p, &c) in counts.iter().enumerate() {
            assert!(c.abs_diff(mean) < mean / 20, "partition {p}: {c} vs {mean}");
        }
        assert_eq!(partition_for_task(7, 0), 0);
        assert_eq!(partition_for_task(7, 1), 0);
    }

    #[test]
    fn task_ids_are_roughly_uniform() {
        let cfg = TaskIdConfig::new(16);
        let mut counts = [0u32; 16];
        for i in 0..64_000 {
            let labels = ls(&[
                ("__name__", "http_requests_total"),
                ("pod", &format!("pod-{i}")),
            ]);
            counts[task_id(&labels, &cfg) as usize] += 1;
        }
        for (t, &c) in counts.iter().enumerate() {
            assert!(c.abs_diff(4_000) < 300, "task {t}: {c}");
        }
    }
}
