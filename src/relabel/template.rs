//! Go `regexp` template semantics used by relabeling, and label-name checks.
//!
//! * [`expand`] is Go's `Regexp.ExpandString`: `$name` takes the longest run of
//!   Unicode letters, digits and `_` (so `$1x` names group `1x`), `${name}`
//!   delimits it, `$$` is a literal `$`, a malformed `$` is kept as text, and a
//!   missing or non-participating group expands to nothing. A name made only
//!   of ASCII digits without a leading zero is a group number.
//! * [`push_replace_all`] is Go's `Regexp.ReplaceAllString` (used by `labelmap`).
//! * Label names use Prometheus' legacy validation `^[a-zA-Z_][a-zA-Z0-9_]*$`.

use std::sync::LazyLock;

use regex::{CaptureLocations, Regex};

/// Whether `name` is a valid label name under Prometheus' legacy validation
/// (`^[a-zA-Z_][a-zA-Z0-9_]*$`).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Prometheus' `relabelTargetLegacy`,
/// `^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$` with ASCII `\w`: a label
/// name in which `$n`, `$name` and `${name}` references may appear.
pub(crate) fn is_valid_target_template(s: &str) -> bool {
    let bytes = s.as_bytes();
    match bytes.first() {
        Some(&b) if b.is_ascii_alphabetic() || b == b'_' || b == b'$' => {}
        _ => return false,
    }
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'$' {
            i += 1;
            let braced = bytes.get(i) == Some(&b'{');
            if braced {
                i += 1;
            }
            let start = i;
            while bytes.get(i).is_some_and(|&b| is_word_byte(b)) {
                i += 1;
            }
            if i == start {
                return false;
            }
            if braced {
                if bytes.get(i) != Some(&b'}') {
                    return false;
                }
                i += 1;
            }
        } else if is_word_byte(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Appends `template` to `dst`, expanding `$` references to the text of
/// capture group `group(i)` of `re`'s match (Go's `Regexp.ExpandString`).
pub(crate) fn expand<'t>(
    dst: &mut String,
    template: &str,
    re: &Regex,
    group: impl Fn(usize) -> Option<&'t str>,
) {
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        dst.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            dst.push('$');
            rest = after;
            continue;
        }
        let Some(reference) = extract(rest) else {
            // Malformed reference: Go keeps the `$` as raw text.
            dst.push('$');
            continue;
        };
        rest = reference.rest;
        let text = match reference.number {
            Some(n) => group(n),
            None => re
                .capture_names()
                .enumerate()
                .filter(|(_, name)| *name == Some(reference.name))
                .find_map(|(i, _)| group(i)),
        };
        if let Some(text) = text {
            dst.push_str(text);
        }
    }
    dst.push_str(rest);
}

/// A parsed `$name` / `${name}` reference (the `$` already consumed).
struct Reference<'a> {
    name: &'a str,
    number: Option<usize>,
    rest: &'a str,
}

/// Go's `regexp.extract`.
fn extract(s: &str) -> Option<Reference<'_>> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|&(_, c)| !is_go_name_char(c))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    let mut rest = &body[end..];
    if braced {
        rest = rest.strip_prefix('}')?;
    }
    Some(Reference {
        name,
        number: group_number(name),
        rest,
    })
}

/// Go treats a name as a group number if it is all ASCII digits, has no
/// leading zero, and does not overflow (Go stops at 1e8).
fn group_number(name: &str) -> Option<usize> {
    if name.len() > 1 && name.starts_with('0') {
        return None;
    }
    let mut num: usize = 0;
    for b in name.bytes() {
        if !b.is_ascii_digit() || num >= 100_000_000 {
            return None;
        }
        num = num * 10 + usize::from(b - b'0');
    }
    Some(num)
}

/// Go's `unicode.IsLetter(c) || unicode.IsDigit(c) || c == '_'`, i.e.
/// general category L or Nd. Rust's `char::is_alphanumeric` is broader
/// (Alphabetic, Nl, No), so non-ASCII chars go through a Unicode class.
fn is_go_name_char(c: char) -> bool {
    static LETTER_OR_DIGIT: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r"^[\p{L}\p{Nd}]$").ok());
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    let mut buf = [0u8; 4];
    match LETTER_OR_DIGIT.as_ref() {
        Some(re) => re.is_match(c.encode_utf8(&mut buf)),
        // Unreachable in practice (constant pattern); stay close to Go.
        None => c.is_alphanumeric(),
    }
}

/// Go's `Regexp.ReplaceAllString(src, template)`, appended to `dst`: every
/// non-overlapping match is replaced by the expanded template; an empty
/// match right after a previous match is not replaced. `locs` holds the
/// capture positions (made by `re.capture_locations()`, kept by the caller
/// from call to call, so that nothing is allocated here).
pub(crate) fn push_replace_all(
    dst: &mut String,
    re: &Regex,
    src: &str,
    template: &str,
    locs: &mut CaptureLocations,
) {
    let mut last_end = 0;
    let mut search = 0;
    while search <= src.len() {
        let Some(m) = re.captures_read_at(locs, src, search) else {
            break;
        };
        dst.push_str(src.get(last_end..m.start()).unwrap_or_default());
        if m.end() > last_end || m.start() == 0 {
            let locs = &*locs;
            expand(dst, template, re, |i| {
                locs.get(i).and_then(|(start, end)| src.get(start..end))
            });
        }
        last_end = m.end();
        // Advance past this match, always by at least one character.
        let width = src
            .get(search..)
            .and_then(|s| s.chars().next())
            .map_or(0, char::len_utf8);
        if search + width > m.end() {
            search += width;
        } else if search + 1 > m.end() {
            // Only reachable at the end of the input, where width is 0.
            search += 1;
        } else {
            search = m.end();
        }
    }
    dst.push_str(src.get(last_end..).unwrap_or_default());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn replace_all(re: &Regex, src: &str, template: &str) -> String {
        let mut out = String::new();
        push_replace_all(&mut out, re, src, template, &mut re.capture_locations());
        out
    }

    fn exp(pattern: &str, input: &str, template: &str) -> String {
        let re = Regex::new(pattern).unwrap();
        let caps = re.captures(input).unwrap();
        let mut out = String::new();
        expand(&mut out, template, &re, |i| caps.get(i).map(|m| m.as_str()));
        out
    }

    #[test]
    fn label_names() {
        for ok in ["a", "_", "__name__", "job", "A_1", "_9"] {
            assert!(is_valid_label_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a.b", "é", "a b", "$1", "a\n"] {
            assert!(!is_valid_label_name(bad), "{bad}");
        }
    }

    /// Prometheus' TestTargetLabelLegacyValidity cases.
    #[test]
    fn target_templates_upstream_cases() {
        let cases = [
            ("-label", false),
            ("label", true),
            ("label${1}", true),
            ("${1}label", true),
            ("${1}", true),
            ("${", false),
            ("$", false),
            ("${}", false),
            ("foo${", false),
            ("$1", true),
            ("asd$2asd", true),
            ("-foo${1}bar-", false),
            ("bar.foo${1}bar", false),
            ("_${1}_", true),
            ("foo${bar}foo", true),
        ];
        for (s, valid) in cases {
            assert_eq!(is_valid_target_template(s), valid, "{s:?}");
        }
    }

    /// The hand-written matcher agrees with Prometheus' regex (ASCII `\w`).
    #[test]
    fn target_templates_agree_with_upstream_regex() {
        let re = Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").unwrap();
        let re = Regex::new(&re.as_str().replace(r"\w", r"[0-9A-Za-z_]")).unwrap();
        let alphabet = ["a", "Z", "_", "1", "$", "{", "}", "-", ".", "é"];
        let mut inputs = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for s in &inputs {
                for a in alphabet {
                    next.push(format!("{s}{a}"));
                }
            }
            inputs.extend(next);
            inputs.dedup();
        }
        for s in &inputs {
            assert_eq!(is_valid_target_template(s), re.is_match(s), "{s:?}");
        }
    }

    #[test]
    fn expand_numbers_and_braces() {
        assert_eq!(exp("^(a)(b)$", "ab", "$1-$2"), "a-b");
        assert_eq!(exp("^(a)(b)$", "ab", "${1}x${2}"), "axb");
        assert_eq!(exp("^(a)(b)$", "ab", "$0"), "ab");
        assert_eq!(exp("^(f)(.*)$", "foo", "ch${1}-ch${1}"), "chf-chf");
    }

    #[test]
    fn expand_name_is_longest_word_run() {
        // `$1x` refers to a group named "1x", which does not exist.
        assert_eq!(exp("^(a)$", "a", "$1x"), "");
        assert_eq!(exp("^(a)$", "a", "$1_"), "");
        assert_eq!(exp("^(a)$", "a", "$1-"), "a-");
        assert_eq!(exp("^(?P<x1>a)$", "a", "$x1"), "a");
        assert_eq!(exp("^(?P<x>a)$", "a", "$x1"), "");
        // Go counts Unicode letters as name characters.
        assert_eq!(exp("^(a)$", "a", "$1é"), "");
        assert_eq!(exp("^(a)$", "a", "${1}é"), "aé");
    }

    #[test]
    fn expand_named_groups() {
        let pattern = "^(?P<first>a)(?<second>b)$";
        assert_eq!(exp(pattern, "ab", "$first.${second}"), "a.b");
        assert_eq!(exp(pattern, "ab", "$missing"), "");
    }

    #[test]
    fn expand_missing_and_unmatched_groups_are_empty() {
        assert_eq!(exp("^(a)$", "a", "[$2]"), "[]");
        assert_eq!(exp("^(a)|(b)$", "a", "[$2]"), "[]");
        assert_eq!(exp("^(a)$", "a", "[$99999999999]"), "[]");
    }

    #[test]
    fn expand_leading_zero_is_a_name_not_a_number() {
        assert_eq!(exp("^(a)$", "a", "$01"), "");
        assert_eq!(exp("^(a)$", "a", "${01}"), "");
        assert_eq!(exp("^(a)$", "a", "$00"), "");
    }

    #[test]
    fn expand_dollar_escapes_and_malformed_references() {
        assert_eq!(exp("^(a)$", "a", "$$1"), "$1");
        assert_eq!(exp("^(a)$", "a", "$$$1"), "$a");
        assert_eq!(exp("^(a)$", "a", "x$"), "x$");
        assert_eq!(exp("^(a)$", "a", "$-"), "$-");
        assert_eq!(exp("^(a)$", "a", "${1"), "${1");
        assert_eq!(exp("^(a)$", "a", "${}"), "${}");
        assert_eq!(exp("^(a)$", "a", "${-}"), "${-}");
        assert_eq!(exp("^(a)$", "a", "no refs"), "no refs");
        assert_eq!(exp("^(a)$", "a", ""), "");
    }

    /// Go's `Regexp.Expand` reads `$12` as group 12, not group 1 then "2".
    #[test]
    fn group_numbers_of_two_digits() {
        let twelve = "(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)(l)";
        assert_eq!(exp(twelve, "abcdefghijkl", "$12-${11}-$10"), "l-k-j");
    }

    #[test]
    fn replace_all_anchored_replaces_whole_string() {
        let re = Regex::new("^(?s:__meta_(my.*))$").unwrap();
        assert_eq!(replace_all(&re, "__meta_my_bar", "${1}"), "my_bar");
        assert_eq!(replace_all(&re, "other", "${1}"), "other");
    }

    #[test]
    fn replace_all_unanchored_matches_go() {
        // Results of Go's regexp.MustCompile(p).ReplaceAllString(src, t).
        let re = Regex::new("a*").unwrap();
        assert_eq!(replace_all(&re, "baaac", "X"), "XbXcX");
        let re = Regex::new("b").unwrap();
        assert_eq!(replace_all(&re, "abcbd", "[$0]"), "a[b]c[b]d");
        let re = Regex::new("").unwrap();
        assert_eq!(replace_all(&re, "ab", "-"), "-a-b-");
        assert_eq!(replace_all(&re, "", "-"), "-");
        let re = Regex::new("é*").unwrap();
        assert_eq!(replace_all(&re, "aéb", "X"), "XaXbX");
        // Empty matches step a whole character, never into one.
        let re = Regex::new("x*").unwrap();
        assert_eq!(replace_all(&re, "éb", "-"), "-é-b-");
        // Matches do not overlap: the search resumes at the end of the last.
        let re = Regex::new("ab|bcd").unwrap();
        assert_eq!(replace_all(&re, "abcd", "X"), "Xcd");
        // ... also after a match of several multi-byte characters.
        let re = Regex::new("a|éé|éx").unwrap();
        assert_eq!(replace_all(&re, "aaaaaaéééx", "X"), "XXXXXXXX");
    }
}
