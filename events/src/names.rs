//! Validated ring and node names: the `<ring>` and `<node>` tokens of every subject.
//!
//! A name that reaches a subject builder has already been checked, so building a
//! subject cannot fail and no subject can be forged with a `.`, `*` or `>` inside a
//! token.

use std::fmt;
use std::str::FromStr;

/// Longest ring name (it also forms KV keys and consumer names).
pub const MAX_RING_NAME: usize = 64;
/// Longest node name (a Kubernetes pod name is at most 253 characters).
pub const MAX_NODE_NAME: usize = 253;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} name is empty")]
    Empty {
        /// "ring" or "node".
        what: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{what} name is {len} bytes long (at most {max})")]
    TooLong {
        /// "ring" or "node".
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name contains a character that is not allowed.
    #[error("{what} name {name:?} contains {ch:?}, which is not allowed ({rule})")]
    InvalidChar {
        /// "ring" or "node".
        what: &'static str,
        /// The refused name.
        name: String,
        /// The first offending character.
        ch: char,
        /// The rule that applies.
        rule: &'static str,
    },
}

const RING_RULE: &str = "ring names use A-Z a-z 0-9 _ -";
const NODE_RULE: &str = "a NATS subject token: no '.', '*', '>', whitespace or control characters";

fn check(
    what: &'static str,
    name: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    rule: &'static str,
) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            what,
            len: name.len(),
            max,
        });
    }
    match name.chars().find(|c| !allowed(*c)) {
        Some(ch) => Err(NameError::InvalidChar {
            what,
            name: name.to_string(),
            ch,
            rule,
        }),
        None => Ok(()),
    }
}

/// A ring name: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
///
/// Stricter than a NATS token because ring names also form JetStream KV keys and
/// consumer names, which allow fewer characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RingName(String);

impl RingName {
    /// Checks and wraps a ring name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        check(
            "ring",
            &name,
            MAX_RING_NAME,
            |c| c.is_ascii_alphanumeric() || c == '_' || c == '-',
            RING_RULE,
        )?;
        Ok(Self(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A node (member) name: a NATS subject token of 1 to 253 bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    /// Checks and wraps a node name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        check("node", &name, MAX_NODE_NAME, is_token_char, NODE_RULE)?;
        Ok(Self(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `c` may appear in a NATS subject token.
fn is_token_char(c: char) -> bool {
    !(c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control())
}

macro_rules! name_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
        impl TryFrom<&str> for $t {
            type Error = NameError;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }
        impl TryFrom<String> for $t {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
name_impls!(RingName);
name_impls!(NodeName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_names() {
        for ok in ["default", "orders-eu_1", "A", &"r".repeat(64)] {
            assert_eq!(RingName::new(ok).unwrap().as_str(), ok);
        }
        assert_eq!(RingName::new(""), Err(NameError::Empty { what: "ring" }));
        assert!(matches!(
            RingName::new("r".repeat(65)),
            Err(NameError::TooLong { len: 65, .. })
        ));
        for (bad, ch) in [
            ("a.b", '.'),
            ("a*", '*'),
            ("a>", '>'),
            ("a b", ' '),
            ("é", 'é'),
            ("a/b", '/'),
        ] {
            match RingName::new(bad) {
                Err(NameError::InvalidChar { ch: got, .. }) => assert_eq!(got, ch, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn node_names_follow_nats_token_rules() {
        for ok in ["node-1", "web-7d9f8-abcde", "n:1@host", "ü"] {
            assert_eq!(NodeName::new(ok).unwrap().to_string(), ok);
        }
        for bad in ["", "a.b", "a*", ">", "a\tb", "a\nb", "a b", "a\u{0}"] {
            assert!(NodeName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(NodeName::new("n".repeat(253)).is_ok());
        assert!(NodeName::new("n".repeat(254)).is_err());
        assert_eq!(
            "x".parse::<NodeName>().unwrap(),
            NodeName::new("x").unwrap()
        );
    }
}
