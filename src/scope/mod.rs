//! Scopes: what a key may do, and what a route requires.
//!
//! A scope is a short name such as `read`, `write`, `search` or `documents:write`. Grants follow
//! three rules, matching what API users already know:
//! - `admin` grants every scope ("full access");
//! - `write` grants `read`, and `<name>:write` grants `<name>:read` ("read & write");
//! - any other scope grants only itself.
//!
//! ```
//! use keygate::scope::{Scope, Scopes};
//!
//! let scopes: Scopes = ["write", "search"].into_iter().map(Scope::new).collect::<Result<_, _>>().unwrap();
//! assert!(scopes.grants(&Scope::new("read").unwrap()));
//! assert!(scopes.grants(&Scope::new("search").unwrap()));
//! assert!(!scopes.grants(&Scope::new("admin").unwrap()));
//! assert!(Scopes::from_static(&["admin"]).grants(&Scope::new("ingest").unwrap()));
//! ```

mod policy;

pub use policy::{ScopeFn, ScopePolicy};

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One scope name: 1 to 64 characters of `a-z`, `0-9`, `_`, `-`, `.` and `:`.
///
/// Cloning never allocates: names are either static or shared.
#[derive(Clone)]
pub struct Scope(Name);

#[derive(Clone)]
enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl PartialEq for Scope {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Scope {}

impl std::hash::Hash for Scope {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Scope {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scope {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// The text is not a valid scope name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope `{0}`: use 1 to 64 characters of a-z, 0-9, `_`, `-`, `.` and `:`")]
pub struct InvalidScope(pub String);

fn valid(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.:".contains(&b))
}

impl Scope {
    /// `admin`: grants every scope.
    pub const ADMIN: Scope = Scope(Name::Static("admin"));
    /// `read`.
    pub const READ: Scope = Scope(Name::Static("read"));
    /// `write`: grants `read` too.
    pub const WRITE: Scope = Scope(Name::Static("write"));

    /// Validates and wraps a scope name.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidScope> {
        let name = name.into();
        if valid(&name) {
            Ok(Scope(Name::Shared(name.into())))
        } else {
            Err(InvalidScope(name))
        }
    }

    /// Wraps a static name without allocating.
    ///
    /// # Panics
    /// If the name is not a valid scope; meant for literals in code.
    pub fn from_static(name: &'static str) -> Self {
        assert!(valid(name), "invalid scope literal `{name}`");
        Scope(Name::Static(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Name::Static(s) => s,
            Name::Shared(s) => s,
        }
    }

    /// Whether holding `self` lets a caller use something that requires `required`.
    pub fn grants(&self, required: &Scope) -> bool {
        let (held, needed) = (self.as_str(), required.as_str());
        if held == needed || held == "admin" {
            return true;
        }
        match (held.strip_suffix("write"), needed.strip_suffix("read")) {
            (Some(a), Some(b)) => a == b && (a.is_empty() || a.ends_with(':')),
            _ => false,
        }
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = InvalidScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::new(s)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Scope::new(s).map_err(serde::de::Error::custom)
    }
}

/// The scopes a key holds, without duplicates, in the order given.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// Builds a set from static names.
    ///
    /// # Panics
    /// If a name is not a valid scope.
    pub fn from_static(names: &[&'static str]) -> Self {
        names.iter().map(|n| Scope::from_static(n)).collect()
    }

    /// Whether any held scope grants `required`.
    pub fn grants(&self, required: &Scope) -> bool {
        self.0.iter().any(|s| s.grants(required))
    }

    /// Whether the set holds exactly this scope (no implication).
    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    /// The held scopes.
    pub fn iter(&self) -> std::slice::Iter<'_, Scope> {
        self.0.iter()
    }

    /// The number of held scopes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no scope is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl FromIterator<Scope> for Scopes {
    /// Keeps the first of each duplicate, in the order given; linear in the number of scopes.
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut v: Vec<Scope> = iter.into_iter().collect();
        // A handful of scopes (the usual case): comparing each pair beats hashing.
        if v.len() <= 8 {
            let mut i = 0;
            while i < v.len() {
                if v[..i].contains(&v[i]) {
                    v.remove(i);
                } else {
                    i += 1;
                }
            }
        } else {
            let mut seen = std::collections::HashSet::with_capacity(v.len());
            v.retain(|s| seen.insert(s.clone()));
        }
        Scopes(v)
    }
}

impl<'a> IntoIterator for &'a Scopes {
    type Item = &'a Scope;
    type IntoIter = std::slice::Iter<'a, Scope>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &str) -> Scope {
        Scope::new(n).unwrap()
    }

    #[test]
    fn implication_rules() {
        assert!(s("admin").grants(&s("anything")));
        assert!(s("write").grants(&s("read")));
        assert!(!s("read").grants(&s("write")));
        assert!(s("documents:write").grants(&s("documents:read")));
        assert!(!s("documents:write").grants(&s("users:read")));
        assert!(!s("write").grants(&s("documents:read")));
        assert!(!s("thwrite").grants(&s("thread")));
        assert!(!s("search").grants(&s("ingest")));
    }

    #[test]
    fn validation() {
        assert!(Scope::new("").is_err());
        assert!(Scope::new("Read").is_err());
        assert!(Scope::new("a b").is_err());
        assert!(Scope::new("x".repeat(65)).is_err());
        assert!(Scope::new("docs:read").is_ok());
    }

    #[test]
    fn duplicates_collapse() {
        let set: Scopes = [s("read"), s("read"), s("write")].into_iter().collect();
        assert_eq!(set.len(), 2);
        // Past the small-set path too, keeping the first of each in order.
        let names: Vec<String> = (0..40).map(|i| format!("s{}", i % 13)).collect();
        let set: Scopes = names.iter().map(|n| s(n)).collect();
        let kept: Vec<&str> = set.iter().map(Scope::as_str).collect();
        let expected: Vec<String> = (0..13).map(|i| format!("s{i}")).collect();
        assert_eq!(kept, expected);
    }
}
