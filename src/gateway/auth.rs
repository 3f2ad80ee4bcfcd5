//! `gateway.auth`: checking an `Authorization` header against the accepted
//! credentials.
//!
//! Invariants: schemes are case-insensitive (RFC 9110 §11.1: `bearer`,
//! `BASIC`); secrets are compared in constant time ([`ct_eq`]) and every
//! credential is compared, so the time taken tells nothing about which
//! credential or which prefix of one was close.

use base64::Engine;
use hyper::header::{HeaderMap, AUTHORIZATION};

use super::Credential;

/// Why a request was not authorized; the message is sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No usable `Authorization` header.
    Missing,
    /// Credentials that match none accepted.
    Invalid,
}

impl Denied {
    /// The message for the 401 body.
    pub fn message(self) -> &'static str {
        match self {
            Denied::Missing => "missing Authorization header",
            Denied::Invalid => "invalid credentials",
        }
    }
}

/// Checks `headers` against `accepted`; an empty list accepts everything.
pub fn check(accepted: &[Credential], headers: &HeaderMap) -> Result<(), Denied> {
    if accepted.is_empty() {
        return Ok(());
    }
    let value = headers.get(AUTHORIZATION).ok_or(Denied::Missing)?;
    let value = value.to_str().map_err(|_| Denied::Invalid)?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(Denied::Invalid)?;
    let rest = rest.trim();
    let ok = if scheme.eq_ignore_ascii_case("bearer") {
        accepted.iter().fold(false, |ok, c| match c {
            Credential::Bearer { token } => ok | ct_eq(rest.as_bytes(), token.as_bytes()),
            Credential::Basic { .. } => ok,
        })
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| Denied::Invalid)?;
        let colon = decoded
            .iter()
            .position(|&b| b == b':')
            .ok_or(Denied::Invalid)?;
        let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
        accepted.iter().fold(false, |ok, c| match c {
            // `&` not `&&`: the password is compared even when the user differs.
            Credential::Basic { username, password } => {
                ok | (ct_eq(user, username.as_bytes()) & ct_eq(pass, password.as_bytes()))
            }
            Credential::Bearer { .. } => ok,
        })
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(Denied::Invalid)
    }
}

/// Byte-string equality whose time depends only on `presented`'s length,
/// never on where it differs from `secret` nor on `secret`'s length.
pub fn ct_eq(presented: &[u8], secret: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != secret.len());
    for (i, &byte) in presented.iter().enumerate() {
        // A shorter secret reads as zeros; the length check above already failed.
        let other = secret.get(i).copied().unwrap_or(0);
        diff |= byte ^ other;
    }
    // Keeps the optimiser from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn accepted() -> Vec<Credential> {
        vec![
            Credential::Bearer {
                token: "s3cret-token".into(),
            },
            Credential::Basic {
                username: "prom".into(),
                password: "pa:ss".into(),
            },
        ]
    }

    fn with(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(value).unwrap_or(HeaderValue::from_static("x")),
        );
        headers
    }

    fn basic(pair: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    #[test]
    fn schemes_are_case_insensitive() {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert_eq!(
                check(
                    &accepted(),
                    &with(format!("{scheme} s3cret-token").as_bytes())
                ),
                Ok(()),
                "{scheme}"
            );
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode("prom:pa:ss");
        for scheme in ["Basic", "basic", "BASIC"] {
            assert_eq!(
                check(&accepted(), &with(format!("{scheme} {encoded}").as_bytes())),
                Ok(()),
                "{scheme}"
            );
        }
        assert_eq!(check(&accepted(), &with(b"Bearer   s3cret-token ")), Ok(()));
    }

    #[test]
    fn wrong_or_missing_credentials_are_denied() {
        assert_eq!(check(&accepted(), &HeaderMap::new()), Err(Denied::Missing));
        for value in [
            "Bearer s3cret-toke".to_string(),
            "Bearer s3cret-token2".into(),
            "Bearer ".into(),
            "Bearer".into(),
            "Token s3cret-token".into(),
            "s3cret-token".into(),
            basic("prom:pa"),
            basic("prom:pa:ss2"),
            basic("pro:pa:ss"),
            basic("prompa:ss"),
            "Basic !!!notbase64".into(),
            // A basic pair is not a bearer token and the reverse.
            "Bearer cHJvbTpwYTpzcw==".into(),
            basic("s3cret-token"),
        ] {
            assert_eq!(
                check(&accepted(), &with(value.as_bytes())),
                Err(Denied::Invalid),
                "{value}"
            );
        }
        assert_eq!(
            check(&accepted(), &with(b"Bearer \xff")),
            Err(Denied::Invalid)
        );
    }

    #[test]
    fn no_credentials_configured_accepts_everything() {
        assert_eq!(check(&[], &HeaderMap::new()), Ok(()));
    }

    #[test]
    fn ct_eq_is_equality() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"ab", b"abc"));
        assert!(!ct_eq(b"", b"a"));
        assert!(!ct_eq(b"\0", b""));
        assert!(!ct_eq(b"ab\0", b"ab"));
    }
}
