//! Translates a Go (RE2, `regexp/syntax` with Perl flags) pattern into an
//! equivalent pattern for Rust's `regex` crate.
//!
//! Both are RE2-family engines with leftmost-first semantics, but the syntax
//! differs in ways that silently change matches, so every pattern passes
//! through here once, at rule compile time:
//!
//! * `\d \w \s \b` (and negations) are ASCII-only in Go, Unicode in Rust;
//!   `\s` in Go is `[\t\n\f\r ]` (no `\v`).
//! * Inside classes Rust treats `[`, `&&`, `--`, `~~` as set syntax; Go treats
//!   them as literals.
//! * Go reads `{` that does not start a valid repeat (`a{`, `x{,3}`, `{01}`)
//!   as a literal; Rust rejects or reinterprets it. Go caps repeats at 1000.
//! * Go-only syntax: `\Q…\E`, octal escapes (`\101`), `\p{^Greek}`.
//! * Rust-only syntax Go rejects: flags other than `imsU` (e.g. `x`, `u`),
//!   escapes such as `\<`, `\u0041`, `\e`.
//!
//! Everything else is copied verbatim. Remaining known differences: Unicode
//! class names are matched loosely by Rust (Go wants exact names), capture
//! group names starting with a digit are valid in Go only, and the Unicode
//! table versions of the two libraries differ.
//!
//! Bracketed and POSIX classes are written out by `goregex_class.rs`, as
//! methods of the same `Translator` (it depends on this module, not the
//! other way round); this module depends only on `regex` (for escaping
//! literals).

/// Go's `\w`.
const WORD: &str = "0-9A-Za-z_";
/// Go's `\s`.
const SPACE: &str = r"\t\n\x0C\r ";
/// Go's `\d`.
const DIGIT: &str = "0-9";

/// Go's maximum repeat count.
const MAX_REPEAT: u32 = 1000;

/// Why Go would refuse a pattern, worded like Go's `regexp/syntax` errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// A `\` ends the pattern.
    #[error("trailing backslash at end of expression")]
    TrailingBackslash,
    /// An escape Go does not know, e.g. `\<`; holds the escape as written.
    #[error("invalid escape sequence: `{0}`")]
    Escape(String),
    /// A class range or class name Go refuses, e.g. `z-a`, `[:foo:]`.
    #[error("invalid character class range: `{0}`")]
    ClassRange(String),
    /// A `[` without its `]`.
    #[error("missing closing ]")]
    MissingBracket,
    /// A `(?` without its `)`.
    #[error("missing closing )")]
    MissingParen,
    /// A repeat above 1000 or with max below min, e.g. `{3,2}`.
    #[error("invalid repeat count: `{0}`")]
    RepeatCount(String),
    /// `(?P<` without the closing `>`.
    #[error("invalid named capture")]
    UnclosedCaptureName,
    /// A capture name that is empty or not word characters.
    #[error("invalid named capture: `{0}`")]
    CaptureName(String),
    /// A group flag Go does not take, e.g. `(?x)`.
    #[error("invalid or unsupported Perl syntax")]
    PerlSyntax,
}

/// Translates a Go regex into Rust `regex` syntax with the same meaning.
/// Errors are patterns Go itself rejects.
pub(crate) fn translate(pattern: &str) -> Result<String, SyntaxError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut t = Translator {
        chars: &chars,
        pos: 0,
        out: String::with_capacity(pattern.len() + 16),
    };
    while let Some(c) = t.peek(0) {
        match c {
            '\\' => t.escape()?,
            '[' => t.class()?,
            '{' => t.brace()?,
            '(' => t.group_open()?,
            _ => {
                t.pos += 1;
                t.out.push(c);
            }
        }
    }
    Ok(t.out)
}

/// A cursor over the pattern and the Rust pattern written so far; the
/// character-class half of its methods lives in [`super::goregex_class`].
pub(super) struct Translator<'a> {
    pub(super) chars: &'a [char],
    pub(super) pos: usize,
    pub(super) out: String,
}

impl Translator<'_> {
    pub(super) fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.pos + k).copied()
    }

    pub(super) fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.pos += 1;
        Some(c)
    }

    pub(super) fn starts_with(&self, s: &str) -> bool {
        s.chars().enumerate().all(|(k, c)| self.peek(k) == Some(c))
    }

    fn push_literal(&mut self, c: char) {
        let mut buf = [0u8; 4];
        self.out.push_str(&regex::escape(c.encode_utf8(&mut buf)));
    }

    /// An escape outside a character class.
    fn escape(&mut self) -> Result<(), SyntaxError> {
        self.pos += 1; // the backslash
        let Some(c) = self.bump() else {
            return Err(SyntaxError::TrailingBackslash);
        };
        match c {
            'Q' => {
                let mut literal = String::new();
                while self.peek(0).is_some() && !self.starts_with(r"\E") {
                    literal.extend(self.bump());
                }
                if self.starts_with(r"\E") {
                    self.pos += 2;
                }
                self.out.push_str(&regex::escape(&literal));
            }
            'd' | 'D' | 'w' | 'W' | 's' | 'S' => {
                let (body, negated) = perl_class(c);
                self.out.push_str(if negated { "[^" } else { "[" });
                self.out.push_str(body);
                self.out.push(']');
            }
            'b' => self.out.push_str(r"(?-u:\b)"),
            'B' => self.out.push_str(r"(?-u:\B)"),
            'p' | 'P' => self.unicode_class(c)?,
            'A' | 'z' => {
                self.out.push('\\');
                self.out.push(c);
            }
            _ => {
                let literal = self.escaped_char(c)?;
                self.push_literal(literal);
            }
        }
        Ok(())
    }

    /// The character denoted by `\c` (after the backslash and `c` were
    /// consumed): octal, hex, C escapes, or escaped punctuation. Go's
    /// `parseEscape`.
    pub(super) fn escaped_char(&mut self, c: char) -> Result<char, SyntaxError> {
        let invalid = || SyntaxError::Escape(format!("\\{c}"));
        match c {
            '1'..='7' if !self.peek(0).is_some_and(is_octal) => Err(invalid()),
            '0'..='7' => {
                let mut value = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek(0).and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            value = value * 8 + d;
                            self.pos += 1;
                        }
                        None => break,
                    }
                }
                char::from_u32(value).ok_or_else(invalid)
            }
            'x' => self.hex_escape(),
            'a' => Ok('\x07'),
            'f' => Ok('\x0C'),
            'n' => Ok('\n'),
            'r' => Ok('\r'),
            't' => Ok('\t'),
            'v' => Ok('\x0B'),
            _ if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(c),
            _ => Err(invalid()),
        }
    }

    /// `\xHH` or `\x{H…}` (the `\x` already consumed).
    fn hex_escape(&mut self) -> Result<char, SyntaxError> {
        let invalid = || SyntaxError::Escape(r"\x".into());
        let digits: String = if self.peek(0) == Some('{') {
            self.pos += 1;
            let mut digits = String::new();
            loop {
                match self.bump() {
                    Some('}') => break,
                    Some(d) if d.is_ascii_hexdigit() => digits.push(d),
                    _ => return Err(invalid()),
                }
            }
            digits
        } else {
            let digits: String = [self.peek(0), self.peek(1)].into_iter().flatten().collect();
            if digits.len() != 2 || !digits.chars().all(|d| d.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            self.pos += 2;
            digits
        };
        // Go takes any number of digits (leading zeros too) up to
        // U+10FFFF; a value past u32 fails to parse here, past it in Go.
        if digits.is_empty() {
            return Err(invalid());
        }
        u32::from_str_radix(&digits, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(invalid)
    }

    /// `\pX`, `\p{Name}`, `\p{^Name}` (and `\P…`), the `\p` already consumed.
    /// Go negates with `^` inside the braces; Rust wants `\P`.
    pub(super) fn unicode_class(&mut self, p: char) -> Result<(), SyntaxError> {
        let invalid = || SyntaxError::ClassRange(format!("\\{p}"));
        let mut negated = p == 'P';
        let name: String = if self.peek(0) == Some('{') {
            self.pos += 1;
            if self.peek(0) == Some('^') {
                self.pos += 1;
                negated = !negated;
            }
            let mut name = String::new();
            loop {
                match self.bump() {
                    Some('}') => break,
                    Some(c) => name.push(c),
                    None => return Err(invalid()),
                }
            }
            name
        } else {
            self.bump().ok_or_else(invalid)?.to_string()
        };
        if name.is_empty() {
            return Err(invalid());
        }
        self.out.push_str(if negated { r"\P{" } else { r"\p{" });
        self.out.push_str(&name);
        self.out.push('}');
        Ok(())
    }

    /// `{`: a repeat if it parses as one in Go, otherwise a literal.
    fn brace(&mut self) -> Result<(), SyntaxError> {
        let Some((min, max, len)) = parse_repeat(&self.chars[self.pos..]) else {
            self.pos += 1;
            self.out.push_str(r"\{");
            return Ok(());
        };
        let text: String = self.chars[self.pos..self.pos + len].iter().collect();
        if min > MAX_REPEAT || max.is_some_and(|max| max > MAX_REPEAT || max < min) {
            return Err(SyntaxError::RepeatCount(text));
        }
        self.pos += len;
        self.out.push_str(&text);
        Ok(())
    }

    /// `(`: validates Go's group syntax, which is narrower than Rust's.
    fn group_open(&mut self) -> Result<(), SyntaxError> {
        self.pos += 1;
        if self.peek(0) != Some('?') {
            self.out.push('(');
            return Ok(());
        }
        self.pos += 1;
        if self.starts_with("P<") || self.peek(0) == Some('<') {
            self.pos += if self.peek(0) == Some('P') { 2 } else { 1 };
            let mut name = String::new();
            loop {
                match self.bump() {
                    Some('>') => break,
                    Some(c) => name.push(c),
                    None => return Err(SyntaxError::UnclosedCaptureName),
                }
            }
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(SyntaxError::CaptureName(name));
            }
            self.out.push_str("(?P<");
            self.out.push_str(&name);
            self.out.push('>');
            return Ok(());
        }
        // Flags: (?flags) or (?flags:...), Go's parsePerlFlags.
        let mut flags = String::new();
        let mut negated = false;
        let mut saw_flag = false;
        loop {
            let Some(c) = self.bump() else {
                return Err(SyntaxError::MissingParen);
            };
            match c {
                'i' | 'm' | 's' | 'U' => {
                    flags.push(c);
                    saw_flag = true;
                }
                '-' if !negated => {
                    flags.push(c);
                    negated = true;
                    saw_flag = false;
                }
                ':' | ')' if !negated || saw_flag => {
                    if c == ':' {
                        self.out.push_str("(?");
                        self.out.push_str(&flags);
                        self.out.push(':');
                    } else if !flags.is_empty() {
                        self.out.push_str("(?");
                        self.out.push_str(&flags);
                        self.out.push(')');
                    }
                    return Ok(());
                }
                _ => return Err(SyntaxError::PerlSyntax),
            }
        }
    }
}

fn is_octal(c: char) -> bool {
    ('0'..='7').contains(&c)
}

/// Go's `parseRepeat`: `{n}`, `{n,}` or `{n,m}` with decimal numbers without
/// leading zeros. Returns (min, max, length in chars); `max` is `None` for
/// `{n,}`. Numbers too large to matter are clamped above the repeat limit.
fn parse_repeat(s: &[char]) -> Option<(u32, Option<u32>, usize)> {
    let mut i = 1; // past '{'
    let min = parse_int(s, &mut i)?;
    let max = match s.get(i)? {
        ',' => {
            i += 1;
            if s.get(i)? == &'}' {
                None
            } else {
                Some(parse_int(s, &mut i)?)
            }
        }
        _ => Some(min),
    };
    if s.get(i)? != &'}' {
        return None;
    }
    Some((min, max, i + 1))
}

fn parse_int(s: &[char], i: &mut usize) -> Option<u32> {
    let start = *i;
    while s.get(*i).is_some_and(char::is_ascii_digit) {
        *i += 1;
    }
    let digits = s.get(start..*i)?;
    if digits.is_empty() || (digits.len() > 1 && digits[0] == '0') {
        return None;
    }
    let text: String = digits.iter().collect();
    Some(text.parse::<u32>().unwrap_or(u32::MAX))
}

/// Body of Go's Perl class `\c` and whether it is negated.
pub(super) fn perl_class(c: char) -> (&'static str, bool) {
    match c {
        'd' => (DIGIT, false),
        'D' => (DIGIT, true),
        'w' => (WORD, false),
        'W' => (WORD, true),
        's' => (SPACE, false),
        _ => (SPACE, true),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use regex::Regex;

    /// Compiles like Prometheus' NewRegexp: anchored, `.` matches newline.
    fn go(pattern: &str) -> Regex {
        let translated = translate(pattern).unwrap();
        Regex::new(&format!("^(?s:{translated})$")).unwrap()
    }

    #[test]
    fn plain_patterns_are_unchanged() {
        for p in [
            "(.*)",
            "f(.*);(.*)r",
            "a|b",
            "(?:.+,|^)path:(/[^,]+).*",
            "(.+?)(\\:\\d+)?;(\\d+)",
            "x{2,3}",
            "(?i)abc",
            "(?P<name>x)",
        ] {
            let t = translate(p).unwrap();
            if !p.contains('\\') && !p.contains('[') && !p.contains("(?P") {
                assert_eq!(t, p);
            }
            Regex::new(&t).unwrap();
        }
    }

    #[test]
    fn perl_classes_are_ascii_only() {
        assert!(go(r"\d+").is_match("0123456789"));
        assert!(!go(r"\d").is_match("٣")); // Arabic-Indic digit three
        assert!(go(r"\D").is_match("٣"));
        assert!(go(r"\w+").is_match("abc_XYZ_09"));
        assert!(!go(r"\w+").is_match("café"));
        assert!(go(r"\W").is_match("é"));
        assert!(go(r"\s").is_match(" "));
        assert!(go(r"\s").is_match("\x0C"));
        assert!(!go(r"\s").is_match("\x0B")); // Go's \s has no \v
        assert!(!go(r"\s").is_match("\u{A0}"));
        assert!(go(r"\S").is_match("\x0B"));
        assert!(go(r"[\d]+").is_match("42"));
        assert!(!go(r"[\d]").is_match("٣"));
        assert!(go(r"[^\w]").is_match("é"));
        assert!(go(r"[\W\d]").is_match("é"));
        assert!(go(r"[\W\d]").is_match("5"));
        assert!(!go(r"[\W\d]").is_match("a"));
    }

    #[test]
    fn word_boundary_is_ascii() {
        // In Go, 'é' is not a word char, so there is a boundary before it.
        assert!(go(r"caf\b.*").is_match("café"));
        assert!(!go(r"ab\Bc").is_match("ab c"));
        assert!(go(r"ab\Bc").is_match("abc"));
    }

    #[test]
    fn class_set_syntax_is_literal() {
        assert!(go("[a&&b]").is_match("&"));
        assert!(go("[a&&b]").is_match("a"));
        assert!(go("[a~~b]").is_match("~"));
        assert!(go("[[a]").is_match("["));
        assert!(go("[]a]").is_match("]"));
        assert!(go("[^]a]").is_match("b"));
        assert!(!go("[^]a]").is_match("]"));
        assert!(go("[a-]").is_match("-"));
        assert!(go("[-a]").is_match("-"));
        assert!(go("[a^]").is_match("^"));
        assert!(go("[a-c]").is_match("b"));
        assert!(!go("[a-c]").is_match("-"));
        assert!(go(r"[\x41-\x{43}]").is_match("B"));
        assert!(go(r"[\]\[]+").is_match("]["));
        assert!(go(r"[\-]").is_match("-"));
    }

    #[test]
    fn posix_classes() {
        assert!(go("[[:alpha:]]+").is_match("abc"));
        assert!(!go("[[:alpha:]]").is_match("é"));
        assert!(go("[[:^digit:]]").is_match("a"));
        assert!(go("[[:space:]]").is_match("\x0B"));
        assert!(translate("[[:foo:]]").is_err());
        // No closing ":]": the '[' is a literal.
        assert!(go("[[:a]").is_match(":"));
    }

    #[test]
    fn literal_braces() {
        assert!(go("a{").is_match("a{"));
        assert!(go("a{b").is_match("a{b"));
        assert!(go("a{,3}").is_match("a{,3}"));
        assert!(go("a{01}").is_match("a{01}"));
        assert!(go("a}").is_match("a}"));
        assert!(go("a{2}").is_match("aa"));
        assert!(go("a{2,}").is_match("aaaa"));
        assert!(go("a{1,2}?").is_match("a"));
        // Rust reads `\b{start}` as an assertion; Go as `\b` then literals.
        assert!(go(r"a\b{start}").is_match("a{start}"));
    }

    #[test]
    fn repeat_limits() {
        assert!(translate("a{1000}").is_ok());
        assert!(translate("a{1001}").is_err());
        assert!(translate("a{2,1001}").is_err());
        assert!(translate("a{3,2}").is_err());
        assert!(translate("a{99999999999}").is_err());
    }

    /// Edge cases of escapes, flags, repeats and classes, each with what
    /// Go's regexp answers (go run here: a match, or a compile error).
    #[test]
    fn edge_cases_as_go_answers_them() {
        assert!(go(r"\Aab\z").is_match("ab"));
        assert!(go(r"\D+").is_match("٣ "));
        assert!(!go(r"\D").is_match("5"));
        assert!(go(r"[]a]+").is_match("]a]"));
        assert!(go("(?i-m)x").is_match("X"));
        for (pattern, yes, no) in [
            ("a{0,1}b", &["b", "ab"][..], "aab"),
            ("a{0}b", &["b"][..], "ab"),
            ("a{2,}b", &["aab", "aaab"][..], "ab"),
        ] {
            for text in yes {
                assert!(go(pattern).is_match(text), "{pattern} {text}");
            }
            assert!(!go(pattern).is_match(no), "{pattern} {no}");
        }
        for bad in [r"(?i-m-s)x", r"\8", r"\18", r"\19", "[a"] {
            assert!(translate(bad).is_err(), "{bad}");
        }
        assert!(matches!(translate("[a"), Err(SyntaxError::MissingBracket)));
        assert!(go(r"\x{000000041}").is_match("A"));
        assert!(go(r"\x{0000000000041}").is_match("A"));
        assert!(go(r"\x{10FFFF}").is_match("\u{10FFFF}"));
        assert!(go("[a-a]").is_match("a"));
        for bad in [
            r"\x{+41}",
            r"\x{}",
            r"\x{110000}",
            r"\x{100000000}",
            r"\x4",
            r"\x{41",
            "[b-a]",
        ] {
            assert!(translate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn go_only_escapes() {
        assert!(go(r"\Qa.b\E").is_match("a.b"));
        assert!(!go(r"\Qa.b\E").is_match("axb"));
        assert!(go(r"\Q(x)").is_match("(x)"));
        // The pattern goes on after `\E` (Go's regexp: the values below).
        for (text, want) in [
            ("a.bcc", true),
            ("a.b", false),
            ("axbc", false),
            (r"a.b\Ec", false),
        ] {
            assert_eq!(go(r"\Qa.b\Ec+").is_match(text), want, "{text}");
        }
        assert!(go(r"\101\0").is_match("A\0"));
        assert!(go(r"\x41\x{1F600}").is_match("A😀"));
        assert!(go(r"\p{^Greek}").is_match("a"));
        assert!(!go(r"\p{^Greek}").is_match("α"));
        assert!(go(r"\P{^Greek}").is_match("α"));
        assert!(go(r"\pL\p{Lu}").is_match("aB"));
        assert!(go(r"[\p{Greek}x]+").is_match("αx"));
        assert!(go(r"\a\f\t\n\r\v").is_match("\x07\x0C\t\n\r\x0B"));
    }

    #[test]
    fn escaped_punctuation_is_literal() {
        assert!(go(r"\<a\>").is_match("<a>"));
        assert!(go(r"\.\*\:\_\ ").is_match(".*:_ "));
        assert!(go(r"[\<\.]+").is_match("<."));
    }

    #[test]
    fn rust_only_syntax_is_rejected() {
        for p in [
            r"(?x)a b",
            r"(?u)a",
            r"(?R)a",
            r"\e",
            r"\u0041",
            r"\k<a>",
            r"\1",
            r"\8",
            r"\C",
            r"\Z",
            r"(?-)a",
            r"(?i-)a",
            r"(?P<a-b>x)",
            r"(?P=a)",
            r"[\b]",
            r"\x4",
            r"\x{}",
            r"\x{110000}",
            "a\\",
            "[a",
            "[z-a]",
            "(?#c)",
        ] {
            assert!(translate(p).is_err(), "{p} should be rejected");
        }
    }

    #[test]
    fn flags() {
        assert!(go("(?i)abc").is_match("ABC"));
        assert!(go("(?i:a)b").is_match("Ab"));
        assert!(!go("(?i:a)b").is_match("AB"));
        assert!(go("(?U)a+").is_match("aaa"));
        assert!(!go("(?-s:.)").is_match("\n"));
        assert!(go("(?)a").is_match("a"));
        assert!(go("(?<n>a)").is_match("a"));
    }

    #[test]
    fn dot_matches_newline_when_wrapped_like_prometheus() {
        assert!(go("line1.*line2").is_match("line1\nline2"));
    }
}
