//! The request a partition worker assembles: task records concatenated as
//! bytes (each is a WriteRequest's entries, so the concatenation is one),
//! with each record's place kept for dead-lettering. Pure state, no Kafka.
//!
//! The batch rules live here only: a request never mixes tenants (when
//! the tenant is forwarded), and stays within `max_samples_per_send` and
//! `max_bytes_per_send` unless it is a single record ([`Batch::fits`]);
//! it is sent once it reaches either ([`Batch::full`]) or its flush
//! interval passed.
//!
//! Depends on `scan::Counts`, the egress config and rdkafka's header type.

use std::time::Instant;

use rdkafka::message::OwnedHeaders;

use super::config::EgressConfig;
use crate::remote_write::scan::Counts;
use crate::remote_write::WriteRequest;

/// One record's place in a batch, kept for dead-lettering.
pub struct Record {
    pub offset: i64,
    /// Its bytes in the batch's body.
    pub start: usize,
    pub end: usize,
    pub key: Option<Vec<u8>>,
    pub headers: OwnedHeaders,
}

/// The request being assembled.
#[derive(Default)]
pub struct Batch {
    pub body: Vec<u8>,
    pub counts: Counts,
    pub records: Vec<Record>,
    pub tenant: Option<String>,
    /// When the first record joined: the flush interval counts from here.
    pub first_at: Option<Instant>,
    /// Offset of the last record read into this batch (sent or not).
    pub last_offset: Option<i64>,
    /// Late samples for the late topic: (record offset, WriteRequest).
    pub late: Vec<(i64, Vec<u8>)>,
}

/// A record read but not yet placed in a batch.
pub struct Pending {
    pub offset: i64,
    /// The value, decoded to plain protobuf.
    pub value: Vec<u8>,
    pub counts: Counts,
    pub key: Option<Vec<u8>>,
    /// Its headers as they are once decoded (`content-encoding: identity`).
    pub headers: OwnedHeaders,
    pub tenant: Option<String>,
    /// The record decoded by prost, when the windows are on and the
    /// zero-copy reader declines the value (it reads all others).
    pub decoded: Option<WriteRequest>,
}

/// How large a request may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// `max_samples_per_send`.
    pub max_samples: u64,
    /// `max_bytes_per_send`.
    pub max_bytes: usize,
    /// Whether a request carries one tenant only (`forward_tenant_header`).
    pub one_tenant: bool,
}

impl From<&EgressConfig> for BatchLimits {
    fn from(config: &EgressConfig) -> BatchLimits {
        BatchLimits {
            max_samples: config.max_samples_per_send as u64,
            max_bytes: config.max_bytes_per_send,
            one_tenant: config.forward_tenant_header.is_some(),
        }
    }
}

impl Batch {
    /// Whether `p` may join: the first record always does; later ones keep
    /// the request to one tenant (when forwarded) and within the limits.
    pub fn fits(&self, p: &Pending, limits: &BatchLimits) -> bool {
        self.takes(&p.tenant, p.value.len(), p.counts.samples, limits)
    }

    /// Whether `other` (a lane's share of a later request) may be sent in
    /// one request with this one: the same rules as [`Self::fits`].
    pub fn fits_batch(&self, other: &Batch, limits: &BatchLimits) -> bool {
        self.takes(
            &other.tenant,
            other.body.len(),
            other.counts.samples,
            limits,
        )
    }

    fn takes(&self, tenant: &Option<String>, bytes: usize, samples: u64, l: &BatchLimits) -> bool {
        if self.records.is_empty() {
            return true;
        }
        (!l.one_tenant || self.tenant == *tenant)
            && self.body.len() + bytes <= l.max_bytes
            && self.counts.samples + samples <= l.max_samples
    }

    /// Appends a later batch (see [`Self::fits_batch`]): its records keep
    /// their place, shifted past this body.
    pub fn append(&mut self, other: Batch) {
        if self.records.is_empty() {
            self.tenant = other.tenant;
        }
        let shift = self.body.len();
        self.body.extend_from_slice(&other.body);
        self.counts.add(other.counts);
        self.records
            .extend(other.records.into_iter().map(|r| Record {
                start: r.start + shift,
                end: r.end + shift,
                ..r
            }));
        self.first_at = self.first_at.or(other.first_at);
        self.last_offset = other.last_offset.or(self.last_offset);
    }

    /// Whether the request is to be sent now.
    pub fn full(&self, limits: &BatchLimits) -> bool {
        self.counts.samples >= limits.max_samples || self.body.len() >= limits.max_bytes
    }

    /// Whether there is nothing to send (no series and no bytes).
    pub fn is_empty(&self) -> bool {
        self.counts.series == 0 && self.body.is_empty()
    }

    /// A record joins: the first names the request's tenant and starts
    /// its flush interval.
    pub fn joined(&mut self, tenant: Option<String>) {
        if self.records.is_empty() {
            self.tenant = tenant;
        }
        self.first_at.get_or_insert_with(Instant::now);
    }

    /// Appends `p` as it is (the windows are off).
    pub fn push(&mut self, p: Pending) {
        self.joined(p.tenant);
        let start = self.body.len();
        self.body.extend_from_slice(&p.value);
        self.counts.add(p.counts);
        self.records.push(Record {
            offset: p.offset,
            start,
            end: self.body.len(),
            key: p.key,
            headers: p.headers,
        });
        self.last_offset = Some(p.offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(offset: i64, len: usize, samples: u64, tenant: Option<&str>) -> Pending {
        Pending {
            offset,
            value: vec![offset as u8; len],
            counts: Counts {
                series: 1,
                samples,
                max_timestamp: Some(offset * 1000),
            },
            key: None,
            headers: OwnedHeaders::new(),
            tenant: tenant.map(str::to_string),
            decoded: None,
        }
    }

    const LIMITS: BatchLimits = BatchLimits {
        max_samples: 10,
        max_bytes: 100,
        one_tenant: true,
    };

    #[test]
    fn records_concatenate_and_keep_their_place() {
        let mut batch = Batch::default();
        assert!(batch.is_empty());
        batch.push(pending(7, 3, 2, Some("a")));
        batch.push(pending(8, 5, 4, Some("a")));
        assert_eq!(batch.body, [7, 7, 7, 8, 8, 8, 8, 8]);
        let places: Vec<(i64, usize, usize)> = batch
            .records
            .iter()
            .map(|r| (r.offset, r.start, r.end))
            .collect();
        assert_eq!(places, [(7, 0, 3), (8, 3, 8)]);
        assert_eq!(batch.counts.samples, 6);
        assert_eq!(batch.counts.series, 2);
        assert_eq!(batch.counts.max_timestamp, Some(8000));
        assert_eq!(batch.last_offset, Some(8));
        assert_eq!(batch.tenant.as_deref(), Some("a"));
        assert!(batch.first_at.is_some() && !batch.is_empty());
    }

    #[test]
    fn a_request_stays_within_its_limits_unless_it_is_one_record() {
        let mut batch = Batch::default();
        assert!(
            batch.fits(&pending(0, 500, 50, None), &LIMITS),
            "first always fits"
        );
        batch.push(pending(0, 60, 6, None));
        assert!(
            batch.fits(&pending(1, 40, 4, None), &LIMITS),
            "exactly the limits"
        );
        assert!(!batch.fits(&pending(1, 41, 1, None), &LIMITS));
        assert!(!batch.fits(&pending(1, 1, 5, None), &LIMITS));
        assert!(!batch.full(&LIMITS));
        batch.push(pending(1, 40, 1, None));
        assert!(batch.full(&LIMITS), "100 bytes");
        let mut samples = Batch::default();
        samples.push(pending(0, 1, 10, None));
        assert!(samples.full(&LIMITS), "10 samples");
    }

    #[test]
    fn an_appended_batch_keeps_its_records_places_and_the_limits_hold() {
        let mut a = Batch::default();
        a.push(pending(3, 2, 2, Some("a")));
        let mut b = Batch::default();
        b.push(pending(5, 3, 4, Some("a")));
        b.push(pending(6, 1, 1, Some("a")));
        assert!(a.fits_batch(&b, &LIMITS));
        let mut other_tenant = Batch::default();
        other_tenant.push(pending(7, 1, 1, Some("b")));
        assert!(!a.fits_batch(&other_tenant, &LIMITS));
        let mut too_many = Batch::default();
        too_many.push(pending(7, 1, 9, Some("a")));
        assert!(!a.fits_batch(&too_many, &LIMITS), "2 + 9 samples > 10");
        a.append(b);
        assert_eq!(a.body, [3, 3, 5, 5, 5, 6]);
        let places: Vec<(i64, usize, usize)> = a
            .records
            .iter()
            .map(|r| (r.offset, r.start, r.end))
            .collect();
        assert_eq!(places, [(3, 0, 2), (5, 2, 5), (6, 5, 6)]);
        assert_eq!((a.counts.samples, a.counts.series), (7, 3));
        assert_eq!(a.last_offset, Some(6));
        assert_eq!(a.tenant.as_deref(), Some("a"));
    }

    #[test]
    fn tenants_are_never_mixed_when_the_tenant_is_forwarded() {
        let mut batch = Batch::default();
        batch.push(pending(0, 1, 1, Some("a")));
        assert!(!batch.fits(&pending(1, 1, 1, Some("b")), &LIMITS));
        assert!(!batch.fits(&pending(1, 1, 1, None), &LIMITS));
        assert!(batch.fits(&pending(1, 1, 1, Some("a")), &LIMITS));
        let mixed = BatchLimits {
            one_tenant: false,
            ..LIMITS
        };
        assert!(batch.fits(&pending(1, 1, 1, Some("b")), &mixed));
    }
}
