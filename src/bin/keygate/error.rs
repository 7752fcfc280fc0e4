//! The CLI's errors: one line on stderr, one exit code each.

use std::process::ExitCode;

use keygate::lifecycle::ManageError;
use keygate::setup::SetupError;
use keygate::store::StoreError;

/// What went wrong, by exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// 1: the database (or anything else at run time) failed.
    Runtime,
    /// 2: the command line or a value in it is invalid.
    Invalid,
    /// 3: no such tenant or key.
    NotFound,
    /// 4: the change conflicts with what exists.
    Conflict,
}

impl Kind {
    pub(crate) fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Kind::Runtime => 1,
            Kind::Invalid => 2,
            Kind::NotFound => 3,
            Kind::Conflict => 4,
        })
    }

    /// The code of `--json` errors.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Kind::Runtime => "RUNTIME_ERROR",
            Kind::Invalid => "INVALID_INPUT",
            Kind::NotFound => "NOT_FOUND",
            Kind::Conflict => "CONFLICT",
        }
    }
}

/// A failed command. Its message never holds a secret (none is known when one is made) nor the
/// database URL (which may hold a password).
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) kind: Kind,
    pub(crate) message: String,
}

impl CliError {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        CliError {
            kind,
            message: message.into(),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::new(Kind::Runtime, format!("database: {e}"))
    }
}

impl From<SetupError> for CliError {
    fn from(e: SetupError) -> Self {
        match e {
            SetupError::Store(e) => e.into(),
            other @ (SetupError::EmptyUrl | SetupError::MissingFeature { .. }) => {
                CliError::new(Kind::Invalid, other.to_string())
            }
            other => CliError::new(Kind::Runtime, other.to_string()),
        }
    }
}

impl From<ManageError> for CliError {
    fn from(e: ManageError) -> Self {
        let kind = match &e {
            ManageError::NotFound => Kind::NotFound,
            ManageError::TooManyKeys(_)
            | ManageError::AlreadyRotated
            | ManageError::DuplicateKey => Kind::Conflict,
            ManageError::Store(_) => Kind::Runtime,
            _ => Kind::Invalid,
        };
        match e {
            ManageError::Store(e) => e.into(),
            e => CliError::new(kind, e.to_string()),
        }
    }
}
