use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The environment a key belongs to: the `live` or `test` segment of the key.
///
/// ```
/// use keygate::key::Environment;
///
/// assert_eq!("test".parse::<Environment>().unwrap(), Environment::Test);
/// assert_eq!(Environment::Live.as_str(), "live");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(description = "The environment of a key: the `live` or `test` segment of the key.")
)]
pub enum Environment {
    /// Production keys: `…_live_…`.
    Live,
    /// Development and testing keys: `…_test_…`.
    Test,
}

impl Environment {
    /// The segment as it appears in a key: `live` or `test`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was neither `live` nor `test`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown environment: expected `live` or `test`")]
pub struct ParseEnvironmentError;

impl FromStr for Environment {
    type Err = ParseEnvironmentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "live" => Ok(Environment::Live),
            "test" => Ok(Environment::Test),
            _ => Err(ParseEnvironmentError),
        }
    }
}
