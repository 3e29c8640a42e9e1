//! Where job state is kept: the [`Store`] trait, one method per write or read the tasks make,
//! and its implementations. [`MongoStore`] is the real one (the mongodb crate); the tests of
//! the tasks use an in-memory store that can fail on purpose.
//!
//! Every write of a job's owner is *fenced*: it applies only while the document still names
//! the owner (`workerId`) and has not ended, and says whether it applied ([`Fenced`]). So a
//! process that lost its job (another process ended it while this one was frozen or cut off)
//! can never change it again, and once `ended: true` is visible nothing else changes.

use futures::future::BoxFuture;
use mongodb::bson::{DateTime, Document, RawBsonRef};

use crate::error::Result;
use crate::job::Initial;

#[cfg(test)]
pub(crate) mod memory;
mod mongo;

pub use mongo::{redact_password, MongoStore, StoreOptions};

/// A boxed future of a store call.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T>>;

/// Whether a fenced write applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced<T> {
    /// It did; with what it read back.
    Applied(T),
    /// The job is no longer the writer's, or has ended (or is gone): nothing was written.
    Refused,
}

/// A running job of another process whose heartbeat is older than the bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphan {
    /// The job id.
    pub id: String,
    /// The process that owned it.
    pub worker_id: String,
    /// Its last heartbeat, as the sweeper read it: the sweep applies only if it is unchanged.
    pub heartbeat_at: DateTime,
}

/// Job state storage. Every time it writes comes from the database server's clock.
pub trait Store: Send + Sync + 'static {
    /// Inserts a new job with these fields, in this order, stamping [`Initial::ServerTime`]
    /// fields with the server's clock.
    fn insert(&self, fields: Vec<(String, Initial)>) -> StoreFuture<'_, ()>;

    /// The owner's write of a job's counts (`set`), with a fresh heartbeat when `heartbeat`.
    /// With `read_canceling`, the same command reads `canceling` back, so the write is also a
    /// stop check; otherwise it reads `false`.
    fn write_counts<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        set: Document,
        heartbeat: bool,
        read_canceling: bool,
    ) -> StoreFuture<'a, Fenced<bool>>;

    /// The owner's final write: `set` (the ending and the last counts), `results` in place of
    /// the `results: null` of `set` when given (raw BSON, never parsed), and `endedAt`.
    fn end<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        set: Document,
        results: Option<RawBsonRef<'a>>,
    ) -> StoreFuture<'a, Fenced<()>>;

    /// Refreshes the heartbeat of the owner's jobs, in one write. Returns those that are still
    /// the owner's and running; the others are lost to it.
    fn heartbeat<'a>(&'a self, ids: &'a [String], owner: &'a str) -> StoreFuture<'a, Vec<String>>;

    /// Adds counts (`update`, `$inc`s) to a running job of another process. Returns whether
    /// it was running.
    fn add_to_job<'a>(&'a self, id: &'a str, update: Document) -> StoreFuture<'a, bool>;

    /// The watcher's query: which of these jobs have been asked to stop, as documents for the
    /// stop hook: whole but for the large fields ([`LARGE_FIELDS`](crate::job::LARGE_FIELDS)). One round trip for all of
    /// them.
    fn find_canceling<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<Document>>;

    /// The `cancel` route's write: asks a running job to stop. Unlike 2.x, an ended job is
    /// left alone, so it never shows "Stopping..." afterwards. Returns whether a running job
    /// matched.
    fn request_cancel<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;

    /// The database server's clock, against which heartbeats are judged.
    fn server_time(&self) -> StoreFuture<'_, DateTime>;

    /// Running jobs of processes other than `owner` whose heartbeat is older than `cutoff`.
    /// Jobs without a heartbeat (started by the stock module) are never returned.
    fn find_orphans<'a>(&'a self, cutoff: DateTime, owner: &'a str)
        -> StoreFuture<'a, Vec<Orphan>>;

    /// Ends an orphan with `set` (and `endedAt`) if it still has the heartbeat it was judged
    /// by and is still running. Returns whether it did.
    fn end_orphan<'a>(&'a self, orphan: &'a Orphan, set: Document) -> StoreFuture<'a, bool>;

    /// One job document, without its large fields ([`LARGE_FIELDS`](crate::job::LARGE_FIELDS)).
    fn find<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Document>>;

    /// Deletes one job if it has ended (`ended: true`); a running job is never deleted.
    /// Returns whether it deleted one.
    fn delete_ended<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;

    /// Deletes jobs that ended before `cutoff` (by `endedAt`, or by `when` for jobs the stock
    /// module ended, which have no `endedAt`); returns how many.
    fn purge(&self, cutoff: DateTime) -> StoreFuture<'_, u64>;
}
