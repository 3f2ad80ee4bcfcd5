//! The egress scanner: counts series and samples of a plain protobuf
//! `prometheus.WriteRequest` without decoding it. Egress concatenates
//! task-topic records into requests as bytes, and only the counts (for batch limits and metrics) and the
//! newest timestamp are needed. Unknown fields are skipped as protobuf
//! requires; malformed input is an error (the receiver would refuse it too).
//!
//! [`split_series`] spreads a request's series over the lanes of a
//! partition (`egress.max_in_flight`), by a hash of each series' labels.
//!
//! May depend on: nothing in the crate.

/// What one record holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Time series entries.
    pub series: u64,
    /// Float samples plus histogram samples.
    pub samples: u64,
    /// Newest sample or histogram timestamp (ms), if any.
    pub max_timestamp: Option<i64>,
}

impl Counts {
    /// Adds another record's counts.
    pub fn add(&mut self, other: Counts) {
        self.series += other.series;
        self.samples += other.samples;
        self.max_timestamp = self.max_timestamp.max(other.max_timestamp);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

/// A field: its number and, for length-delimited ones, the bytes; for
/// varints, the value.
enum Field<'a> {
    Varint(u32, u64),
    Bytes(u32, &'a [u8]),
    Other,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err("varint too long")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.buf.len() {
            return Err("truncated field");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn next(&mut self) -> Result<Option<Field<'a>>, &'static str> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| "bad field number")?;
        Ok(Some(match key & 7 {
            0 => Field::Varint(number, self.varint()?),
            1 => {
                self.take(8)?;
                Field::Other
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "bad length")?;
                Field::Bytes(number, self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Other
            }
            _ => return Err("unsupported wire type"),
        }))
    }
}

/// The timestamp field of a Sample (2) or Histogram (15).
fn timestamp(message: &[u8], field: u32) -> Result<Option<i64>, &'static str> {
    let mut r = Reader { buf: message };
    let mut ts = None;
    while let Some(f) = r.next()? {
        if let Field::Varint(n, v) = f {
            if n == field {
                ts = Some(v as i64);
            }
        }
    }
    Ok(ts)
}

/// Counts a WriteRequest's series and samples.
pub fn count(request: &[u8]) -> Result<Counts, &'static str> {
    let mut counts = Counts::default();
    let mut r = Reader { buf: request };
    while let Some(f) = r.next()? {
        let Field::Bytes(1, series) = f else { continue };
        counts.series += 1;
        let mut s = Reader { buf: series };
        while let Some(f) = s.next()? {
            let ts = match f {
                Field::Bytes(2, sample) => timestamp(sample, 2)?,
                Field::Bytes(4, histogram) => timestamp(histogram, 15)?,
                _ => continue,
            };
            counts.samples += 1;
            // A missing timestamp field is 0 in proto3.
            counts.max_timestamp = counts.max_timestamp.max(Some(ts.unwrap_or(0)));
        }
    }
    Ok(counts)
}

/// Appends each series of `request` (a plain protobuf WriteRequest) to
/// `lanes[i]`, `i` a hash of the series' label fields modulo the number of
/// lanes, so every record's samples of one series go to the same lane, in
/// order. Other fields (metadata) go to lane 0. Each appended field is
/// copied as it is, key included, so every lane holds a WriteRequest.
/// The router writes a series' labels the same way every time; a producer
/// that wrote one series' labels in two encodings would see them in two lanes.
pub fn split_series(request: &[u8], lanes: &mut [Vec<u8>]) -> Result<(), &'static str> {
    let n = lanes.len().max(1) as u64;
    let mut r = Reader { buf: request };
    loop {
        let field_start = r.buf;
        let Some(f) = r.next()? else { break };
        let field = &field_start[..field_start.len() - r.buf.len()];
        let lane = match f {
            Field::Bytes(1, series) => (labels_hash(series)? % n) as usize,
            _ => 0,
        };
        if let Some(out) = lanes.get_mut(lane) {
            out.extend_from_slice(field);
        }
    }
    Ok(())
}

/// A hash of a TimeSeries' label fields (their bytes, in order).
fn labels_hash(series: &[u8]) -> Result<u64, &'static str> {
    let mut hasher = xxhash_rust::xxh64::Xxh64::new(0);
    let mut r = Reader { buf: series };
    while let Some(f) = r.next()? {
        if let Field::Bytes(1, label) = f {
            // The length first: ("ab", "c") and ("a", "bc") differ.
            hasher.update(&(label.len() as u64).to_le_bytes());
            hasher.update(label);
        }
    }
    Ok(hasher.digest())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::proto::v1::{
        Histogram, Label, MetricMetadata, Sample, TimeSeries, WriteRequest,
    };
    use prost::Message;

    #[test]
    fn counts_match_a_decoded_request() {
        let series = |n: i64| TimeSeries {
            labels: vec![Label::new("__name__", "m"), Label::new("i", n.to_string())],
            samples: (0..n)
                .map(|t| Sample {
                    value: 1.5,
                    timestamp: 1_000 + t,
                })
                .collect(),
            histograms: vec![Histogram {
                timestamp: 5_000 + n,
                ..Default::default()
            }],
            ..Default::default()
        };
        let request = WriteRequest {
            timeseries: vec![series(1), series(3), series(0)],
            metadata: vec![MetricMetadata {
                metric_family_name: "m".into(),
                ..Default::default()
            }],
        };
        let counts = count(&request.encode_to_vec()).expect("valid");
        assert_eq!(
            counts,
            Counts {
                series: 3,
                samples: 4 + 3,
                max_timestamp: Some(5_003)
            }
        );
        // Concatenated records count as the sum.
        let mut two = request.encode_to_vec();
        two.extend(request.encode_to_vec());
        assert_eq!(count(&two).expect("valid").samples, 14);
        assert_eq!(count(&[]).expect("empty"), Counts::default());
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(count(&[0x0a, 0x05, 0x01]).is_err());
        assert!(count(&[0xff; 11]).is_err());
        assert!(split_series(&[0x0a, 0x05, 0x01], &mut [Vec::new()]).is_err());
    }

    fn scrape(t: i64) -> WriteRequest {
        WriteRequest {
            timeseries: (0..64)
                .map(|i| TimeSeries {
                    labels: vec![Label::new("__name__", "m"), Label::new("i", i.to_string())],
                    samples: vec![Sample {
                        value: i as f64,
                        timestamp: t,
                    }],
                    ..Default::default()
                })
                .collect(),
            metadata: vec![MetricMetadata {
                metric_family_name: "m".into(),
                ..Default::default()
            }],
        }
    }

    /// The lane each series of `request` went to, by its `i` label.
    fn lanes_of(request: &WriteRequest, n: usize) -> Vec<(String, usize)> {
        let mut lanes = vec![Vec::new(); n];
        split_series(&request.encode_to_vec(), &mut lanes).expect("valid");
        let mut seen = Vec::new();
        for (lane, bytes) in lanes.iter().enumerate() {
            let part = WriteRequest::decode(bytes.as_slice()).expect("each lane is a WriteRequest");
            assert_eq!(
                part.metadata.len(),
                usize::from(lane == 0),
                "metadata in lane 0"
            );
            for s in part.timeseries {
                seen.push((s.labels[1].value.clone(), lane));
            }
        }
        seen
    }

    #[test]
    fn every_series_goes_whole_to_one_lane_and_always_the_same() {
        let first = lanes_of(&scrape(1_000), 4);
        let mut ids: Vec<&str> = first.iter().map(|(i, _)| i.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 64, "every series once");
        // The next scrape (other samples) puts each series where it was.
        let mut again = lanes_of(&scrape(2_000), 4);
        let mut first_sorted = first.clone();
        first_sorted.sort();
        again.sort();
        assert_eq!(again, first_sorted);
        // And the series are spread: every lane has some of 64.
        for lane in 0..4 {
            assert!(first.iter().any(|(_, l)| *l == lane), "lane {lane} empty");
        }
        // One lane takes everything, in request order.
        let one: Vec<String> = lanes_of(&scrape(1), 1)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        let expected: Vec<String> = (0..64).map(|i: i32| i.to_string()).collect();
        assert_eq!(one, expected);
    }
}
