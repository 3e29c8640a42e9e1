//! One error type for the core, shaped like the mongodb driver's: a small struct around a
//! boxed kind, so `Result<T>` stays one pointer wide on the happy path.

use std::fmt;
use std::time::Duration;

/// The result type of every fallible core operation.
pub type Result<T> = std::result::Result<T, Error>;

/// An error of the job core. Its `Display` text is what a site developer reads in the log or
/// in a rejected promise, so every message says what went wrong and what to do.
#[derive(Debug)]
pub struct Error {
    kind: Box<ErrorKind>,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A caller passed a value the core cannot use.
    #[error("apostrophe-jobs: {message}")]
    InvalidArgument {
        /// What was wrong with the argument and what to pass instead.
        message: String,
    },
    /// The job is not known to this process (never started here, or already ended).
    #[error("apostrophe-jobs: job {id} is not running in this process; it may have ended already or been started by another process")]
    JobNotFound {
        /// The job id that was looked up.
        id: String,
    },
    /// The database could not be reached when the module started.
    #[error("apostrophe-jobs: could not reach MongoDB at {target} within {after:?} ({source}). Check that the server is running and that APOS_MONGODB_URI, the apostrophe-db `uri` option or the apostrophe-jobs `uri` option point at it")]
    Unreachable {
        /// The URI with any password removed.
        target: String,
        /// How long the ping was given.
        after: Duration,
        /// The driver's error.
        source: mongodb::error::Error,
    },
    /// A MongoDB operation failed.
    #[error("apostrophe-jobs: MongoDB {operation} failed: {source}")]
    Database {
        /// Which job-state write or read failed.
        operation: &'static str,
        /// The driver's error.
        source: mongodb::error::Error,
    },
    /// A BSON value handed over from JavaScript could not be read.
    #[error("apostrophe-jobs: could not read the BSON value passed for {what}: {source}")]
    Bson {
        /// Which value was being read.
        what: &'static str,
        /// The decoder's error.
        source: mongodb::bson::de::Error,
    },
    /// The engine was closed (the site is shutting down).
    #[error("apostrophe-jobs: the job engine is shutting down; no new work is accepted")]
    ShuttingDown,
    /// A JavaScript callback failed in a way that is not an item failure.
    #[error("apostrophe-jobs: {message}")]
    Callback {
        /// What the JavaScript side reported.
        message: String,
    },
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Shorthand for [`ErrorKind::InvalidArgument`].
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        ErrorKind::InvalidArgument {
            message: message.into(),
        }
        .into()
    }

    /// Shorthand for [`ErrorKind::Database`].
    pub fn database(operation: &'static str, source: mongodb::error::Error) -> Self {
        ErrorKind::Database { operation, source }.into()
    }

    /// Whether the server rejected a write because the document would exceed the BSON size
    /// limit (16 MB), which `end` answers by retrying without `results`.
    pub fn is_document_too_large(&self) -> bool {
        match self.kind() {
            ErrorKind::Database { source, .. } => crate::store::is_too_large(source),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.kind)
    }
}

impl<E> From<E> for Error
where
    ErrorKind: From<E>,
{
    fn from(err: E) -> Self {
        Error {
            kind: Box::new(err.into()),
        }
    }
}
