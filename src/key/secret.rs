use std::fmt;

use zeroize::Zeroizing;

use super::environment::Environment;

/// A full API key: the secret a client sends.
///
/// It is shown to the user once, when issued, and never stored: stores keep only its digest,
/// its visible prefix and its last four characters. `Debug` and `Display` print a redacted form
/// (`sk_live_…a1b2`), and the memory holding the secret is zeroized on drop.
///
/// ```
/// use keygate::key::{Environment, KeyFormat};
///
/// let key = KeyFormat::default().generate(Environment::Test);
/// assert_eq!(key.prefix(), "sk_test_");
/// assert_eq!(format!("{key}"), format!("sk_test_…{}", key.last4()));
/// ```
pub struct ApiKey {
    secret: Zeroizing<String>,
    prefix_len: usize,
    environment: Environment,
}

impl ApiKey {
    pub(crate) fn new(secret: String, prefix_len: usize, environment: Environment) -> Self {
        ApiKey {
            secret: Zeroizing::new(secret),
            prefix_len,
            environment,
        }
    }

    /// The whole secret. Hand it to the user once; never log it.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    /// The visible prefix including the environment, e.g. `sk_live_`, for display and logs.
    pub fn prefix(&self) -> &str {
        &self.secret[..self.prefix_len]
    }

    /// The last four characters, for display next to the prefix.
    pub fn last4(&self) -> &str {
        &self.secret[self.secret.len() - 4..]
    }

    /// The environment segment of the key.
    pub fn environment(&self) -> Environment {
        self.environment
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…{})", self.prefix(), self.last4())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…{}", self.prefix(), self.last4())
    }
}
