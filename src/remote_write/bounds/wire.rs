//! The protobuf cursor [`check`](super::check) walks with: every read
//! fails with a [`Refusal`] (a `BadProtobuf` decode error), never panics.
//!
//! May depend on: prost's error type and the parent's [`Refusal`].

use super::Refusal;
use crate::remote_write::DecodeError;

/// A field's payload.
#[derive(Clone, Copy)]
pub(super) enum Wire<'a> {
    Varint(u64),
    Fixed,
    Len(&'a [u8]),
}

/// A cursor over protobuf bytes; every read fails with an error, never panics.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn malformed(what: &'static str) -> Refusal {
        DecodeError::BadProtobuf(prost::DecodeError::new(what)).into()
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], Refusal> {
        if n > self.0.len() {
            return Err(Self::malformed("buffer underflow"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    pub(super) fn varint(&mut self) -> Result<u64, Refusal> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.0.get(i) else { break };
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err(Self::malformed("invalid varint"))
    }

    /// The next field, or None at the end.
    pub(super) fn field(&mut self) -> Result<Option<(u64, Wire<'a>)>, Refusal> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(Self::malformed("invalid field number 0"));
        }
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| Self::malformed("length overflow"))?;
                Wire::Len(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            _ => {
                return Err(Self::malformed(
                    "unsupported wire type (groups are not accepted)",
                ))
            }
        };
        Ok(Some((field, wire)))
    }

    /// How many more length-delimited `field`s follow (for error messages).
    pub(super) fn count(&mut self, field: u64) -> Result<usize, Refusal> {
        let mut n = 0;
        while let Some((f, wire)) = self.field()? {
            if f == field && matches!(wire, Wire::Len(_)) {
                n += 1;
            }
        }
        Ok(n)
    }
}
