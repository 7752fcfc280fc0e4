use std::fmt;
use std::sync::Arc;

use http::Method;

use crate::request::RequestHead;

use super::Scope;

/// A function deciding the scope from the request head.
pub type ScopeFn = dyn Fn(&RequestHead<'_>) -> Option<Scope> + Send + Sync;

/// Which scope a request needs, decided before the key is looked up.
///
/// ```
/// use keygate::scope::{Scope, ScopePolicy};
///
/// // GET, HEAD and OPTIONS need `read`; every other method needs `write`.
/// let policy = ScopePolicy::by_method();
/// # let _ = policy;
/// // A route that needs `admin` whatever the method.
/// let admin_only = ScopePolicy::Require(Scope::ADMIN);
/// # let _ = admin_only;
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum ScopePolicy {
    /// Any valid key passes; the default.
    #[default]
    AnyKey,
    /// Every request needs this scope.
    Require(Scope),
    /// Safe methods (GET, HEAD, OPTIONS) need `safe`; all others need `unsafe_methods`.
    ByMethod {
        /// Scope for GET, HEAD and OPTIONS.
        safe: Scope,
        /// Scope for every other method.
        unsafe_methods: Scope,
    },
    /// Decided by a function of the request head; `None` means any valid key.
    Custom(Arc<ScopeFn>),
}

impl ScopePolicy {
    /// `read` for safe methods, `write` for the rest.
    pub fn by_method() -> Self {
        ScopePolicy::ByMethod {
            safe: Scope::READ,
            unsafe_methods: Scope::WRITE,
        }
    }

    /// A policy computed by `f` from the request head.
    pub fn custom(f: impl Fn(&RequestHead<'_>) -> Option<Scope> + Send + Sync + 'static) -> Self {
        ScopePolicy::Custom(Arc::new(f))
    }

    /// The scope required for a request with this head.
    pub fn required(&self, head: &RequestHead<'_>) -> Option<Scope> {
        match self {
            ScopePolicy::AnyKey => None,
            ScopePolicy::Require(s) => Some(s.clone()),
            ScopePolicy::ByMethod {
                safe,
                unsafe_methods,
            } => {
                if head.method.is_safe() && head.method != Method::TRACE {
                    Some(safe.clone())
                } else {
                    Some(unsafe_methods.clone())
                }
            }
            ScopePolicy::Custom(f) => f(head),
        }
    }
}

impl fmt::Debug for ScopePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopePolicy::AnyKey => f.write_str("AnyKey"),
            ScopePolicy::Require(s) => f.debug_tuple("Require").field(s).finish(),
            ScopePolicy::ByMethod {
                safe,
                unsafe_methods,
            } => f
                .debug_struct("ByMethod")
                .field("safe", safe)
                .field("unsafe_methods", unsafe_methods)
                .finish(),
            ScopePolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}
