//! The job engine of one site: the store, the pending counters, the registry of this
//! process's stoppable jobs, and the two background tasks (writer and watcher) that serve
//! them. Everything the JavaScript module asks of the core goes through [`Engine`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mongodb::bson::{Bson, DateTime, Document, RawDocumentBuf};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch::{self, BatchOptions, BatchOutcome, ItemRunner};
use crate::counters::CounterBook;
use crate::error::{ErrorKind, Result};
use crate::job::{self, HaltKind, NewJob, Worker};
use crate::results::{EndResults, Gathered, GatheredResults, RawValue};
use crate::store::{JobStore, StoreOptions};
use crate::{watcher, writer};

/// How loud a message from the engine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Something a developer should look at; the job goes on.
    Warn,
    /// Something failed.
    Error,
}

/// What the engine needs from its host (the JavaScript module): calling the stop/cancel
/// hooks of a job and logging. Implementations must not block.
pub trait EngineEvents: Send + Sync + 'static {
    /// A stop was requested for a job of this process: call its `kind` hook with the freshly
    /// read job document; the hook's acknowledgement comes back through
    /// [`Engine::acknowledge_halt`].
    fn halt_requested(&self, id: &str, kind: HaltKind, job: &Document);
    /// A message for the site's log.
    fn log(&self, level: LogLevel, message: String);
}

/// Timings of the background tasks; every field defaults to the documented value.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Where the jobs live.
    pub store: Option<StoreOptions>,
    /// How often pending counts are written at most. Defaults to 100 ms.
    pub flush_interval: Option<Duration>,
    /// How often the watcher looks for stop requests. Defaults to 250 ms (the 2.x period).
    pub watch_interval: Option<Duration>,
    /// How long the final write of a job is retried while MongoDB cannot be reached.
    /// Defaults to 60 seconds.
    pub finish_retry_window: Option<Duration>,
    /// How long a running job's process may stay silent before another process ends the job
    /// as interrupted. Defaults to 30 seconds; heartbeats go out every sixth of it.
    /// `Duration::ZERO` turns heartbeats and the sweeping of orphans off.
    pub orphan_after: Option<Duration>,
    /// How many failed items (`{ id, message }`) a job keeps in `failedItems`. Defaults to 100.
    pub keep_failed_items: Option<usize>,
    /// Ended jobs are deleted this long after `endedAt` (a TTL index). Defaults to never.
    pub expire_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Timings {
    pub flush_interval: Duration,
    pub watch_interval: Duration,
    pub finish_retry_window: Duration,
    /// `None` when heartbeats are off.
    pub orphan_after: Option<Duration>,
}

/// A job running in this process.
#[derive(Debug)]
pub(crate) struct LiveJob {
    /// The hook a stop request is answered with; `None` for jobs that cannot be stopped.
    pub kind: Option<HaltKind>,
    /// Set once the hook has been called, so it is called at most once.
    pub halting: bool,
    /// Cancelled when a stop is picked up; the batch loop takes no item after that.
    pub halt: CancellationToken,
    /// A batch job's results so far.
    pub results: GatheredResults,
    /// When `canceling` was last read for the job (by the watcher, or by a count write).
    pub checked_at: Instant,
    /// When the job's document was last written (counts or heartbeat).
    pub written_at: Instant,
}

/// State shared by the engine handle and its background tasks.
pub(crate) struct Shared {
    pub store: JobStore,
    pub counters: Mutex<CounterBook>,
    pub flush_wanted: Notify,
    /// Jobs a count write found `canceling: true` for; the watcher takes them.
    pub stops_seen: Mutex<Vec<String>>,
    pub stop_seen: Notify,
    pub live: Mutex<HashMap<String, LiveJob>>,
    pub events: Arc<dyn EngineEvents>,
    pub timings: Timings,
    pub worker: Worker,
    pub draining: AtomicBool,
}

impl Shared {
    // The std mutexes guard plain maps for a few instructions and are never held across an
    // `.await`; a poisoned one only means a panic elsewhere, and the maps stay consistent.
    pub fn counters(&self) -> MutexGuard<'_, CounterBook> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn live(&self) -> MutexGuard<'_, HashMap<String, LiveJob>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stops_seen(&self) -> MutexGuard<'_, Vec<String>> {
        self.stops_seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The engine of one site. Cheap to clone; [`Engine::close`] stops it.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<writer::Command>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Engine {
    /// Connects to the database (a clear error when it cannot be reached) and starts the
    /// writer and the watcher. Must be called within a tokio runtime.
    pub async fn connect(options: EngineOptions, events: Arc<dyn EngineEvents>) -> Result<Self> {
        let store_options = options.store.clone().ok_or_else(|| {
            crate::Error::invalid_argument("no MongoDB URI and database name were given")
        })?;
        let store = JobStore::connect(&store_options).await?;
        if let Some(after) = options.expire_after {
            store.expire_after(after).await?;
        }
        Ok(Self::with_store(store, &options, events))
    }

    /// Starts an engine on an already connected store.
    pub fn with_store(
        store: JobStore,
        options: &EngineOptions,
        events: Arc<dyn EngineEvents>,
    ) -> Self {
        let timings = Timings {
            flush_interval: options.flush_interval.unwrap_or(Duration::from_millis(100)),
            watch_interval: options.watch_interval.unwrap_or(Duration::from_millis(250)),
            finish_retry_window: options
                .finish_retry_window
                .unwrap_or(Duration::from_secs(60)),
            orphan_after: Some(options.orphan_after.unwrap_or(Duration::from_secs(30)))
                .filter(|after| !after.is_zero()),
        };
        let shared = Arc::new(Shared {
            store,
            counters: Mutex::new(CounterBook::new(
                options.keep_failed_items.unwrap_or(100),
                writer::EARLY_FLUSH_ITEMS,
            )),
            flush_wanted: Notify::new(),
            stops_seen: Mutex::new(Vec::new()),
            stop_seen: Notify::new(),
            live: Mutex::new(HashMap::new()),
            events,
            timings,
            worker: Worker {
                id: job::new_job_id(),
            },
            draining: AtomicBool::new(false),
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(writer::run(shared.clone(), receiver));
        tasks.spawn(watcher::run(
            shared.clone(),
            commands.clone(),
            shutdown.clone(),
        ));
        tasks.close();
        Engine {
            shared,
            commands,
            shutdown,
            tasks,
        }
    }

    /// `start`: inserts the job document and registers the job with the watcher (stop
    /// requests, heartbeat). Returns the new job id.
    pub async fn start_job(&self, new_job: NewJob) -> Result<String> {
        if self.shutdown.is_cancelled() || self.shared.draining.load(Ordering::SeqCst) {
            return Err(ErrorKind::ShuttingDown.into());
        }
        let id = job::new_job_id();
        let kind = HaltKind::for_job(new_job.can_cancel, new_job.can_stop);
        let worker = self
            .shared
            .timings
            .orphan_after
            .map(|_| &self.shared.worker);
        self.shared
            .store
            .insert(&new_job.into_document(&id, DateTime::now(), worker))
            .await?;
        self.shared.counters().own(&id);
        self.shared.live().insert(
            id.clone(),
            LiveJob {
                kind,
                halting: false,
                halt: CancellationToken::new(),
                results: GatheredResults::default(),
                checked_at: Instant::now(),
                written_at: Instant::now(),
            },
        );
        Ok(id)
    }

    /// Keeps a failed item of a job (its id, as BSON, and the error message) in the job's
    /// additive `failedItems`, up to the configured number.
    pub fn add_failed_item(&self, id: &str, item_id: Bson, message: String) {
        let item = mongodb::bson::doc! { "id": item_id, "message": message };
        if self.shared.counters().add_failed_item(id, item) {
            self.shared.flush_wanted.notify_one();
        }
    }

    /// `good`/`bad`: counted in memory, written by the writer within the flush interval.
    pub fn add_counts(&self, id: &str, good: f64, bad: f64) {
        if self.shared.counters().add(id, good, bad) {
            self.shared.flush_wanted.notify_one();
        }
    }

    /// `setTotal`: stored verbatim with the next write.
    pub fn set_total(&self, id: &str, total: Bson) {
        if self.shared.counters().set_total(id, total) {
            self.shared.flush_wanted.notify_one();
        }
    }

    /// The counts (good, bad) of a job of this process, including those not written yet, so
    /// the `progress` route is exact in the process that runs the job. `None` for a job of
    /// another process or one whose final write is done.
    pub fn live_counts(&self, id: &str) -> Option<(f64, f64)> {
        self.shared.counters().live_counts(id)
    }

    /// Whether `drain` has begun: batch loops take no new item and new jobs are refused.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Appends a range of a batch job's results (a BSON document `{ id: result, … }`, each
    /// id sent once) to what the job has gathered; [`Engine::end_job`] writes them.
    pub fn add_results(&self, id: &str, chunk: &[u8]) -> Result<()> {
        let mut live = self.shared.live();
        let job = live
            .get_mut(id)
            .ok_or_else(|| ErrorKind::JobNotFound { id: id.to_owned() })?;
        job.results.append(chunk).map_err(|message| {
            crate::Error::invalid_argument(format!(
                "the results of a range of job {id} are not a BSON document ({message}); they are left out"
            ))
        })
    }

    /// Takes the results a job has gathered, for a caller that ends it with them itself;
    /// `None` when they grew too large to store, or for an unknown job.
    pub fn take_results(&self, id: &str) -> Option<RawDocumentBuf> {
        let job_results = self
            .shared
            .live()
            .get_mut(id)
            .map(|job| std::mem::take(&mut job.results))?;
        match job_results.finish() {
            Gathered::Results(document) => Some(document),
            Gathered::TooLarge => {
                self.log_results_too_large(id, "");
                None
            }
        }
    }

    /// `end`: writes the job's last counts together with `ended: true`, its status and
    /// `results`, in one update, and stops watching it. When the document would pass
    /// MongoDB's size limit, it is written again with `results: null` (still `completed`).
    pub async fn end_job(&self, id: &str, success: bool, results: EndResults) -> Result<()> {
        let gathered = self.shared.live().remove(id).map(|job| job.results);
        let results = match results {
            EndResults::Null => None,
            EndResults::Given(value) => Some(value),
            EndResults::Gathered => match gathered.map(GatheredResults::finish) {
                Some(Gathered::Results(document)) => Some(RawValue::Document(document)),
                Some(Gathered::TooLarge) => {
                    self.log_results_too_large(id, "; the job ends without them");
                    None
                }
                None => {
                    // Ended already (a drain's deadline): what it gathered went with it.
                    self.shared.events.log(
                        LogLevel::Warn,
                        format!("apostrophe-jobs: job {id} was ended before its batch finished; its results are not stored"),
                    );
                    None
                }
            },
        };
        let fields = job::end_fields(success, DateTime::now());
        self.finish(id, fields, results.filter(|value| !value.is_null()))
            .await
    }

    fn log_results_too_large(&self, id: &str, consequence: &str) {
        self.shared.events.log(
            LogLevel::Error,
            format!("apostrophe-jobs: the results of job {id} grew past MongoDB's 16 MB document limit and were dropped{consequence}"),
        );
    }

    /// Ends a job whose work was cut short (a drain): `failed` with `interrupted: true`.
    pub async fn interrupt_job(&self, id: &str) -> Result<()> {
        self.shared.live().remove(id);
        self.finish(id, job::interrupted_fields(DateTime::now()), None)
            .await
    }

    /// The acknowledgement of a stop/cancel hook: writes `stopped`/`canceled` (or `failed`
    /// when the hook reported an error), `ended: true`, `canceling: false`, with the last
    /// counts, and stops watching the job.
    pub async fn acknowledge_halt(&self, id: &str, failed: bool) -> Result<()> {
        let kind = {
            let mut live = self.shared.live();
            match live.get(id).and_then(|job| job.kind) {
                Some(kind) => {
                    live.remove(id);
                    kind
                }
                None => return Err(ErrorKind::JobNotFound { id: id.to_owned() }.into()),
            }
        };
        let fields = job::halt_fields(kind, failed, DateTime::now());
        self.finish(id, fields, None).await
    }

    /// Runs a batch job's `count` items through `runner`, in order, `concurrency` at a time,
    /// taking no new item once a stop has been picked up for the job.
    pub async fn run_batch(
        &self,
        id: &str,
        count: usize,
        runner: Arc<dyn ItemRunner>,
        options: BatchOptions,
    ) -> Result<BatchOutcome> {
        let halt = self
            .shared
            .live()
            .get(id)
            .map(|live| live.halt.clone())
            .unwrap_or_default();
        batch::run(count, runner, halt, options).await
    }

    /// The `cancel` route: asks a running job, in any process, to stop. A job of this
    /// process is checked at once, rather than at the watcher's next tick.
    pub async fn request_cancel(&self, id: &str) -> Result<bool> {
        let requested = self.shared.store.request_cancel(id).await?;
        if requested && self.shared.live().contains_key(id) {
            watcher::check(&self.shared, Some(id)).await;
        }
        Ok(requested)
    }

    /// `checkStop`: one watcher pass for this job now, instead of waiting for the next tick.
    pub async fn check_stop(&self, id: &str) {
        watcher::check(&self.shared, Some(id)).await;
    }

    /// How many jobs of this process are running.
    pub fn live_jobs(&self) -> usize {
        self.shared.live().len()
    }

    /// Deletes jobs that ended longer than `older_than` ago; returns how many.
    pub async fn purge(&self, older_than: Duration) -> Result<u64> {
        let cutoff = DateTime::from_system_time(std::time::SystemTime::now() - older_than);
        self.shared.store.purge(cutoff).await
    }

    /// A graceful drain: refuses new jobs, makes every batch loop take no new item, waits up
    /// to `deadline` for running jobs to end (their in-flight items finish), then ends the
    /// rest as interrupted, writing their last counts. Returns how many were interrupted.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.shared.draining.store(true, Ordering::SeqCst);
        for live in self.shared.live().values() {
            live.halt.cancel();
        }
        let until = tokio::time::Instant::now() + deadline;
        while self.live_jobs() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let remaining: Vec<String> = self.shared.live().keys().cloned().collect();
        for id in &remaining {
            if let Err(error) = self.interrupt_job(id).await {
                self.shared.events.log(LogLevel::Error, error.to_string());
            }
        }
        remaining.len()
    }

    /// Stops the watcher, writes every pending count and waits for both tasks, at most
    /// `deadline`.
    pub async fn close(&self, deadline: Duration) {
        self.shutdown.cancel();
        let (reply, done) = oneshot::channel();
        if self.commands.send(writer::Command::Close { reply }).is_ok() {
            let _ = tokio::time::timeout(deadline, done).await;
        }
        let _ = tokio::time::timeout(deadline, self.tasks.wait()).await;
    }

    async fn finish(&self, id: &str, fields: Document, results: Option<RawValue>) -> Result<()> {
        let (reply, done) = oneshot::channel();
        self.commands
            .send(writer::Command::Finish {
                id: id.to_owned(),
                fields,
                results,
                reply,
            })
            .map_err(|_| crate::Error::from(ErrorKind::ShuttingDown))?;
        done.await
            .map_err(|_| crate::Error::from(ErrorKind::ShuttingDown))?
    }
}
