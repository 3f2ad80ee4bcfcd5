//! Independent computations of the routing functions, written from their
//! specifications and not from `src/`: Prometheus' `labels.Hash()`
//! (model/labels: xxHash64, seed 0, over `name 0xff value 0xff` for each
//! label in name order) and the jump consistent hash of Lamping & Veach,
//! "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014).

/// Prometheus' `labels.Hash()` of `labels`, which are sorted here first, so
/// callers may pass them in any order.
pub fn prometheus_hash<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut labels: Vec<(&str, &str)> = labels.into_iter().collect();
    labels.sort_unstable();
    let mut bytes = Vec::new();
    for (name, value) in labels {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0xff);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0xff);
    }
    xxhash_rust::xxh64::xxh64(&bytes, 0)
}

/// The paper's pseudo-random generator: a 64-bit linear congruential
/// generator seeded with the key, whose top 31 bits (plus one) over 2^31
/// give a fraction in (0, 1].
struct PaperRandom {
    state: u64,
}

impl PaperRandom {
    /// Steps the generator; returns `(state >> 33) + 1`, the next
    /// fraction's numerator over 2^31.
    fn next(&mut self) -> f64 {
        self.state = self
            .state
            .wrapping_mul(2_862_933_555_777_941_757)
            .wrapping_add(1);
        ((self.state >> 33) + 1) as f64
    }
}

/// Jump consistent hash as the paper derives it: from bucket `b`, the next
/// bucket a key jumps to is `floor((b + 1) / r)` for a random `r` in
/// (0, 1]; the last bucket below `buckets` is the answer. Computed as the
/// paper's figure 1 does, `(b + 1) * (2^31 / ((key >> 33) + 1))` in double
/// precision, since the rounding of that product decides boundary cases.
pub fn paper_jump(key: u64, buckets: u32) -> u32 {
    if buckets == 0 {
        return 0;
    }
    let mut random = PaperRandom { state: key };
    let mut bucket: u64 = 0;
    loop {
        let next = ((bucket + 1) as f64 * (2_147_483_648.0 / random.next())).floor();
        if next >= f64::from(buckets) {
            return bucket as u32;
        }
        bucket = next as u64;
    }
}

/// The task of a series (label name/value pairs, any order): the hash of
/// all its labels but `task_label`, modulo `task_count`.
pub fn task_of<'a>(
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    task_label: &str,
    task_count: u32,
) -> u32 {
    let hash = prometheus_hash(labels.into_iter().filter(|(n, _)| *n != task_label));
    (hash % u64::from(task_count)) as u32
}

/// Vectors published with other implementations of the paper (Go's
/// dgryski/go-jump, the C and Python ports), and the uniformity and
/// minimal-movement properties the paper proves.
#[test]
fn paper_jump_matches_published_vectors() {
    for (key, buckets, want) in [
        (1u64, 1u32, 0u32),
        (42, 57, 43),
        (0xDEAD10CC, 666, 361),
        (256, 1024, 520),
        (4, 2, 1),
        (129, 128, 120),
        (128, 100_000_000, 38_172_097),
        (u64::MAX, 128, 92),
    ] {
        assert_eq!(paper_jump(key, buckets), want, "jump({key}, {buckets})");
    }
    for key in 0..500u64 {
        let key = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for buckets in 2..60 {
            let (before, after) = (paper_jump(key, buckets - 1), paper_jump(key, buckets));
            assert!(after == before || after == buckets - 1);
        }
    }
}

/// Prometheus' TestStableHash vectors (model/labels/sharding_test.go).
#[test]
fn prometheus_hash_matches_prometheus_vectors() {
    assert_eq!(prometheus_hash([]), 0xef46db3751d8e999);
    assert_eq!(prometheus_hash([("hello", "world")]), 0x347c8ee7a9e29708);
    assert_eq!(
        prometheus_hash([("label", "value"), ("__name__", "metric")]),
        0xcbab40540f26097d
    );
}
