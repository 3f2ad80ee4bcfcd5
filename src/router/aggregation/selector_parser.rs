//! The parser for PromQL series selectors ([`Selector::parse`]): the
//! grammar described in [`super::selector`], byte by byte, with errors that
//! say what was expected and at which offset.
//!
//! Depends only on [`super::selector`]'s types (what it builds) and, through
//! [`Pattern::new`], on the relabel module's Go-regex compilation.

use super::selector::{Matcher, Op, Pattern, Selector, SelectorError};

impl Selector {
    /// Parses `text`; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        Parser {
            s: text.as_bytes(),
            text,
            pos: 0,
        }
        .selector()
    }
}

struct Parser<'t> {
    s: &'t [u8],
    text: &'t str,
    pos: usize,
}

impl Parser<'_> {
    fn err<T>(&self, what: &'static str) -> Result<T, SelectorError> {
        Err(SelectorError::Syntax {
            what,
            offset: self.pos,
            text: self.text.to_owned(),
        })
    }

    fn skip_space(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_space();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        self.skip_space();
        let metric = match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                Some(self.identifier(true))
            }
            _ => None,
        };
        let mut groups = vec![Vec::new()];
        if self.eat(b'{') {
            groups = self.matcher_groups()?;
        } else if metric.is_none() {
            return self.err("expected a metric name or '{'");
        }
        self.skip_space();
        if self.pos != self.s.len() {
            return self.err("unexpected text after the selector");
        }
        if let Some(name) = metric {
            for group in &mut groups {
                if group.iter().any(|m| m.name == "__name__") {
                    return Err(SelectorError::NameTwice {
                        name,
                        text: self.text.to_owned(),
                    });
                }
                group.insert(
                    0,
                    Matcher {
                        name: "__name__".into(),
                        op: Op::Eq(name.clone()),
                    },
                );
            }
        }
        Ok(Selector { groups })
    }

    /// After `{`: groups separated by `or`, up to and including `}`.
    fn matcher_groups(&mut self) -> Result<Vec<Vec<Matcher>>, SelectorError> {
        let mut groups = Vec::new();
        let mut group = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                None => return self.err("missing '}'"),
                Some(b'}') => {
                    self.pos += 1;
                    groups.push(group);
                    return Ok(groups);
                }
                _ => {}
            }
            group.push(self.matcher()?);
            self.skip_space();
            if self.eat(b',') {
                continue;
            }
            if self.keyword_or() {
                groups.push(std::mem::take(&mut group));
                self.skip_space();
                if self.peek() == Some(b'}') {
                    return self.err("expected a matcher after 'or'");
                }
                continue;
            }
            self.skip_space();
            match self.peek() {
                Some(b'}') => {}
                None => return self.err("missing '}'"),
                Some(_) => return self.err("expected ',', 'or' or '}'"),
            }
        }
    }

    fn keyword_or(&mut self) -> bool {
        self.skip_space();
        let rest = &self.s[self.pos..];
        let is_or = rest.len() > 2
            && rest[..2].eq_ignore_ascii_case(b"or")
            && !(rest[2].is_ascii_alphanumeric() || rest[2] == b'_');
        if is_or {
            self.pos += 2;
        }
        is_or
    }

    fn matcher(&mut self) -> Result<Matcher, SelectorError> {
        self.skip_space();
        let quoted = matches!(self.peek(), Some(b'"' | b'\'' | b'`'));
        let name = if quoted {
            self.string()?
        } else {
            match self.peek() {
                Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.identifier(false),
                _ => return self.err("expected a label name"),
            }
        };
        if name.is_empty() {
            return self.err("empty label name");
        }
        self.skip_space();
        let op = if self.s[self.pos..].starts_with(b"=~") {
            "=~"
        } else if self.s[self.pos..].starts_with(b"!~") {
            "!~"
        } else if self.s[self.pos..].starts_with(b"!=") {
            "!="
        } else if self.peek() == Some(b'=') {
            "="
        } else if quoted && matches!(self.peek(), Some(b',' | b'}')) {
            // Prometheus 3: a quoted name alone is the metric name.
            return Ok(Matcher {
                name: "__name__".into(),
                op: Op::Eq(name),
            });
        } else {
            return self.err("expected one of =, !=, =~, !~");
        };
        self.pos += op.len();
        self.skip_space();
        if !matches!(self.peek(), Some(b'"' | b'\'' | b'`')) {
            return self.err("expected a quoted value");
        }
        let value = self.string()?;
        let regex = |v: &str| {
            Pattern::new(v).map_err(|error| SelectorError::Regex {
                label: name.clone(),
                pattern: v.to_owned(),
                error,
            })
        };
        let op = match op {
            "=" => Op::Eq(value),
            "!=" => Op::Ne(value),
            "=~" => Op::Re(regex(&value)?, value),
            _ => Op::NotRe(regex(&value)?, value),
        };
        Ok(Matcher { name, op })
    }

    /// `[a-zA-Z_][a-zA-Z0-9_]*`, with `:` too for metric names.
    fn identifier(&mut self, metric: bool) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'_' || (metric && c == b':') {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.text[start..self.pos].to_string()
    }

    /// A quoted string: `"…"` or `'…'` with Go escapes, or raw `` `…` ``.
    fn string(&mut self) -> Result<String, SelectorError> {
        let quote = self.s[self.pos];
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.text[self.pos..].chars().next() else {
                return self.err("unterminated string");
            };
            self.pos += c.len_utf8();
            if c as u32 == u32::from(quote) {
                return Ok(out);
            }
            if c == '\\' && quote != b'`' {
                self.escape(quote, &mut out)?;
            } else if c == '\n' && quote != b'`' {
                return self.err("newline in string");
            } else {
                out.push(c);
            }
        }
    }

    /// After a backslash: Go's escapes (`strconv.Unquote`).
    fn escape(&mut self, quote: u8, out: &mut String) -> Result<(), SelectorError> {
        let Some(c) = self.peek() else {
            return self.err("unterminated escape");
        };
        self.pos += 1;
        let simple = match c {
            b'a' => Some('\x07'),
            b'b' => Some('\x08'),
            b'f' => Some('\x0c'),
            b'n' => Some('\n'),
            b'r' => Some('\r'),
            b't' => Some('\t'),
            b'v' => Some('\x0b'),
            b'\\' => Some('\\'),
            _ if c == quote => Some(c as char),
            _ => None,
        };
        if let Some(ch) = simple {
            out.push(ch);
            return Ok(());
        }
        let (digits, radix) = match c {
            b'x' => (2, 16),
            b'u' => (4, 16),
            b'U' => (8, 16),
            b'0'..=b'7' => {
                self.pos -= 1;
                (3, 8)
            }
            _ => return self.err("unknown escape"),
        };
        let end = self.pos + digits;
        let code = self
            .text
            .get(self.pos..end)
            .and_then(|d| u32::from_str_radix(d, radix).ok());
        let Some(code) = code else {
            return self.err("bad escape digits");
        };
        self.pos = end;
        if c == b'x' || radix == 8 {
            // A byte; Go allows non-UTF-8 here, label values must be UTF-8.
            if code > 0x7f {
                return self.err("escaped byte above 0x7f (not valid UTF-8 alone)");
            }
        }
        match char::from_u32(code) {
            Some(ch) => {
                out.push(ch);
                Ok(())
            }
            None => self.err("escape is not a Unicode scalar value"),
        }
    }
}
