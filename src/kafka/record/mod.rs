//! The record formats on Kafka, one file each: what the gateway writes to
//! the ingress topic ([`ingress`]), what the router writes to task topics
//! and egress reads ([`task`]), and what router and egress set aside in the
//! dead-letter and late topics ([`dead_letter`]). ARCHITECTURE.md's "Data
//! contracts" describes each; the header names live only here.
//!
//! Every reader of a consumed record's headers goes through
//! [`for_each_header`]: rdkafka 0.38 panics on a header key that is not
//! UTF-8 (`BorrowedHeaders::try_get` unwraps it), and any producer may write
//! one, so that case is an error the caller dead-letters. (The crate
//! forbids `unsafe`, and rdkafka's API only takes `&str` keys, so the
//! guard is tested against the broker: `integration/egress.rs`, a record
//! kcat writes with key 0xff.)
//!
//! Depends on rdkafka's header types and `remote_write`'s encodings only.

pub mod dead_letter;
pub mod ingress;
pub mod series;
pub mod task;

use rdkafka::message::{Header, Headers, OwnedHeaders};

pub use dead_letter::{DeadLetter, Source};
pub use ingress::{
    protocol_name, IngressMeta, HEADER_ENCODING, HEADER_PROTOCOL, HEADER_RECEIVED_AT, HEADER_TENANT,
};
pub use task::{
    encode_task_value, task_value, TaskHeaders, TaskMeta, TaskValueError, HEADER_ROUTE,
    MAX_TASK_VALUE,
};

/// The error of a header key that is not UTF-8.
pub const NOT_UTF8_KEY: &str = "a header key is not UTF-8";

/// Why a record's headers cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// rdkafka would panic on it: see [`for_each_header`].
    #[error("{}", NOT_UTF8_KEY)]
    NotUtf8Key,
    /// A header whose value must be text is not UTF-8.
    #[error("header {0} is not UTF-8")]
    NotUtf8Value(String),
    /// A header we own has a value we cannot read.
    #[error("header {header}: {reason}")]
    Invalid {
        header: &'static str,
        reason: String,
    },
}

/// Calls `visit` with each header in order, stopping at its first error.
/// A header key that is not UTF-8 is the error [`NOT_UTF8_KEY`] instead of
/// rdkafka's panic; only that read is guarded, so a panic in `visit` is
/// not mistaken for one.
pub fn for_each_header<H: Headers>(
    headers: Option<&H>,
    mut visit: impl FnMut(Header<'_, &[u8]>) -> Result<(), HeaderError>,
) -> Result<(), HeaderError> {
    let Some(headers) = headers else {
        return Ok(());
    };
    for index in 0..headers.count() {
        let header =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| headers.try_get(index)))
                .map_err(|_| HeaderError::NotUtf8Key)?;
        if let Some(header) = header {
            visit(header)?;
        }
    }
    Ok(())
}

/// Copies a consumed record's headers through the guard of
/// [`for_each_header`]: a copy holds only UTF-8 keys.
pub fn copy_headers<H: Headers>(headers: Option<&H>) -> Result<Option<OwnedHeaders>, HeaderError> {
    let Some(headers) = headers else {
        return Ok(None);
    };
    let mut copy = OwnedHeaders::new_with_capacity(headers.count());
    for_each_header(Some(headers), |header| {
        copy = std::mem::replace(&mut copy, OwnedHeaders::new()).insert(header);
        Ok(())
    })?;
    Ok(Some(copy))
}

/// `headers` with `(key, value)` appended, a value of None leaving it out.
pub(crate) fn with_headers<'a>(
    mut headers: OwnedHeaders,
    pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> OwnedHeaders {
    for (key, value) in pairs {
        if let Some(value) = value {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_headers_keep_keys_and_values() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_TENANT,
                value: Some("a"),
            })
            .insert(Header::<&str> {
                key: "empty",
                value: None,
            });
        let copy = copy_headers(Some(&headers)).unwrap().unwrap();
        let pairs: Vec<(&str, Option<&[u8]>)> = copy.iter().map(|h| (h.key, h.value)).collect();
        assert_eq!(
            pairs,
            vec![(HEADER_TENANT, Some(&b"a"[..])), ("empty", None)]
        );
        assert!(copy_headers::<OwnedHeaders>(None).unwrap().is_none());
    }

    #[test]
    fn a_visitor_error_stops_the_walk() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "a",
                value: Some("1"),
            })
            .insert(Header {
                key: "b",
                value: Some("2"),
            });
        let mut seen = Vec::new();
        let result = for_each_header(Some(&headers), |h| {
            seen.push(h.key.to_string());
            Err(HeaderError::NotUtf8Value(h.key.to_string()))
        });
        assert_eq!(result, Err(HeaderError::NotUtf8Value("a".into())));
        assert_eq!(seen, ["a"]);
    }

    #[test]
    fn pairs_without_a_value_are_left_out() {
        let headers = with_headers(OwnedHeaders::new(), [("a", Some("1")), ("b", None)]);
        let keys: Vec<&str> = headers.iter().map(|h| h.key).collect();
        assert_eq!(keys, ["a"]);
    }
}
