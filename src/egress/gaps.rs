//! Recent gaps for people: `streamroute inspect gaps --state DIR` reads a
//! stopped egress' sled folder, `GET /api/v1/gaps` asks the running egress
//! role (sled lets one process open a folder). Both take the same filters:
//! a PromQL selector over the series' labels (`match`, the router's
//! parser, `src/router/aggregation/selector.rs`), how far back the gap's
//! end may lie (`since`, e.g. `1h`) and how many rows (`limit`), newest
//! first.
//!
//! Each gap was stored with its series' labels (`windows/store.rs`), so a
//! row shows the series as it reached egress, not only its hash.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::egress::windows::store::decode_gap;
use crate::egress::windows::{codec, Gap};
use crate::http::{text, Body, Handler, ResponseFuture};
use crate::remote_write::Label;
use crate::router::aggregation::selector::{Selector, SelectorError};
use crate::state::{split_partition_key, State, StateError, Tree};

/// Rows returned when no limit is given.
pub const DEFAULT_LIMIT: usize = 1_000;

/// The path the egress role serves.
pub const PATH: &str = "/api/v1/gaps";

/// Which gaps to show.
#[derive(Debug, Clone)]
pub struct GapQuery {
    /// Only series this selects.
    pub selector: Option<Selector>,
    /// Only gaps that ended at most this long ago.
    pub since: Option<Duration>,
    /// At most this many rows, newest first.
    pub limit: usize,
}

/// A malformed gap filter; the message names the filter.
#[derive(Debug, thiserror::Error)]
pub enum GapQueryError {
    /// `match` is not a PromQL selector.
    #[error("match: {0}")]
    Match(SelectorError),
    /// `since` is not a duration.
    #[error("since: {text:?}: {source}")]
    Since {
        /// The text given.
        text: String,
        /// Why it is not a duration.
        source: humantime::DurationError,
    },
    /// `limit` is not a count.
    #[error("limit: {0:?} is not a count")]
    Limit(String),
}

impl GapQuery {
    /// From the textual filters; the error names the bad one.
    pub fn parse(
        selector: Option<&str>,
        since: Option<&str>,
        limit: Option<&str>,
    ) -> Result<GapQuery, GapQueryError> {
        let selector = selector
            .map(|s| Selector::parse(s).map_err(GapQueryError::Match))
            .transpose()?;
        let since = since
            .map(|s| {
                humantime::parse_duration(s).map_err(|source| GapQueryError::Since {
                    text: s.to_string(),
                    source,
                })
            })
            .transpose()?;
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(l) => l.parse().map_err(|_| GapQueryError::Limit(l.to_string()))?,
        };
        Ok(GapQuery {
            selector,
            since,
            limit,
        })
    }
}

/// One gap with where it was found and its series' labels.
#[derive(Debug, Clone)]
pub struct GapRow {
    /// Task topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The gap.
    pub gap: Gap,
    /// The series' labels, sorted by name.
    pub labels: Vec<Label>,
}

impl GapRow {
    /// The series in PromQL form: `name{a="b"}`.
    pub fn series(&self) -> String {
        let mut name = "";
        let mut rest = Vec::new();
        for l in &self.labels {
            if l.name == "__name__" {
                name = &l.value;
            } else {
                rest.push(format!("{}={:?}", l.name, l.value));
            }
        }
        format!("{name}{{{}}}", rest.join(","))
    }

    /// The JSON object of the API.
    pub fn json(&self) -> serde_json::Value {
        let labels: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone().into()))
            .collect();
        serde_json::json!({
            "topic": self.topic,
            "partition": self.partition,
            "series": labels,
            "hash": format!("{:016x}", self.gap.hash),
            "start_ms": self.gap.start,
            "end_ms": self.gap.end,
            "start": rfc3339(self.gap.start),
            "end": rfc3339(self.gap.end),
            "missing": self.gap.missing,
            "synthesized": self.gap.synthesized,
        })
    }
}

/// Milliseconds since the epoch as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    let t = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    humantime::format_rfc3339_millis(t).to_string()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The gaps in `state` that `query` selects, newest end first. Entries
/// that do not decode are skipped and counted in the second value.
pub fn recent(state: &State, query: &GapQuery) -> Result<(Vec<GapRow>, usize), StateError> {
    let floor = query
        .since
        .map(|s| now_ms().saturating_sub(s.as_millis() as i64));
    let mut rows = Vec::new();
    let mut bad = 0;
    for (key, value) in state.scan(Tree::Gaps, b"")? {
        // partition key + end (8) + hash (8)
        let Some(split) = key.len().checked_sub(16) else {
            bad += 1;
            continue;
        };
        let (Some((topic, partition)), Some(gap)) =
            (split_partition_key(&key[..split]), decode_gap(&key, &value))
        else {
            bad += 1;
            continue;
        };
        if floor.is_some_and(|f| gap.end < f) {
            continue;
        }
        let mut labels = codec::decode_labels(&gap.labels);
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(sel) = &query.selector {
            if !sel.matches(&labels) {
                continue;
            }
        }
        rows.push(GapRow {
            topic,
            partition,
            gap,
            labels,
        });
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.gap.end));
    rows.truncate(query.limit);
    Ok((rows, bad))
}

/// The egress role's state, once it is open, for the API.
#[derive(Clone, Default)]
pub struct GapsSource(Arc<RwLock<Option<State>>>);

impl GapsSource {
    /// The egress role opened `state`.
    pub fn set(&self, state: State) {
        if let Ok(mut s) = self.0.write() {
            *s = Some(state);
        }
    }

    fn get(&self) -> Option<State> {
        self.0.read().ok().and_then(|s| s.clone())
    }
}

/// Serves `GET /api/v1/gaps` and hands every other request to `inner`
/// (the gateway when it runs in this process), whose guard (such as
/// `gateway.auth`) also guards the gaps.
pub struct GapsApi {
    source: GapsSource,
    inner: Option<Arc<dyn Handler>>,
}

impl GapsApi {
    /// The API over `source`, in front of `inner`.
    pub fn new(source: GapsSource, inner: Option<Arc<dyn Handler>>) -> GapsApi {
        GapsApi { source, inner }
    }

    fn answer(&self, query: Option<&str>) -> Response<Body> {
        let params = query_params(query.unwrap_or(""));
        let get = |k: &str| params.get(k).map(String::as_str);
        let filters = GapQuery::parse(get("match[]").or(get("match")), get("since"), get("limit"));
        let query = match filters {
            Ok(q) => q,
            Err(e) => return json(StatusCode::BAD_REQUEST, error_body(&e.to_string())),
        };
        let Some(state) = self.source.get() else {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                error_body("the egress state is not open yet"),
            );
        };
        match recent(&state, &query) {
            Ok((rows, _)) => {
                let data: Vec<_> = rows.iter().map(GapRow::json).collect();
                json(
                    StatusCode::OK,
                    serde_json::json!({"status": "success", "data": data}),
                )
            }
            Err(e) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                error_body(&format!("cannot read the gaps: {e}")),
            ),
        }
    }
}

fn error_body(message: &str) -> serde_json::Value {
    serde_json::json!({"status": "error", "error": message})
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut r = text(status, v.to_string());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

impl Handler for GapsApi {
    fn handle(self: Arc<Self>, request: Request<Incoming>) -> ResponseFuture {
        let ours = request.uri().path() == PATH;
        if !ours {
            return match &self.inner {
                Some(inner) => inner.clone().handle(request),
                None => Box::pin(async { text(StatusCode::NOT_FOUND, "not found\n") }),
            };
        }
        let response = if let Some(refused) = self.guard(&request) {
            refused
        } else if request.method() != Method::GET {
            text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n")
        } else {
            self.answer(request.uri().query())
        };
        Box::pin(async move { response })
    }

    fn guard(&self, request: &Request<Incoming>) -> Option<Response<Body>> {
        self.inner.as_ref().and_then(|i| i.guard(request))
    }

    fn header_read_timeout(&self) -> Duration {
        match &self.inner {
            Some(i) => i.header_read_timeout(),
            None => Duration::from_secs(10),
        }
    }
}

/// `a=b&c=d` decoded (`+` and `%XX`); a repeated key keeps its last value.
fn query_params(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_as_browsers_send_them() {
        let p = query_params("match%5B%5D=%7Bjob%3D%22x%22%7D&since=1h&limit=5&a+b=c%2");
        assert_eq!(p["match[]"], r#"{job="x"}"#);
        assert_eq!(p["since"], "1h");
        assert_eq!(p["a b"], "c%2", "a broken escape stays as it is");
    }

    #[test]
    fn bad_filters_name_themselves() {
        let error = |s, since, l| GapQuery::parse(s, since, l).unwrap_err();
        let e = error(Some("{job="), None, None);
        assert!(matches!(e, GapQueryError::Match(_)), "{e:?}");
        assert!(e.to_string().starts_with("match: "), "{e}");
        let e = error(None, Some("soon"), None);
        assert!(matches!(e, GapQueryError::Since { .. }), "{e:?}");
        assert!(e.to_string().starts_with("since: \"soon\": "), "{e}");
        let e = error(None, None, Some("-1"));
        assert!(matches!(e, GapQueryError::Limit(_)), "{e:?}");
        assert!(e.to_string().starts_with("limit: "), "{e}");
        assert_eq!(
            GapQuery::parse(None, None, None).unwrap().limit,
            DEFAULT_LIMIT
        );
    }

    #[test]
    fn a_row_shows_its_series_in_promql_form() {
        let row = GapRow {
            topic: "t".into(),
            partition: 0,
            gap: Gap {
                hash: 1,
                labels: Arc::from(&b""[..]),
                start: 0,
                end: 1_500,
                missing: 1,
                synthesized: 0,
            },
            labels: vec![Label::new("__name__", "up"), Label::new("job", "a\"b")],
        };
        assert_eq!(row.series(), r#"up{job="a\"b"}"#);
        assert_eq!(row.json()["end"], "1970-01-01T00:00:01.500Z");
    }
}
