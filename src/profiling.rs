//! CPU profiles of the running process: `GET /debug/pprof/profile?seconds=N`
//! on the HTTP listener when `run.pprof` is on (off by default). The pprof
//! crate samples every thread's stack 99 times a second (a SIGPROF timer)
//! for N seconds and the answer is pprof's protobuf (`profile.proto`, not
//! gzipped), which `go tool pprof` reads as it reads Go's
//! `net/http/pprof`. One profile at a time: a process has one SIGPROF
//! timer, so a second request meanwhile gets 409.
//!
//! Depends on: nothing in the crate; `http.rs` serves what it returns.

use std::time::Duration;

use hyper::StatusCode;
use pprof::protos::Message;

/// The path served.
pub const PATH: &str = "/debug/pprof/profile";

/// `seconds` when the query does not give it (as Go's `net/http/pprof`).
pub const DEFAULT_SECONDS: u64 = 30;

/// The longest profile one request may ask for.
pub const MAX_SECONDS: u64 = 60;

/// Samples per second: pprof-rs' default, off the beat of 100 Hz timers.
const FREQUENCY: i32 = 99;

/// Libraries whose frames the signal handler does not unwind: unwinding
/// through them can deadlock (pprof-rs' advice).
const BLOCKLIST: &[&str] = &["libc", "libgcc", "pthread", "vdso"];

/// Why a request got no profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// `seconds` is not a whole number in 1..=MAX_SECONDS.
    #[error("seconds must be a whole number from 1 to {MAX_SECONDS}, not {0:?}")]
    Seconds(String),
    /// Another profile is being taken.
    #[error("a CPU profile is already being taken; try again when it is done")]
    Busy,
    /// The profiler failed to start, stop or encode.
    #[error("cpu profiler: {0}")]
    Profiler(#[from] pprof::Error),
}

/// The profile's length that `query` asks for: `seconds=N`, 1 ≤ N ≤
/// [`MAX_SECONDS`], [`DEFAULT_SECONDS`] when absent.
pub fn seconds(query: Option<&str>) -> Result<Duration, ProfileError> {
    let given = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "seconds")
        .map(|(_, value)| value);
    let Some(value) = given else {
        return Ok(Duration::from_secs(DEFAULT_SECONDS));
    };
    match value.parse::<u64>() {
        Ok(n) if (1..=MAX_SECONDS).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(ProfileError::Seconds(value.to_string())),
    }
}

/// Samples the process for `duration` and encodes the profile.
async fn record(duration: Duration) -> Result<Vec<u8>, ProfileError> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(BLOCKLIST)
        .build()
        .map_err(|e| match e {
            pprof::Error::Running => ProfileError::Busy,
            other => ProfileError::Profiler(other),
        })?;
    tokio::time::sleep(duration).await;
    // Symbolizing the stacks takes a while: off the async threads.
    tokio::task::spawn_blocking(move || {
        let profile = guard
            .report()
            .frames_post_processor(strip_profiler_frames)
            .build()?
            .pprof()?;
        Ok(profile.encode_to_vec())
    })
    .await
    .map_err(|_| ProfileError::Profiler(pprof::Error::NotRunning))?
}

/// Drops the profiler's own frames (the unwinder the SIGPROF handler
/// calls) from the leaf end of a stack, so that a sample's flat time falls
/// on the function it interrupted.
fn strip_profiler_frames(frames: &mut pprof::Frames) {
    let own = frames
        .frames
        .iter()
        .take_while(|frame| frame.iter().all(|symbol| is_profiler(&symbol.name())))
        .count();
    frames.frames.drain(..own);
}

/// Whether a symbol is the profiler's: the unwinder, pprof's signal
/// handler, the kernel's signal return trampoline.
fn is_profiler(name: &str) -> bool {
    name.starts_with("backtrace::")
        || name.starts_with("pprof::")
        || name.starts_with("<pprof::")
        || name == "__restore_rt"
}

/// Takes the profile one request asks for (`seconds` in its query).
pub async fn serve(query: Option<&str>) -> Result<Vec<u8>, ProfileError> {
    record(seconds(query)?).await
}

impl ProfileError {
    /// The HTTP status that says it: 400 for a bad `seconds`, 409 while
    /// another profile is taken, 500 when the profiler fails.
    pub fn status(&self) -> StatusCode {
        match self {
            ProfileError::Seconds(_) => StatusCode::BAD_REQUEST,
            ProfileError::Busy => StatusCode::CONFLICT,
            ProfileError::Profiler(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_default_to_30_and_are_bounded() {
        let s = |q| seconds(q).map(|d| d.as_secs()).map_err(|e| e.to_string());
        assert_eq!(s(None), Ok(30));
        assert_eq!(s(Some("")), Ok(30));
        assert_eq!(s(Some("debug=1")), Ok(30));
        assert_eq!(s(Some("seconds=1")), Ok(1));
        assert_eq!(s(Some("x=y&seconds=60")), Ok(60));
        for bad in [
            "seconds=0",
            "seconds=61",
            "seconds=-1",
            "seconds=2.5",
            "seconds=",
        ] {
            let error = s(Some(bad)).expect_err(bad);
            assert!(error.contains("from 1 to 60"), "{bad}: {error}");
        }
    }

    #[tokio::test]
    async fn a_second_profile_while_one_runs_is_refused() {
        let first = tokio::spawn(record(Duration::from_millis(500)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = serve(Some("seconds=1")).await;
        let refused = second.expect_err("a second profile meanwhile");
        assert!(matches!(refused, ProfileError::Busy));
        assert_eq!(refused.status(), StatusCode::CONFLICT);
        let profile = first.await.expect("join").expect("first profile");
        assert!(!profile.is_empty());
    }
}
