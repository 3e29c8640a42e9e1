//! A [`Store`] in memory, with the fencing rules of the real one, for unit tests of the tasks
//! and the engine without a server. Its clock follows tokio's (paused in tests), and it fails
//! on demand: every call, or only the writes of one job, as an unreachable server would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use mongodb::bson::{Bson, DateTime, Document, RawBsonRef};
use tokio::time::Instant;

use super::{Fenced, Orphan, Store, StoreFuture};
use crate::error::{Error, Result};
use crate::job::{Initial, LARGE_FIELDS};

/// A document as the real store's reads hand it on: without its large fields.
fn without_large_fields(job: &Document) -> Document {
    let mut job = job.clone();
    for field in LARGE_FIELDS {
        job.remove(field);
    }
    job
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<String, Document>,
    /// Every call fails as if the server were unreachable.
    down: bool,
    /// Writes of these jobs fail so.
    failing_jobs: Vec<String>,
    /// Writes of these owners fail so (a process cut off from the database).
    cut_off_owners: Vec<String>,
    /// Count writes wait while this is set (a server that does not answer).
    hanging: bool,
    /// Calls by method name.
    calls: HashMap<&'static str, usize>,
    /// The next heartbeat call panics (a bug in a task).
    panic_on_heartbeat: bool,
    /// The next final write applies, but its reply is lost (an error comes back).
    lose_next_end_reply: bool,
}

/// The in-memory store. Cheap to clone; clones share the data, as two processes share a
/// database.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    started: Instant,
    base: i64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            inner: Arc::default(),
            started: Instant::now(),
            base: 1_700_000_000_000,
        }
    }
}

fn unreachable() -> Error {
    Error::database(
        "test",
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
    )
}

impl MemoryStore {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// The server's clock: tokio's, from a fixed start.
    pub fn now(&self) -> DateTime {
        DateTime::from_millis(self.base + self.started.elapsed().as_millis() as i64)
    }

    /// Makes every call fail (or not) as if the server were unreachable.
    pub fn set_down(&self, down: bool) {
        self.inner().down = down;
    }

    /// Makes the writes of one job fail (or not) as if the server were unreachable.
    pub fn set_job_failing(&self, id: &str, failing: bool) {
        let mut inner = self.inner();
        inner.failing_jobs.retain(|job| job != id);
        if failing {
            inner.failing_jobs.push(id.to_owned());
        }
    }

    /// Makes the writes of one process fail (or not) as if it were cut off from the server.
    pub fn set_owner_cut_off(&self, owner: &str, cut_off: bool) {
        let mut inner = self.inner();
        inner.cut_off_owners.retain(|other| other != owner);
        if cut_off {
            inner.cut_off_owners.push(owner.to_owned());
        }
    }

    /// Makes count writes wait (or not) for an answer that does not come.
    pub fn set_hanging(&self, hanging: bool) {
        self.inner().hanging = hanging;
    }

    async fn answer_when_not_hanging(&self) {
        while self.inner().hanging {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Makes the next final write apply and then fail, as when its reply is lost.
    pub fn lose_next_end_reply(&self) {
        self.inner().lose_next_end_reply = true;
    }

    /// Makes the next heartbeat call panic.
    pub fn panic_on_next_heartbeat(&self) {
        self.inner().panic_on_heartbeat = true;
    }

    /// How many times `method` was called.
    pub fn calls(&self, method: &'static str) -> usize {
        self.inner().calls.get(method).copied().unwrap_or(0)
    }

    /// A job document.
    pub fn job(&self, id: &str) -> Option<Document> {
        self.inner().jobs.get(id).cloned()
    }

    /// Changes a job document directly (another process's write).
    pub fn change(&self, id: &str, set: Document) {
        if let Some(job) = self.inner().jobs.get_mut(id) {
            job.extend(set);
        }
    }

    fn call(&self, method: &'static str, job: Option<&str>) -> Result<MutexGuard<'_, Inner>> {
        self.call_as(method, job, None)
    }

    fn call_as(
        &self,
        method: &'static str,
        job: Option<&str>,
        owner: Option<&str>,
    ) -> Result<MutexGuard<'_, Inner>> {
        let mut inner = self.inner();
        *inner.calls.entry(method).or_default() += 1;
        if inner.down
            || job.is_some_and(|id| inner.failing_jobs.iter().any(|f| f == id))
            || owner.is_some_and(|owner| inner.cut_off_owners.iter().any(|o| o == owner))
        {
            return Err(unreachable());
        }
        Ok(inner)
    }

    fn owned<'a>(inner: &'a mut Inner, id: &str, owner: &str) -> Option<&'a mut Document> {
        inner.jobs.get_mut(id).filter(|job| {
            job.get_str("workerId") == Ok(owner) && job.get_bool("ended") == Ok(false)
        })
    }
}

impl Store for MemoryStore {
    fn insert(&self, fields: Vec<(String, Initial)>) -> StoreFuture<'_, ()> {
        async move {
            let mut inner = self.call("insert", None)?;
            let mut document = Document::new();
            for (key, value) in fields {
                let value = match value {
                    Initial::Value(value) => value,
                    Initial::ServerTime => Bson::DateTime(self.now()),
                };
                document.insert(key, value);
            }
            let id = document.get_str("_id").unwrap().to_owned();
            inner.jobs.insert(id, document);
            Ok(())
        }
        .boxed()
    }

    fn write_counts<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        set: Document,
        heartbeat: bool,
        _read_canceling: bool,
    ) -> StoreFuture<'a, Fenced<bool>> {
        async move {
            self.answer_when_not_hanging().await;
            let now = self.now();
            let mut inner = self.call_as("write_counts", Some(id), Some(owner))?;
            let Some(job) = Self::owned(&mut inner, id, owner) else {
                return Ok(Fenced::Refused);
            };
            job.extend(set);
            if heartbeat {
                job.insert("heartbeatAt", now);
            }
            Ok(Fenced::Applied(job.get_bool("canceling").unwrap_or(false)))
        }
        .boxed()
    }

    fn end<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        mut set: Document,
        results: Option<RawBsonRef<'a>>,
    ) -> StoreFuture<'a, Fenced<()>> {
        async move {
            let now = self.now();
            let mut inner = self.call_as("end", Some(id), Some(owner))?;
            let Some(job) = Self::owned(&mut inner, id, owner) else {
                return Ok(Fenced::Refused);
            };
            if let Some(results) = results {
                let value: Bson = results.to_raw_bson().try_into().unwrap();
                set.insert("results", value);
            }
            job.extend(set);
            job.insert("endedAt", now);
            if std::mem::take(&mut inner.lose_next_end_reply) {
                return Err(unreachable());
            }
            Ok(Fenced::Applied(()))
        }
        .boxed()
    }

    fn heartbeat<'a>(&'a self, ids: &'a [String], owner: &'a str) -> StoreFuture<'a, Vec<String>> {
        async move {
            let now = self.now();
            let mut inner = self.call_as("heartbeat", None, Some(owner))?;
            if std::mem::take(&mut inner.panic_on_heartbeat) {
                drop(inner);
                panic!("a test asked the heartbeat to panic");
            }
            let mut ours = Vec::new();
            for id in ids {
                if let Some(job) = Self::owned(&mut inner, id, owner) {
                    job.insert("heartbeatAt", now);
                    ours.push(id.clone());
                }
            }
            Ok(ours)
        }
        .boxed()
    }

    fn add_to_job<'a>(&'a self, id: &'a str, update: Document) -> StoreFuture<'a, bool> {
        async move {
            let mut inner = self.call("add_to_job", Some(id))?;
            let Some(job) = inner
                .jobs
                .get_mut(id)
                .filter(|job| job.get_bool("ended") == Ok(false))
            else {
                return Ok(false);
            };
            if let Ok(inc) = update.get_document("$inc") {
                for (field, value) in inc {
                    let now = job.get(field).and_then(Bson::as_f64).unwrap_or(0.0)
                        + value.as_f64().unwrap_or(value.as_i32().unwrap_or(0) as f64);
                    job.insert(field, now);
                }
            }
            if let Ok(set) = update.get_document("$set") {
                job.extend(set.clone());
            }
            Ok(true)
        }
        .boxed()
    }

    fn find_canceling<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<Document>> {
        async move {
            let inner = self.call("find_canceling", None)?;
            Ok(ids
                .iter()
                .filter_map(|id| inner.jobs.get(id))
                .filter(|job| job.get_bool("canceling") == Ok(true))
                .map(without_large_fields)
                .collect())
        }
        .boxed()
    }

    fn request_cancel<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        async move {
            let mut inner = self.call("request_cancel", None)?;
            match inner
                .jobs
                .get_mut(id)
                .filter(|job| job.get_bool("ended") == Ok(false))
            {
                Some(job) => {
                    job.insert("canceling", true);
                    Ok(true)
                }
                None => Ok(false),
            }
        }
        .boxed()
    }

    fn server_time(&self) -> StoreFuture<'_, DateTime> {
        async move {
            drop(self.call("server_time", None)?);
            Ok(self.now())
        }
        .boxed()
    }

    fn find_orphans<'a>(
        &'a self,
        cutoff: DateTime,
        owner: &'a str,
    ) -> StoreFuture<'a, Vec<Orphan>> {
        async move {
            let inner = self.call("find_orphans", None)?;
            Ok(inner
                .jobs
                .values()
                .filter(|job| {
                    job.get_bool("ended") == Ok(false) && job.get_str("workerId") != Ok(owner)
                })
                .filter_map(|job| {
                    let heartbeat_at = *job.get_datetime("heartbeatAt").ok()?;
                    (heartbeat_at < cutoff).then(|| Orphan {
                        id: job.get_str("_id").unwrap().to_owned(),
                        worker_id: job.get_str("workerId").unwrap_or_default().to_owned(),
                        heartbeat_at,
                    })
                })
                .collect())
        }
        .boxed()
    }

    fn end_orphan<'a>(&'a self, orphan: &'a Orphan, set: Document) -> StoreFuture<'a, bool> {
        async move {
            let now = self.now();
            let mut inner = self.call("end_orphan", None)?;
            let Some(job) = inner.jobs.get_mut(&orphan.id).filter(|job| {
                job.get_bool("ended") == Ok(false)
                    && job.get_datetime("heartbeatAt") == Ok(&orphan.heartbeat_at)
            }) else {
                return Ok(false);
            };
            job.extend(set);
            job.insert("endedAt", now);
            Ok(true)
        }
        .boxed()
    }

    fn find<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Document>> {
        async move {
            Ok(self
                .call("find", None)?
                .jobs
                .get(id)
                .map(without_large_fields))
        }
        .boxed()
    }

    fn delete_ended<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        async move {
            let mut inner = self.call("delete_ended", Some(id))?;
            let ended = inner
                .jobs
                .get(id)
                .is_some_and(|job| job.get_bool("ended") == Ok(true));
            if ended {
                inner.jobs.remove(id);
            }
            Ok(ended)
        }
        .boxed()
    }

    fn purge(&self, cutoff: DateTime) -> StoreFuture<'_, u64> {
        async move {
            let mut inner = self.call("purge", None)?;
            let before = inner.jobs.len();
            inner.jobs.retain(|_, job| {
                !(job.get_bool("ended") == Ok(true)
                    && job.get_datetime("endedAt").is_ok_and(|at| *at < cutoff))
            });
            Ok((before - inner.jobs.len()) as u64)
        }
        .boxed()
    }
}
