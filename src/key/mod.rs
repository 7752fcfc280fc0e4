//! Key format, generation and parsing, and the scheme (format and hasher) that issuing and
//! verifying share.
//!
//! A keygate key reads `<prefix>_<env>_<body>[checksum]`, for example
//! `sk_live_` followed by 64 lowercase hex characters of CSPRNG output and an 8-character
//! CRC32 tail. The tail lets [`KeyFormat::parse`] reject a mistyped or truncated key before any
//! store call, and lets secret scanners recognise a keygate key offline. With the checksum turned
//! off the format is the plain `sk_live_<64 hex chars>` many services already use.
//!
//! ```
//! use keygate::key::{Environment, KeyFormat};
//!
//! let format = KeyFormat::default();
//! let key = format.generate(Environment::Live);
//! assert!(key.expose_secret().starts_with("sk_live_"));
//! assert_eq!(key.expose_secret().len(), 8 + 64 + 8);
//! // The secret never shows in Debug or Display output.
//! assert!(!format!("{key:?}{key}").contains(key.expose_secret()));
//!
//! let parsed = format.parse(key.expose_secret()).unwrap();
//! assert_eq!(parsed.environment(), Environment::Live);
//! assert_eq!(parsed.last4(), key.last4());
//! ```

mod environment;
mod format;
mod scheme;
mod secret;

pub use environment::{Environment, ParseEnvironmentError};
pub use format::{KeyFormat, KeyFormatError, MalformedKey, ParsedKey};
pub use scheme::KeyScheme;
pub use secret::ApiKey;
