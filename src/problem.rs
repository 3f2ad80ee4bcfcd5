//! The one convention for configuration problems: a [`Problem`] names its
//! dotted key and says what is wrong. Each config section's `problems()`
//! returns its problems with keys relative to the section
//! (`max_body_bytes`, `routes[0].topic`, `tls.cert_file`); whoever holds
//! the section puts them under its name with [`Problem::within`], so a
//! section nested in two places (`run.tls`, `gateway.tls`) is checked by
//! one function.
//!
//! May depend on nothing: every config section uses it, and `config`
//! re-exports it.

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `kafka.properties.acks`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Problem {
    /// A problem of `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// This problem with its key under `section`: `cert_file` under `tls`
    /// is `tls.cert_file`, `[0].name` under `routes` is `routes[0].name`.
    pub fn within(self, section: &str) -> Problem {
        let key = if self.key.is_empty() {
            section.to_string()
        } else if self.key.starts_with('[') {
            format!("{section}{}", self.key)
        } else {
            format!("{section}.{}", self.key)
        };
        Problem { key, ..self }
    }
}

/// The problems of one section, collected in order.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Records a problem of `key` unless `ok`.
    pub fn check(&mut self, ok: bool, key: impl Into<String>, reason: impl Into<String>) {
        if !ok {
            self.push(key, reason);
        }
    }

    /// Records a problem of `key`.
    pub fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem::new(key, reason));
    }

    /// Records a sub-section's problems under `section`.
    pub fn extend_within(&mut self, section: &str, problems: Vec<Problem>) {
        self.0
            .extend(problems.into_iter().map(|p| p.within(section)));
    }

    /// The problems, in the order found.
    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_nest_with_dots_and_keep_indexes_attached() {
        assert_eq!(
            Problem::new("cert_file", "x").within("tls").key,
            "tls.cert_file"
        );
        assert_eq!(
            Problem::new("[0].name", "x").within("routes").key,
            "routes[0].name"
        );
        assert_eq!(
            Problem::new("tls.key_file", "x").within("gateway").key,
            "gateway.tls.key_file"
        );
        assert_eq!(
            Problem::new("", "x").within("router.routes").key,
            "router.routes"
        );
    }

    #[test]
    fn check_records_only_what_is_not_ok() {
        let mut out = Problems::default();
        out.check(true, "a", "fine");
        out.check(false, "b", "bad");
        out.extend_within("c", vec![Problem::new("d", "worse")]);
        let keys: Vec<String> = out.into_vec().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["b", "c.d"]);
    }
}
