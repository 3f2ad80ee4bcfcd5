//! Character classes for the Go-regex translator ([`super::goregex`]):
//! bracketed classes `[...]`, POSIX classes `[:name:]` and Go's ASCII-only
//! Perl classes `\d \w \s`, written out in Rust `regex` syntax with every
//! class-special character escaped (Rust reads `[`, `&&`, `--`, `~~` inside a
//! class as set syntax, Go as literals).
//!
//! Depends only on [`super::goregex`] (its `Translator` cursor and
//! [`SyntaxError`]); nothing outside the translator uses it.

use super::goregex::{perl_class, SyntaxError, Translator};

/// POSIX classes Go accepts inside brackets (all ASCII, same in Rust).
const POSIX_CLASSES: [&str; 14] = [
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

impl Translator<'_> {
    /// A bracketed class, emitted with every class-special char escaped.
    pub(super) fn class(&mut self) -> Result<(), SyntaxError> {
        self.pos += 1;
        self.out.push('[');
        if self.peek(0) == Some('^') {
            self.pos += 1;
            self.out.push('^');
        }
        let mut first = true;
        loop {
            match self.peek(0) {
                None => return Err(SyntaxError::MissingBracket),
                Some(']') if !first => {
                    self.pos += 1;
                    self.out.push(']');
                    return Ok(());
                }
                _ => {}
            }
            first = false;

            if self.starts_with("[:") {
                if self.posix_class()? {
                    continue;
                }
            } else if self.peek(0) == Some('\\') {
                match self.peek(1) {
                    Some(p @ ('p' | 'P')) => {
                        self.pos += 2;
                        self.unicode_class(p)?;
                        continue;
                    }
                    Some(c @ ('d' | 'D' | 'w' | 'W' | 's' | 'S')) => {
                        self.pos += 2;
                        let (body, negated) = perl_class(c);
                        if negated {
                            // A nested class is a union in Rust.
                            self.out.push_str("[^");
                            self.out.push_str(body);
                            self.out.push(']');
                        } else {
                            self.out.push_str(body);
                        }
                        continue;
                    }
                    _ => {}
                }
            }

            let lo = self.class_char()?;
            let is_range = self.peek(0) == Some('-') && self.peek(1).is_some_and(|c| c != ']');
            if is_range {
                self.pos += 1;
                let hi = self.class_char()?;
                if hi < lo {
                    return Err(SyntaxError::ClassRange(format!("{lo}-{hi}")));
                }
                push_class_char(&mut self.out, lo);
                self.out.push('-');
                push_class_char(&mut self.out, hi);
            } else {
                push_class_char(&mut self.out, lo);
            }
        }
    }

    /// `[:name:]` inside a class. Returns false when there is no closing
    /// `:]`, in which case Go reads the `[` as a literal.
    fn posix_class(&mut self) -> Result<bool, SyntaxError> {
        let rest = &self.chars[self.pos + 2..];
        let Some(end) = rest.windows(2).position(|w| w == [':', ']']) else {
            return Ok(false);
        };
        let name: String = rest[..end].iter().collect();
        if !POSIX_CLASSES.contains(&name.strip_prefix('^').unwrap_or(&name)) {
            return Err(SyntaxError::ClassRange(format!("[:{name}:]")));
        }
        self.pos += 2 + end + 2;
        self.out.push_str("[:");
        self.out.push_str(&name);
        self.out.push_str(":]");
        Ok(true)
    }

    /// One character inside a class, literal or escaped (Go's
    /// `parseClassChar`).
    fn class_char(&mut self) -> Result<char, SyntaxError> {
        match self.bump() {
            None => Err(SyntaxError::MissingBracket),
            Some('\\') => match self.bump() {
                None => Err(SyntaxError::TrailingBackslash),
                Some(c) => self.escaped_char(c),
            },
            Some(c) => Ok(c),
        }
    }
}

/// Writes `c` as a literal class member, escaping what Rust treats as class
/// syntax (Go treats all of these as plain characters here).
fn push_class_char(out: &mut String, c: char) {
    if matches!(c, '[' | ']' | '\\' | '-' | '&' | '~' | '^') {
        out.push('\\');
    }
    out.push(c);
}
