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
    /// Each listed method needs its scope; any other method needs `otherwise` (`None`: any
    /// valid key). Built with [`ScopePolicy::per_method`].
    PerMethod {
        /// The methods and their scopes, first match wins.
        scopes: Arc<[(Method, Scope)]>,
        /// The scope for every method not listed.
        otherwise: Option<Scope>,
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

    /// A scope per HTTP method, for routes whose methods need more than `read`/`write`: each
    /// listed method needs its scope, any other method `otherwise` (`None`: any valid key).
    ///
    /// ```
    /// use keygate::http::Method;
    /// use keygate::scope::{Scope, ScopePolicy};
    ///
    /// // Reading needs `read`, writing `write`, deleting `admin`; nothing else is allowed
    /// // without `admin` either.
    /// let policy = ScopePolicy::per_method(
    ///     [
    ///         (Method::GET, Scope::READ),
    ///         (Method::POST, Scope::WRITE),
    ///         (Method::PUT, Scope::WRITE),
    ///         (Method::DELETE, Scope::ADMIN),
    ///     ],
    ///     Some(Scope::ADMIN),
    /// );
    /// let delete = http::Request::delete("/v1/documents/7").body(()).unwrap();
    /// let head = keygate::request::RequestHead::from(&delete);
    /// assert_eq!(policy.required(&head), Some(Scope::ADMIN));
    /// ```
    pub fn per_method(
        scopes: impl IntoIterator<Item = (Method, Scope)>,
        otherwise: Option<Scope>,
    ) -> Self {
        ScopePolicy::PerMethod {
            scopes: scopes.into_iter().collect(),
            otherwise,
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
            ScopePolicy::PerMethod { scopes, otherwise } => scopes
                .iter()
                .find(|(method, _)| method == head.method)
                .map_or_else(|| otherwise.clone(), |(_, scope)| Some(scope.clone())),
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
            ScopePolicy::PerMethod { scopes, otherwise } => f
                .debug_struct("PerMethod")
                .field("scopes", scopes)
                .field("otherwise", otherwise)
                .finish(),
            ScopePolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}
