//! One error type for the core, shaped like the mongodb driver's: a small struct around a
//! boxed kind, so `Result<T>` stays one pointer wide on the happy path.

use std::fmt;
use std::time::Duration;

use mongodb::error::{ErrorKind as DriverErrorKind, WriteFailure};

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
    /// A job's final write was given up.
    #[error("apostrophe-jobs: the end of job {id} could not be written ({source}); {fate}")]
    EndNotWritten {
        /// The job.
        id: String,
        /// What becomes of the job.
        fate: &'static str,
        /// Why the last attempt failed.
        source: Error,
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
        const TOO_LARGE_CODES: [i32; 4] = [10334, 17419, 17420, 13548];
        let ErrorKind::Database { source, .. } = self.kind() else {
            return false;
        };
        let code = match source.kind.as_ref() {
            DriverErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
            DriverErrorKind::Command(e) => Some(e.code),
            _ => None,
        };
        code.is_some_and(|code| TOO_LARGE_CODES.contains(&code))
            || source.to_string().contains("too large")
            || source.to_string().contains("larger than")
    }

    /// Whether the error is about reaching the server rather than about the write itself, so
    /// that trying again later can succeed.
    pub fn is_transient(&self) -> bool {
        let ErrorKind::Database { source, .. } = self.kind() else {
            return false;
        };
        let code = match source.kind.as_ref() {
            DriverErrorKind::Command(e) => Some(e.code),
            DriverErrorKind::Write(WriteFailure::WriteConcernError(e)) => Some(e.code),
            _ => None,
        };
        matches!(
            source.kind.as_ref(),
            DriverErrorKind::Io(_)
                | DriverErrorKind::ServerSelection { .. }
                | DriverErrorKind::ConnectionPoolCleared { .. }
        ) || source.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
            || code.is_some_and(|code| RETRYABLE_WRITE_CODES.contains(&code))
    }
}

/// The codes after which the retryable-writes specification retries a write (a primary
/// stepping down, a shutdown, the network), for writes the driver does not retry itself: the
/// final update is a raw command.
const RETRYABLE_WRITE_CODES: [i32; 12] = [
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

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

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn a_primary_stepping_down_is_transient_a_refused_write_is_not() {
        let command_error = |code: i32| {
            let failure: mongodb::error::CommandError =
                mongodb::bson::from_document(doc! { "code": code, "codeName": "X", "errmsg": "x" })
                    .unwrap();
            Error::database("update", DriverErrorKind::Command(failure).into())
        };
        assert!(command_error(10107).is_transient(), "NotWritablePrimary");
        assert!(command_error(189).is_transient(), "PrimarySteppedDown");
        assert!(!command_error(2).is_transient(), "BadValue");
        assert!(!command_error(10334).is_transient(), "BSONObjectTooLarge");
        assert!(command_error(10334).is_document_too_large());
        let io = Error::database(
            "update",
            std::io::Error::from(std::io::ErrorKind::ConnectionReset).into(),
        );
        assert!(io.is_transient());
    }
}
