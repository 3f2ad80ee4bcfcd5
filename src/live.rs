//! [`Live`]: a value that hot reload (`src/reload.rs`) may replace while
//! a role reads it at its own safe points.
//!
//! Depends on: nothing in the crate, so that every role can hold one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A value a role reads at its safe points while a reload may replace it.
pub struct Live<T> {
    value: Arc<RwLock<Arc<T>>>,
    version: Arc<AtomicU64>,
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live {
            value: self.value.clone(),
            version: self.version.clone(),
        }
    }
}

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live {
            value: Arc::new(RwLock::new(Arc::new(value))),
            version: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        match self.value.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the value; readers see it at their next [`Live::get`].
    pub fn set(&self, value: T) {
        let value = Arc::new(value);
        match self.value.write() {
            Ok(mut v) => *v = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Bumped by every [`Live::set`]: a cheap "did it change" check.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_values_are_replaced_and_versioned() {
        let live = Live::new(1);
        let (before, reader) = (live.version(), live.clone());
        live.set(2);
        assert_eq!(*reader.get(), 2);
        assert_ne!(reader.version(), before);
    }
}
