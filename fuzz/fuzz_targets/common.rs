//! What both fuzz targets share.

/// Whether a group wire type (3 or 4) appears anywhere prost would skip it:
/// at the top level, or in a nested message (series, label, sample,
/// exemplar, histogram, span, metadata; 2.0 nests up to 3 deep).
pub fn holds_group(raw: &[u8]) -> bool {
    fn walk(buf: &[u8], depth: u32) -> bool {
        let mut r = buf;
        while !r.is_empty() {
            let Some((key, n)) = varint(r) else {
                return false;
            };
            r = &r[n..];
            match key & 7 {
                3 | 4 => return true,
                0 => match varint(r) {
                    Some((_, n)) => r = &r[n..],
                    None => return false,
                },
                1 if r.len() >= 8 => r = &r[8..],
                5 if r.len() >= 4 => r = &r[4..],
                2 => {
                    let Some((len, n)) = varint(r) else {
                        return false;
                    };
                    let Some(end) = usize::try_from(len).ok().and_then(|l| l.checked_add(n)) else {
                        return false;
                    };
                    let Some(body) = r.get(n..end) else {
                        return false;
                    };
                    // Nested messages are all field numbers 1..=16 here.
                    if depth < 4 && key >> 3 <= 16 && walk(body, depth + 1) {
                        return true;
                    }
                    r = &r[end..];
                }
                _ => return false,
            }
        }
        false
    }
    walk(raw, 0)
}

fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in buf.iter().take(10).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}
