#![deny(clippy::all)]
#![warn(missing_docs)]
//! apostrophe-jobs-native: the Rust core of a drop-in replacement for ApostropheCMS 2.x's
//! `apostrophe-jobs`, and its Node.js bindings.
//!
//! The core knows nothing of Node.js. Its layers depend one way:
//! [`engine`] (the front door) → [`batch`] and [`tasks`] (writer, watcher, heartbeat, sweeper,
//! final write) → [`state`] (the live jobs and their rules) → [`store`], [`counters`] (with
//! the item [`ledger`]), [`results`], [`job`], [`options`], [`events`], [`error`]. This file
//! only converts JavaScript values to core types and back; the JavaScript module (`index.js`,
//! `lib/`) is the only caller of these bindings, whose typings are in `binding.d.ts`.

pub mod batch;
pub mod counters;
pub mod engine;
mod error;
pub mod events;
pub mod job;
pub mod ledger;
pub mod options;
pub mod results;
pub mod state;
pub mod store;
pub mod tasks;

pub use error::{Error, ErrorKind, Result};

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use mongodb::bson::{Bson, Document};
use napi::bindgen_prelude::{Buffer, FnArgs};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use tokio::sync::oneshot;

use crate::batch::{BatchOptions, BatchOutcome, ItemRunner};
use crate::engine::Engine;
use crate::events::{EngineEvents, LogLevel};
use crate::job::{HaltKind, NewJob};
use crate::options::EngineOptions;
use crate::results::{EndResults, RawValue};
use crate::state::LiveJob;
use crate::store::StoreOptions;
use crate::tasks::end::EndOutcome;

impl From<Error> for napi::Error {
    fn from(error: Error) -> Self {
        let status = match error.kind() {
            ErrorKind::InvalidArgument { .. } => Status::InvalidArg,
            _ => Status::GenericFailure,
        };
        napi::Error::new(status, error.to_string())
    }
}

/// Where the jobs live and how often the background tasks run. The JavaScript module checks
/// every value (and names the site option) before it connects.
#[napi(object)]
pub struct ConnectOptions {
    /// The site's MongoDB connection string.
    pub uri: String,
    /// The site's database name.
    pub database: String,
    /// The jobs collection. Defaults to `aposJobs`.
    pub collection: Option<String>,
    /// How long the start-up ping may take, in ms. Defaults to 10,000.
    pub connect_timeout_ms: Option<u32>,
    /// How soon counts of quick items are written, at most, in ms. Defaults to 100.
    pub flush_interval_ms: Option<u32>,
    /// How often stop requests are looked for, in ms. Defaults to 250.
    pub watch_interval_ms: Option<u32>,
    /// How long the final write of a job is retried while MongoDB is unreachable, in ms.
    /// Defaults to 60,000.
    pub finish_retry_window_ms: Option<u32>,
    /// How long a running job's process may stay silent before another process ends the job
    /// as interrupted, in ms (at least 1,000). Defaults to 30,000.
    pub orphan_after_ms: Option<u32>,
    /// Whether heartbeats are sent and other processes' silent jobs ended. Defaults to true.
    pub heartbeats: Option<bool>,
    /// How long items in flight (or a work function) may take to stop once a stop was
    /// requested, in ms. Defaults to 10,000.
    pub stop_grace_ms: Option<u32>,
    /// How many failed items a job keeps in `failedItems`. Defaults to 100.
    pub keep_failed_items: Option<u32>,
    /// Ended jobs are deleted this many seconds after `endedAt`. Defaults to never.
    pub expire_after_seconds: Option<u32>,
    /// Insert jobs as servers before MongoDB 4.2 need (found out at connect; for tests).
    pub legacy_insert: Option<bool>,
}

fn millis(value: Option<u32>) -> Option<Duration> {
    value.map(|ms| Duration::from_millis(u64::from(ms)))
}

impl From<ConnectOptions> for EngineOptions {
    fn from(options: ConnectOptions) -> Self {
        EngineOptions {
            store: Some(StoreOptions {
                uri: options.uri,
                database: options.database,
                collection: options.collection,
                connect_timeout: millis(options.connect_timeout_ms),
                legacy_insert: options.legacy_insert,
            }),
            flush_interval: millis(options.flush_interval_ms),
            watch_interval: millis(options.watch_interval_ms),
            finish_retry_window: millis(options.finish_retry_window_ms),
            orphan_after: millis(options.orphan_after_ms),
            heartbeats: options.heartbeats,
            stop_grace: millis(options.stop_grace_ms),
            keep_failed_items: options.keep_failed_items.map(|n| n as usize),
            expire_after: options
                .expire_after_seconds
                .map(|seconds| Duration::from_secs(u64::from(seconds))),
        }
    }
}

/// A new job.
#[napi(object)]
pub struct StartJobOptions {
    /// `options.labels || {}`, as BSON (made with the site driver's types).
    pub labels: Buffer,
    /// Whether the job has a cancel hook (`!!options.cancel`).
    pub can_cancel: bool,
    /// Whether the job has a stop hook (`!!options.stop`).
    pub can_stop: bool,
    /// The id of the user who started the job (additive field `userId`).
    pub user_id: Option<String>,
    /// Additive fields, as a BSON document, inserted in order after every other field of the
    /// job (`rerun`, `retryOf`, …). A field the engine writes itself (`_id`, `good`,
    /// `status`, `itemsFinished`, …) is refused, as are names that are empty or have a
    /// leading `$` or a `.`. They take room from the job's `results` (16 MB in all).
    pub fields: Option<Buffer>,
}

/// How a batch runs.
#[napi(object)]
pub struct RunBatchOptions {
    /// How many items run at once (the range runner runs them; ranges are sized for it).
    /// Defaults to 1.
    pub concurrency: Option<u32>,
    /// The largest range of items per call of the range runner. Defaults to 4,096.
    pub max_range: Option<u32>,
    /// Keep which items finished and which failed, as the bitmaps `itemsFinished` and
    /// `itemsFailed` of the job document (BSON Binary, one bit per item, bit `i` is
    /// `byte[i >> 3] & (1 << (i & 7))`), written with the counts and always in the job's
    /// final write. Report items with `itemFinished(index, good)` or `markItem`. Not kept
    /// (with a warning) past 33,554,432 items. Defaults to false.
    pub track_items: Option<bool>,
}

/// How a job's end is written.
#[napi(object)]
pub struct EndJobOptions {
    /// `completed` when true, `failed` otherwise.
    pub success: bool,
    /// `results` as a BSON `{ value }` document; absent for `null`.
    pub results: Option<Buffer>,
    /// Write the results the job gathered with `addResults` instead.
    pub gathered: Option<bool>,
}

/// A running job's counts.
#[napi(object)]
pub struct LiveCounts {
    /// Good items so far.
    pub good: f64,
    /// Bad items so far.
    pub bad: f64,
}

/// How a batch ended.
#[napi(string_enum = "lowercase")]
pub enum BatchResult {
    /// Every item ran; end the job.
    Completed,
    /// A stop was picked up and the items in flight finished; acknowledge the stop.
    Stopped,
    /// A stop was picked up and items in flight did not finish within the stop grace: they
    /// are abandoned (a late callback is ignored); acknowledge the stop.
    Abandoned,
    /// A drain cut the batch short; the job was ended as interrupted.
    Drained,
    /// The job ended or was lost while its batch ran; nothing more to do.
    Gone,
}

/// What became of a job's end.
#[napi(string_enum = "camelCase")]
pub enum EndResult {
    /// The ending is in the job document.
    Written,
    /// This process was done with the job already: nothing written.
    AlreadyGone,
    /// Another process had ended the job (the loss was logged): nothing written.
    Lost,
}

impl From<EndOutcome> for EndResult {
    fn from(outcome: EndOutcome) -> Self {
        match outcome {
            EndOutcome::Written => EndResult::Written,
            EndOutcome::AlreadyGone => EndResult::AlreadyGone,
            EndOutcome::Lost => EndResult::Lost,
        }
    }
}

// Weak: a hook or log function must never keep Node alive on its own.
type HaltHookFn = ThreadsafeFunction<
    FnArgs<(String, String, Buffer)>,
    (),
    FnArgs<(String, String, Buffer)>,
    Status,
    false,
    true,
>;
type LogFn =
    ThreadsafeFunction<FnArgs<(String, String)>, (), FnArgs<(String, String)>, Status, false, true>;
// Strong: a batch in progress keeps the process alive, as the 2.x loop did. The function
// reports back through `JobHandle.rangeDone`, never through a returned promise, so a range
// whose item never calls back waits for a stop, a drain or the job's end, and nothing that
// the garbage collector does ends it.
type RunRangeFn = ThreadsafeFunction<FnArgs<(u32, u32)>, (), FnArgs<(u32, u32)>, Status, false>;

type CutOffFn = ThreadsafeFunction<String, (), String, Status, false, true>;

struct JsEvents {
    on_halt: HaltHookFn,
    on_cut_off: CutOffFn,
    on_log: LogFn,
}

impl EngineEvents for JsEvents {
    fn halt_requested(&self, id: &str, kind: HaltKind, job: &Document) {
        let mut bytes = Vec::new();
        if let Err(error) = job.to_writer(&mut bytes) {
            self.log(
                LogLevel::Error,
                format!(
                    "apostrophe-jobs: job {id} could not be handed to its {} hook: {error}",
                    kind.hook_name()
                ),
            );
            return;
        }
        let args = (
            id.to_owned(),
            kind.hook_name().to_owned(),
            Buffer::from(bytes),
        );
        self.on_halt
            .call(args.into(), ThreadsafeFunctionCallMode::NonBlocking);
    }

    fn job_cut_off(&self, id: &str) {
        self.on_cut_off
            .call(id.to_owned(), ThreadsafeFunctionCallMode::NonBlocking);
    }

    fn log(&self, level: LogLevel, message: String) {
        let level = match level {
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        self.on_log.call(
            (level.to_owned(), message).into(),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }
}

/// Where the report of the range in flight goes.
type RangeReport = Arc<Mutex<Option<oneshot::Sender<std::result::Result<usize, String>>>>>;

struct JsRangeRunner {
    run_range: RunRangeFn,
    report: RangeReport,
}

impl ItemRunner for JsRangeRunner {
    fn run_items(&self, items: Range<usize>) -> BoxFuture<'static, Result<usize>> {
        let (sender, receiver) = oneshot::channel();
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
        // Batches are capped at u32::MAX items by `run_batch`'s `count` argument.
        let status = self.run_range.call(
            (items.start as u32, items.end as u32).into(),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
        Box::pin(async move {
            let failed = |message: String| {
                Error::from(ErrorKind::Callback {
                    message: format!("the batch's range runner failed: {message}"),
                })
            };
            if status != Status::Ok {
                return Err(failed(format!("it could not be called ({status})")));
            }
            match receiver.await {
                Ok(report) => report.map_err(failed),
                Err(_) => Err(failed("its report was dropped".to_owned())),
            }
        })
    }
}

/// Reads a document that JavaScript serialised with the `bson` package, as the site's driver
/// would, so every value keeps its BSON type (a Date stays a Date).
fn read_document(bytes: &[u8], what: &'static str) -> Result<Document> {
    Document::from_reader(bytes).map_err(|source| ErrorKind::Bson { what, source }.into())
}

/// Reads the `value` field of a `{ value }` document serialised by JavaScript.
fn read_value(bytes: &[u8], what: &'static str) -> Result<Bson> {
    let mut document = read_document(bytes, what)?;
    Ok(document.remove("value").unwrap_or(Bson::Null))
}

/// The job engine of one site.
#[napi]
pub struct JobEngine {
    engine: Arc<Engine>,
}

/// The engine's calls into the JavaScript module. None of them may throw.
#[napi(object, object_to_js = false)]
pub struct EngineCallbacks {
    /// A stop was picked up for a job of this process: call its `hookName` hook
    /// (`stop`/`cancel`) with the job document (BSON), which leaves out the large fields
    /// `rerun`, `itemsFinished` and `itemsFailed`.
    #[napi(ts_type = "(jobId: string, hookName: string, jobBson: Buffer) => void")]
    pub on_halt: HaltHookFn,
    /// A job of this process ended without its work finishing (another process ended it, or
    /// its work function never acknowledged a stop): abort its signal.
    #[napi(ts_type = "(jobId: string) => void")]
    pub on_cut_off: CutOffFn,
    /// A message for the site's log (`level` is `warn` or `error`).
    #[napi(ts_type = "(level: string, message: string) => void")]
    pub on_log: LogFn,
}

/// Connects to the site's database and starts the engine's background tasks.
#[napi]
pub async fn connect(
    options: ConnectOptions,
    callbacks: EngineCallbacks,
) -> napi::Result<JobEngine> {
    let events = Arc::new(JsEvents {
        on_halt: callbacks.on_halt,
        on_cut_off: callbacks.on_cut_off,
        on_log: callbacks.on_log,
    });
    let engine = Engine::connect(options.into(), events).await?;
    Ok(JobEngine {
        engine: Arc::new(engine),
    })
}

#[napi]
impl JobEngine {
    /// Inserts a job and returns its handle.
    #[napi]
    pub async fn start_job(&self, options: StartJobOptions) -> napi::Result<JobHandle> {
        let labels = read_document(&options.labels, "labels")?;
        let fields = match &options.fields {
            Some(bytes) => read_document(bytes, "the extra fields")?,
            None => Document::new(),
        };
        let job = self
            .engine
            .start_job(NewJob {
                labels,
                can_cancel: options.can_cancel,
                can_stop: options.can_stop,
                user_id: options.user_id,
                fields,
            })
            .await?;
        Ok(JobHandle {
            engine: self.engine.clone(),
            job,
            range_report: Arc::default(),
        })
    }

    /// The handle of a job running in this process; `null` for any other.
    #[napi]
    pub fn job(&self, id: String) -> Option<JobHandle> {
        self.engine.job(&id).map(|job| JobHandle {
            engine: self.engine.clone(),
            job,
            range_report: Arc::default(),
        })
    }

    /// `good`/`bad` by job id, for a job of this process or of another; ignored (warned once)
    /// for a job that ended.
    #[napi]
    pub fn add_counts(&self, id: String, good: f64, bad: f64) {
        self.engine.add_counts(&id, good, bad);
    }

    /// `setTotal` by job id (`total` a BSON `{ value }` document).
    #[napi]
    pub fn set_total(&self, id: String, total: Buffer) -> napi::Result<()> {
        let total = read_value(&total, "total")?;
        self.engine.set_total(&id, total);
        Ok(())
    }

    /// The counts of a job of this process, including those not written yet (kept a while
    /// after the job ended); `null` for a job of another process.
    #[napi]
    pub fn live_counts(&self, id: String) -> Option<LiveCounts> {
        self.engine
            .live_counts(&id)
            .map(|(good, bad)| LiveCounts { good, bad })
    }

    /// Refuses new jobs, makes batches take no new item, waits up to `deadlineMs` for running
    /// jobs to end, then ends the rest as interrupted. Resolves how many were interrupted.
    #[napi]
    pub async fn drain(&self, deadline_ms: u32) -> u32 {
        let deadline = Duration::from_millis(u64::from(deadline_ms));
        self.engine.drain(deadline).await as u32
    }

    /// Deletes jobs that ended more than `olderThanMs` ago; resolves how many.
    #[napi]
    pub async fn purge(&self, older_than_ms: f64) -> napi::Result<f64> {
        if !(older_than_ms.is_finite() && older_than_ms >= 0.0) {
            return Err(Error::invalid_argument(format!(
                "purge needs olderThan as a number of milliseconds of 0 or more, not {older_than_ms}"
            ))
            .into());
        }
        let deleted = self
            .engine
            .purge(Duration::from_millis(older_than_ms as u64))
            .await?;
        Ok(deleted as f64)
    }

    /// Deletes the job if it has ended (`ended: true`); a running job is never deleted.
    /// Resolves whether it deleted one.
    #[napi]
    pub async fn delete_job(&self, id: String) -> napi::Result<bool> {
        Ok(self.engine.delete_job(&id).await?)
    }

    /// The `cancel` route's write; resolves whether a running job matched.
    #[napi]
    pub async fn request_cancel(&self, id: String) -> napi::Result<bool> {
        Ok(self.engine.request_cancel(&id).await?)
    }

    /// One stop/cancel check for a job of this process now.
    #[napi]
    pub async fn check_stop(&self, id: String) {
        self.engine.check_stop(&id).await;
    }

    /// Writes pending counts and stops the background tasks (at most `deadlineMs`).
    #[napi]
    pub async fn close(&self, deadline_ms: Option<u32>) {
        let deadline = Duration::from_millis(u64::from(deadline_ms.unwrap_or(5_000)));
        self.engine.close(deadline).await;
    }
}

/// A job running in this process.
#[napi]
pub struct JobHandle {
    engine: Arc<Engine>,
    job: Arc<LiveJob>,
    range_report: RangeReport,
}

#[napi]
impl JobHandle {
    /// The job id.
    #[napi(getter)]
    pub fn id(&self) -> String {
        self.job.id().to_owned()
    }

    /// Adds to the job's counts; written within the flush interval.
    #[napi]
    pub fn add_counts(&self, good: f64, bad: f64) {
        self.engine.add_counts(self.job.id(), good, bad);
    }

    /// Counts one finished item of a batch, `index` its index in the batch (as the range
    /// runner got it); when the batch tracks its items, also marks it finished (and failed
    /// unless `good`). An index out of the batch is counted, not marked, and warned about
    /// once. Returns whether another item may start.
    #[napi]
    pub fn item_finished(&self, index: u32, good: bool) -> bool {
        self.engine.item_finished(&self.job, index as usize, good)
    }

    /// Marks the item at `index` of a batch that tracks its items finished (and failed unless
    /// `good`) without counting it, for a site that counts with its own `good`/`bad`. Does
    /// nothing when the batch does not track its items.
    #[napi]
    pub fn mark_item(&self, index: u32, good: bool) {
        self.engine.mark_item(&self.job, index as usize, good);
    }

    /// Whether a new item may start: no stop, drain or end, and the job is surely still this
    /// process's.
    #[napi]
    pub fn may_start_item(&self) -> bool {
        self.job.may_start_item()
    }

    /// Keeps a failed item (`itemId` a BSON `{ value }` document) in the job's `failedItems`.
    #[napi]
    pub fn add_failed_item(&self, item_id: Buffer, message: String) -> napi::Result<()> {
        let item_id = read_value(&item_id, "the failed item's id")?;
        self.engine.add_failed_item(&self.job, item_id, message);
        Ok(())
    }

    /// Appends a range of the job's results (a BSON document `{ id: result, … }`).
    #[napi]
    pub fn add_results(&self, chunk: Buffer) -> napi::Result<()> {
        self.engine.add_results(&self.job, &chunk)?;
        Ok(())
    }

    /// Takes the results the job gathered, as a BSON document; `null` when they grew too
    /// large to store.
    #[napi]
    pub fn take_results(&self) -> Option<Buffer> {
        self.engine
            .take_results(&self.job)
            .map(|document| Buffer::from(document.into_bytes()))
    }

    /// Runs the job's `count` items through `runRange(start, end)`, which runs the items at
    /// those indexes of the id array the caller keeps and reports with `rangeDone`.
    #[napi(
        ts_args_type = "count: number, runRange: (start: number, end: number) => void, options?: RunBatchOptions | undefined | null"
    )]
    pub async fn run_batch(
        &self,
        count: u32,
        run_range: RunRangeFn,
        options: Option<RunBatchOptions>,
    ) -> napi::Result<BatchResult> {
        let options = options.map_or_else(BatchOptions::default, |o| BatchOptions {
            concurrency: o.concurrency.map(|c| c as usize),
            max_range: o.max_range.map(|c| c as usize),
            track_items: o.track_items.unwrap_or(false),
            ..Default::default()
        });
        let runner = JsRangeRunner {
            run_range,
            report: self.range_report.clone(),
        };
        let outcome = self
            .engine
            .run_batch(&self.job, count as usize, &runner, options)
            .await?;
        Ok(match outcome {
            BatchOutcome::Completed => BatchResult::Completed,
            BatchOutcome::Stopped => BatchResult::Stopped,
            BatchOutcome::Abandoned => BatchResult::Abandoned,
            BatchOutcome::Drained => BatchResult::Drained,
            BatchOutcome::Gone => BatchResult::Gone,
        })
    }

    /// The report of the range `runBatch` handed out last: how many of its items ran, or why
    /// the range runner failed.
    #[napi]
    pub fn range_done(&self, finished: u32, error: Option<String>) {
        let sender = self
            .range_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(match error {
                Some(message) => Err(message),
                None => Ok(finished as usize),
            });
        }
    }

    /// Ends the job.
    #[napi]
    pub async fn end(&self, options: EndJobOptions) -> napi::Result<EndResult> {
        let results = match options.results {
            Some(bytes) => {
                EndResults::Given(RawValue::from_envelope(Box::new(bytes)).map_err(|message| {
                    Error::invalid_argument(format!(
                        "could not read the BSON value passed for results: {message}"
                    ))
                })?)
            }
            None if options.gathered == Some(true) => EndResults::Gathered,
            None => EndResults::Null,
        };
        let outcome = self
            .engine
            .end_job(&self.job, options.success, results)
            .await?;
        Ok(outcome.into())
    }

    /// Records the acknowledgement of the job's stop/cancel hook (`failed` when it reported
    /// an error).
    #[napi]
    pub async fn acknowledge_halt(&self, failed: bool) -> napi::Result<EndResult> {
        Ok(self
            .engine
            .acknowledge_halt(&self.job, failed)
            .await?
            .into())
    }
}
