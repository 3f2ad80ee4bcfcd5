//! Go's `strings.ToLower` / `strings.ToUpper` for the `lowercase` and
//! `uppercase` actions.
//!
//! Go maps every rune on its own with the Unicode *simple* case mapping
//! (`unicode.ToLower`/`unicode.ToUpper`): one rune in, one rune out, no
//! context. Rust's `str::to_lowercase`/`to_uppercase` use the *full* mapping
//! (`ß` → `SS`, final sigma `Σ` → `ς`, `İ` → `i̇`), so they can't be used
//! directly. Rust's per-char mapping equals the simple one whenever it yields a
//! single char; the few chars whose full mapping has several chars are
//! handled here.

/// Go's `strings.ToLower` of `s`, appended to `dst`.
pub(crate) fn push_lower(dst: &mut String, s: &str) {
    dst.extend(s.chars().map(simple_lower));
}

/// Go's `strings.ToLower`.
pub(crate) fn go_to_lower(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_lower(&mut out, s);
    out
}

/// Go's `strings.ToUpper` of `s`, appended to `dst`.
pub(crate) fn push_upper(dst: &mut String, s: &str) {
    dst.extend(s.chars().map(simple_upper));
}

fn simple_lower(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    // U+0130 (İ) is the only char whose full lowercase is longer than one
    // char ("i\u{307}"); its simple lowercase is plain 'i'.
    if c == '\u{130}' {
        return 'i';
    }
    single(c.to_lowercase()).unwrap_or(c)
}

fn simple_upper(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    if let Some(upper) = greek_ypogegrammeni_upper(c) {
        return upper;
    }
    // Other chars with a multi-char full uppercase (ß, ŉ, ǰ, ligatures like
    // ﬀ, Greek with accents, titlecase ᾈ…) have no simple uppercase: Go
    // leaves them unchanged.
    single(c.to_uppercase()).unwrap_or(c)
}

/// Small Greek letters with ypogegrammeni have a simple uppercase (the
/// titlecase letter with prosgegrammeni) although their full uppercase is
/// two chars (e.g. ᾳ → ᾼ simple, "ΑΙ" full).
fn greek_ypogegrammeni_upper(c: char) -> Option<char> {
    let code = u32::from(c);
    let mapped = match code {
        0x1F80..=0x1F87 | 0x1F90..=0x1F97 | 0x1FA0..=0x1FA7 => code + 8,
        0x1FB3 | 0x1FC3 | 0x1FF3 => code + 9,
        _ => return None,
    };
    char::from_u32(mapped)
}

fn single(mut chars: impl Iterator<Item = char>) -> Option<char> {
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn go_to_upper(s: &str) -> String {
        let mut out = String::new();
        push_upper(&mut out, s);
        out
    }

    #[test]
    fn ascii() {
        assert_eq!(go_to_lower("bAr123Foo"), "bar123foo");
        assert_eq!(go_to_upper("bAr123Foo"), "BAR123FOO");
        assert_eq!(go_to_lower(""), "");
    }

    #[test]
    fn lower_is_per_rune_without_context() {
        // Rust's str::to_lowercase would give a final sigma "οδος".
        assert_eq!(go_to_lower("ΟΔΟΣ"), "οδοσ");
        assert_eq!(go_to_lower("İstanbul"), "istanbul");
        assert_eq!(go_to_lower("ÀÉÎ"), "àéî");
        assert_eq!(go_to_lower("\u{212A}"), "k"); // Kelvin sign
    }

    #[test]
    fn upper_uses_simple_mapping() {
        assert_eq!(go_to_upper("straße"), "STRAßE");
        assert_eq!(go_to_upper("ﬀ"), "ﬀ");
        assert_eq!(go_to_upper("ŉ"), "ŉ");
        assert_eq!(go_to_upper("ᾳ"), "ᾼ");
        assert_eq!(go_to_upper("ᾀ"), "ᾈ");
        assert_eq!(go_to_upper("ᾈ"), "ᾈ");
        assert_eq!(go_to_upper("ῳ"), "ῼ");
        assert_eq!(go_to_upper("ǆ"), "Ǆ");
        assert_eq!(go_to_upper("éa"), "ÉA");
    }
}
