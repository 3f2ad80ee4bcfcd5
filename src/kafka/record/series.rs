//! The `series_ids` task-record format: a series' labels are written once
//! per refresh interval, and its other samples name it by a number.
//!
//! A `prometheus.WriteRequest` task record repeats every series' whole
//! label set with every sample, and that is most of what a task topic
//! stores (23.5 bytes per sample after zstd, the samples alone 0.7). In
//! this format the value is still a concatenation of `WriteRequest`
//! entries (field 1 series, field 3 metadata), but each series entry
//! carries `TimeSeries` field 5, a varint id, and either
//! - its labels too (field 1, as usual): a *definition* of the id, or
//! - no labels: a *reference* to the id's last definition.
//!
//! Ids are numbered by a *writer*: one router worker between two aborts
//! (any abort starts a new writer, so no reference ever points into an
//! aborted transaction). Records carry, besides the task headers:
//! - `protocol`: [`PROTOCOL`];
//! - `series-writer`: the writer, 16 hex digits;
//! - `series-refresh-ms`: its refresh interval in milliseconds.
//!
//! The writer's promise, which readers build on: a reference follows a
//! definition of its id by the same writer in the same partition, earlier
//! in the partition and at most one refresh interval earlier by the
//! writer's clock (record timestamps). So a reader that starts anywhere
//! learns every id it meets by reading from twice the refresh interval
//! before the first record it is missing one in ([`SeriesBook`]; egress
//! does that once per writer, `egress/worker/series.rs`). With
//! `read_committed` (the router writes transactions) nothing aborted is
//! ever learned.
//!
//! Depends on `remote_write::entry` (how labels are written) and prost's
//! varints only.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use xxhash_rust::xxh64::Xxh64Builder;

use crate::remote_write::entry;

/// The `protocol` header of a `series_ids` record.
pub const PROTOCOL: &str = "streamroute.SeriesIds";
/// Header naming the record's writer (16 hex digits).
pub const HEADER_WRITER: &str = "series-writer";
/// Header with the writer's refresh interval, in milliseconds.
pub const HEADER_REFRESH: &str = "series-refresh-ms";

/// `TimeSeries.id` (field 5, varint): the series' number.
const KEY_ID: u8 = 5 << 3;
/// `WriteRequest.timeseries` and `TimeSeries.labels` (field 1, length-delimited).
const KEY_FIELD_1: u8 = 1 << 3 | 2;

/// The writer's side: which series each key's earlier records defined.
/// `K` is what orders records (the router's batch key: one route,
/// partition and tenant, whose records are written in order).
#[derive(Debug)]
pub struct SeriesWriter<K> {
    writer: u64,
    refresh_ms: i64,
    next_id: u64,
    tables: HashMap<K, Table>,
    /// The labels of the series being written, as `TimeSeries.labels`.
    labels: Vec<u8>,
}

#[derive(Debug, Default)]
struct Table {
    ids: HashMap<Box<[u8]>, Known, Xxh64Builder>,
    /// When series unused for a refresh interval were last forgotten.
    swept_ms: i64,
    /// Entries written since the last `reset_counts`.
    counts: Counts,
}

/// Entries a [`SeriesWriter`] wrote for one key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// With their labels.
    pub definitions: u64,
    /// By number only.
    pub references: u64,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    id: u64,
    /// When the last definition was written.
    defined_ms: i64,
    /// When the series was last written.
    used_ms: i64,
}

/// Who wrote a `series_ids` record: its writer and refresh interval, as
/// its headers name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesOrigin {
    pub writer: u64,
    pub refresh_ms: i64,
}

impl SeriesOrigin {
    /// The `series-writer` header's value: 16 hex digits.
    pub fn writer_hex(&self) -> String {
        format!("{:016x}", self.writer)
    }
}

/// What [`SeriesWriter::put`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Definition,
    Reference,
}

impl<K: Hash + Eq + Clone> SeriesWriter<K> {
    /// A new writer (a random id) that defines each series again once
    /// `refresh` passed since its last definition.
    pub fn new(refresh: Duration) -> SeriesWriter<K> {
        SeriesWriter::with_id(rand::random(), refresh)
    }

    /// A writer with a chosen id (tests).
    pub fn with_id(writer: u64, refresh: Duration) -> SeriesWriter<K> {
        SeriesWriter {
            writer,
            refresh_ms: refresh.as_millis().max(1) as i64,
            next_id: 1,
            tables: HashMap::new(),
            labels: Vec::new(),
        }
    }

    /// What its records' headers name.
    pub fn origin(&self) -> SeriesOrigin {
        SeriesOrigin {
            writer: self.writer,
            refresh_ms: self.refresh_ms,
        }
    }

    /// Appends the series `labels` with `rest` (its other `TimeSeries`
    /// fields, encoded) to `out` as one entry of a record for `key`: a
    /// definition when `key`'s records have not defined it within the
    /// refresh interval before `now_ms`, else a reference.
    pub fn put<'l>(
        &mut self,
        key: &K,
        labels: impl Iterator<Item = (&'l str, &'l str)> + Clone,
        rest: &[u8],
        now_ms: i64,
        out: &mut Vec<u8>,
    ) -> Written {
        let mut encoded = std::mem::take(&mut self.labels);
        encoded.clear();
        entry::put_labels(labels, &mut encoded);
        let written = self.put_encoded(key, &encoded, rest, now_ms, out);
        self.labels = encoded;
        written
    }

    /// The entries written per key since the last [`Self::reset_counts`].
    pub fn counts(&self) -> impl Iterator<Item = (&K, Counts)> {
        self.tables.iter().map(|(k, t)| (k, t.counts))
    }

    /// Starts the counts of [`Self::counts`] again (after they were
    /// reported).
    pub fn reset_counts(&mut self) {
        for table in self.tables.values_mut() {
            table.counts = Counts::default();
        }
    }

    /// [`SeriesWriter::put`] of labels already encoded as
    /// `TimeSeries.labels` (`entry::put_labels`).
    pub fn put_encoded(
        &mut self,
        key: &K,
        labels: &[u8],
        rest: &[u8],
        now_ms: i64,
        out: &mut Vec<u8>,
    ) -> Written {
        let table = match self.tables.get_mut(key) {
            Some(table) => table,
            None => self.tables.entry(key.clone()).or_default(),
        };
        if now_ms - table.swept_ms >= self.refresh_ms {
            // Forgotten series get a new id when they come back.
            let since = now_ms - self.refresh_ms;
            table.ids.retain(|_, known| known.used_ms >= since);
            table.swept_ms = now_ms;
        }
        let (id, written) = match table.ids.get_mut(labels) {
            Some(known) if now_ms - known.defined_ms < self.refresh_ms => {
                known.used_ms = now_ms;
                (known.id, Written::Reference)
            }
            Some(known) => {
                known.defined_ms = now_ms;
                known.used_ms = now_ms;
                (known.id, Written::Definition)
            }
            None => {
                let id = self.next_id;
                self.next_id += 1;
                let known = Known {
                    id,
                    defined_ms: now_ms,
                    used_ms: now_ms,
                };
                table.ids.insert(labels.into(), known);
                (id, Written::Definition)
            }
        };
        let labels: &[u8] = match written {
            Written::Definition => {
                table.counts.definitions += 1;
                labels
            }
            Written::Reference => {
                table.counts.references += 1;
                &[]
            }
        };
        let len = 1 + varint_len(id) + labels.len() + rest.len();
        out.reserve(1 + 10 + len);
        out.push(KEY_FIELD_1);
        put_varint(out, len as u64);
        out.push(KEY_ID);
        put_varint(out, id);
        out.extend_from_slice(labels);
        out.extend_from_slice(rest);
        written
    }
}

/// Why a `series_ids` value cannot be turned back into a `WriteRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    #[error("not a series_ids WriteRequest: {0}")]
    Structure(&'static str),
    #[error("series {id} of writer {writer:016x} is referenced but was not defined in the {window:?} before")]
    Undefined {
        writer: u64,
        id: u64,
        window: Duration,
    },
}

/// The reader's side: the definitions seen, per (writer, id).
#[derive(Debug, Default)]
pub struct SeriesBook {
    defined: HashMap<(u64, u64), Definition>,
    /// When definitions older than what may still be referenced were last
    /// forgotten (record time).
    swept_ms: i64,
}

#[derive(Debug)]
struct Definition {
    labels: Box<[u8]>,
    /// The timestamp of the record that defined it last.
    at_ms: i64,
}

/// A record of a writer: what [`SeriesBook`] reads.
#[derive(Debug, Clone, Copy)]
pub struct SeriesRecord<'a> {
    pub writer: u64,
    pub refresh_ms: i64,
    /// The record's timestamp.
    pub timestamp_ms: i64,
    /// Its value, decompressed.
    pub value: &'a [u8],
}

impl SeriesRecord<'_> {
    /// How far before this record a reader must read to know every id it
    /// may reference: twice its writer's refresh interval.
    pub fn lookback(&self) -> Duration {
        Duration::from_millis(2 * self.refresh_ms.max(0) as u64)
    }
}

impl SeriesBook {
    /// Learns the definitions in `record` (reading the partition before a
    /// record that referenced an unknown id).
    pub fn learn(&mut self, record: &SeriesRecord<'_>) -> Result<(), SeriesError> {
        self.walk(record, None)
    }

    /// Writes `record`'s value to `out` as a plain `WriteRequest`: each
    /// entry with its labels (learning its definitions on the way), without
    /// field 5. On [`SeriesError::Undefined`] `out` is left partly written;
    /// the definitions before the unknown id are learned.
    pub fn resolve(
        &mut self,
        record: &SeriesRecord<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), SeriesError> {
        self.walk(record, Some(out))
    }

    /// How many definitions are kept.
    pub fn len(&self) -> usize {
        self.defined.len()
    }

    /// Whether no definition is kept.
    pub fn is_empty(&self) -> bool {
        self.defined.is_empty()
    }

    fn walk(
        &mut self,
        record: &SeriesRecord<'_>,
        mut out: Option<&mut Vec<u8>>,
    ) -> Result<(), SeriesError> {
        self.sweep(record);
        let mut rest: Vec<u8> = Vec::new();
        let mut labels: Vec<u8> = Vec::new();
        let mut buf = record.value;
        while !buf.is_empty() {
            let start = buf;
            let (field, wire) = read_key(&mut buf)?;
            if field != 1 || wire != 2 {
                skip_field(&mut buf, wire)?;
                if let Some(out) = out.as_deref_mut() {
                    out.extend_from_slice(&start[..start.len() - buf.len()]);
                }
                continue;
            }
            let mut series = read_len(&mut buf)?;
            labels.clear();
            rest.clear();
            let mut id = None;
            while !series.is_empty() {
                let field_start = series;
                let (field, wire) = read_key(&mut series)?;
                match (field, wire) {
                    (5, 0) => id = Some(read_varint(&mut series)?),
                    (1, 2) => {
                        read_len(&mut series)?;
                        labels.extend_from_slice(&field_start[..field_start.len() - series.len()]);
                    }
                    _ => {
                        skip_field(&mut series, wire)?;
                        rest.extend_from_slice(&field_start[..field_start.len() - series.len()]);
                    }
                }
            }
            let labels: &[u8] = match id {
                // A plain entry: taken as it is.
                None => &labels,
                Some(id) if !labels.is_empty() => {
                    let definition = Definition {
                        labels: labels[..].into(),
                        at_ms: record.timestamp_ms,
                    };
                    self.defined.insert((record.writer, id), definition);
                    &labels
                }
                Some(id) => match self.defined.get(&(record.writer, id)) {
                    Some(definition) => &definition.labels,
                    None if out.is_none() => continue,
                    None => {
                        return Err(SeriesError::Undefined {
                            writer: record.writer,
                            id,
                            window: record.lookback(),
                        })
                    }
                },
            };
            if let Some(out) = out.as_deref_mut() {
                out.push(KEY_FIELD_1);
                put_varint(out, (labels.len() + rest.len()) as u64);
                out.extend_from_slice(labels);
                out.extend_from_slice(&rest);
            }
        }
        Ok(())
    }

    /// Forgets definitions too old to be referenced any more: a writer
    /// defines what it references within its refresh interval, so one
    /// three intervals old (by record time) is stale.
    fn sweep(&mut self, record: &SeriesRecord<'_>) {
        let keep = 3 * record.refresh_ms.max(1);
        if record.timestamp_ms - self.swept_ms < keep {
            return;
        }
        let since = record.timestamp_ms - keep;
        self.defined.retain(|_, d| d.at_ms >= since);
        self.swept_ms = record.timestamp_ms;
    }
}

fn varint_len(value: u64) -> usize {
    prost::encoding::encoded_len_varint(value)
}

fn put_varint(buf: &mut Vec<u8>, value: u64) {
    prost::encoding::encode_varint(value, buf);
}

fn read_varint(buf: &mut &[u8]) -> Result<u64, SeriesError> {
    prost::encoding::decode_varint(buf).map_err(|_| SeriesError::Structure("bad varint"))
}

fn read_key(buf: &mut &[u8]) -> Result<(u64, u8), SeriesError> {
    let key = read_varint(buf)?;
    Ok((key >> 3, (key & 7) as u8))
}

/// Reads a length-delimited field's payload.
fn read_len<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], SeriesError> {
    let len = read_varint(buf)?;
    if len > buf.len() as u64 {
        return Err(SeriesError::Structure("a field runs past the end"));
    }
    let (payload, after) = buf.split_at(len as usize);
    *buf = after;
    Ok(payload)
}

fn skip_field(buf: &mut &[u8], wire: u8) -> Result<(), SeriesError> {
    let fixed = |buf: &mut &[u8], n: usize| {
        if buf.len() < n {
            return Err(SeriesError::Structure("a field runs past the end"));
        }
        *buf = &buf[n..];
        Ok(())
    };
    match wire {
        0 => read_varint(buf).map(drop),
        1 => fixed(buf, 8),
        2 => read_len(buf).map(drop),
        5 => fixed(buf, 4),
        _ => Err(SeriesError::Structure("unknown wire type")),
    }
}

#[cfg(test)]
mod tests;
