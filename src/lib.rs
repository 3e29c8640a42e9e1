#![deny(clippy::all)]
#![warn(missing_docs)]
//! apostrophe-jobs-native: the Rust core of a drop-in replacement for ApostropheCMS 2.x's
//! `apostrophe-jobs`, and its Node.js bindings.
//!
//! The core (`job`, `counters`, `store`, `engine`, `watcher`, `writer`, `batch`, `percent`)
//! knows nothing of Node.js; this file only converts JavaScript values to core types and
//! back. The JavaScript module (`index.js`, `lib/`) is the only caller of these bindings.

pub mod batch;
pub mod counters;
pub mod engine;
mod error;
pub mod job;
pub mod percent;
pub mod results;
pub mod store;
mod watcher;
mod writer;

pub use error::{Error, ErrorKind, Result};

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use mongodb::bson::{Bson, Document};
use napi::bindgen_prelude::{Buffer, FnArgs, Promise};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

use crate::batch::{BatchOptions, BatchOutcome, ChunkReport, ItemRunner};
use crate::engine::{Engine, EngineEvents, EngineOptions, LogLevel};
use crate::job::{HaltKind, NewJob};
use crate::results::{EndResults, RawValue};
use crate::store::StoreOptions;

impl From<Error> for napi::Error {
    fn from(error: Error) -> Self {
        let status = match error.kind() {
            ErrorKind::InvalidArgument { .. } => Status::InvalidArg,
            _ => Status::GenericFailure,
        };
        napi::Error::new(status, error.to_string())
    }
}

/// Where the jobs live and how often the background tasks run.
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
    /// How often pending counts are written at most, in ms. Defaults to 100.
    pub flush_interval_ms: Option<u32>,
    /// How often stop requests are looked for, in ms. Defaults to 250.
    pub watch_interval_ms: Option<u32>,
    /// How long the final write of a job is retried while MongoDB is unreachable, in ms.
    /// Defaults to 60,000.
    pub finish_retry_window_ms: Option<u32>,
    /// How long a running job's process may stay silent before another process ends the job
    /// as interrupted, in ms. Defaults to 30,000; 0 turns heartbeats off.
    pub orphan_after_ms: Option<u32>,
    /// How many failed items a job keeps in `failedItems`. Defaults to 100.
    pub keep_failed_items: Option<u32>,
    /// Ended jobs are deleted this many seconds after `endedAt`. Defaults to never.
    pub expire_after_seconds: Option<u32>,
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
            }),
            flush_interval: millis(options.flush_interval_ms),
            watch_interval: millis(options.watch_interval_ms),
            finish_retry_window: millis(options.finish_retry_window_ms),
            orphan_after: millis(options.orphan_after_ms),
            keep_failed_items: options.keep_failed_items.map(|n| n as usize),
            expire_after: options
                .expire_after_seconds
                .map(|seconds| Duration::from_secs(u64::from(seconds))),
        }
    }
}

/// How a batch runs.
#[napi(object)]
pub struct RunBatchOptions {
    /// How many items run at once. Defaults to 1.
    pub concurrency: Option<u32>,
    /// The largest range of items per call of the item runner. Defaults to 1,024.
    pub max_chunk: Option<u32>,
}

/// A running job's counts.
#[napi(object)]
pub struct LiveCounts {
    /// Good items so far.
    pub good: f64,
    /// Bad items so far.
    pub bad: f64,
}

/// What the JavaScript item runner reports for a range of items.
#[napi(object)]
pub struct ChunkResult {
    /// How many items ran to completion.
    pub finished: u32,
    /// Whether the runner stopped early because the job is halting.
    pub halted: bool,
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
// Strong: a batch in progress keeps the process alive, as the 2.x loop did.
type RunChunkFn =
    ThreadsafeFunction<FnArgs<(u32, u32)>, Promise<ChunkResult>, FnArgs<(u32, u32)>, Status, false>;

struct JsEvents {
    on_halt: HaltHookFn,
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

struct JsItemRunner {
    run_chunk: Arc<RunChunkFn>,
}

impl ItemRunner for JsItemRunner {
    fn run_items(&self, items: Range<usize>) -> BoxFuture<'static, Result<ChunkReport>> {
        let run_chunk = self.run_chunk.clone();
        // Batches are capped at u32::MAX items by `run_batch`'s `count` argument.
        let range = (items.start as u32, items.end as u32);
        Box::pin(async move {
            let callback_failed = |error: napi::Error| {
                Error::from(ErrorKind::Callback {
                    message: format!("the batch item runner failed: {}", error.reason),
                })
            };
            let promise = run_chunk
                .call_async_catch(range.into())
                .await
                .map_err(callback_failed)?;
            let result = promise.await.map_err(callback_failed)?;
            Ok(ChunkReport {
                finished: result.finished as usize,
                halted: result.halted,
            })
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
    engine: Engine,
}

/// Connects to the site's database and starts the writer and the stop/cancel watcher.
/// `onHalt(jobId, hookName, jobBson)` is called when a stop is picked up for a job of this
/// process; `onLog(level, message)` receives the engine's messages.
#[napi]
pub async fn connect(
    options: ConnectOptions,
    on_halt: HaltHookFn,
    on_log: LogFn,
) -> napi::Result<JobEngine> {
    let events = Arc::new(JsEvents { on_halt, on_log });
    let engine = Engine::connect(options.into(), events).await?;
    Ok(JobEngine { engine })
}

#[napi]
impl JobEngine {
    /// Inserts a job (labels as a BSON document) and returns its id.
    #[napi]
    pub async fn start_job(
        &self,
        labels: Buffer,
        can_cancel: bool,
        can_stop: bool,
        user_id: Option<String>,
    ) -> napi::Result<String> {
        let labels = read_document(&labels, "labels")?;
        let id = self
            .engine
            .start_job(NewJob {
                labels,
                can_cancel,
                can_stop,
                user_id,
            })
            .await?;
        Ok(id)
    }

    /// Adds to a job's counters; written within the flush interval.
    #[napi]
    pub fn add_counts(&self, id: String, good: f64, bad: f64) {
        self.engine.add_counts(&id, good, bad);
    }

    /// Sets a job's `total` (a BSON `{ value }` document); written within the flush interval.
    #[napi]
    pub fn set_total(&self, id: String, total: Buffer) -> napi::Result<()> {
        let total = read_value(&total, "total")?;
        self.engine.set_total(&id, total);
        Ok(())
    }

    /// Ends a job; `results` is a BSON `{ value }` document, or absent for `null`, or with
    /// `gathered`, the results the job gathered with `addResults`.
    #[napi]
    pub async fn end_job(
        &self,
        id: String,
        success: bool,
        results: Option<Buffer>,
        gathered: Option<bool>,
    ) -> napi::Result<()> {
        let results = match results {
            Some(bytes) => {
                EndResults::Given(RawValue::from_envelope(Box::new(bytes)).map_err(|message| {
                    Error::invalid_argument(format!(
                        "could not read the BSON value passed for results: {message}"
                    ))
                })?)
            }
            None if gathered == Some(true) => EndResults::Gathered,
            None => EndResults::Null,
        };
        self.engine.end_job(&id, success, results).await?;
        Ok(())
    }

    /// Appends a range of a batch job's results (a BSON document `{ id: result, … }`).
    #[napi]
    pub fn add_results(&self, id: String, chunk: Buffer) -> napi::Result<()> {
        self.engine.add_results(&id, &chunk)?;
        Ok(())
    }

    /// Takes the results a batch job has gathered, as a BSON document; `null` when they grew
    /// too large to store or the job is unknown.
    #[napi]
    pub fn take_results(&self, id: String) -> Option<Buffer> {
        self.engine
            .take_results(&id)
            .map(|document| Buffer::from(document.into_bytes()))
    }

    /// Keeps a failed item (`itemId` a BSON `{ value }` document) in the job's `failedItems`.
    #[napi]
    pub fn add_failed_item(
        &self,
        id: String,
        item_id: Buffer,
        message: String,
    ) -> napi::Result<()> {
        let item_id = read_value(&item_id, "the failed item's id")?;
        self.engine.add_failed_item(&id, item_id, message);
        Ok(())
    }

    /// Ends a job whose work was cut short by a drain: `failed`, `interrupted: true`.
    #[napi]
    pub async fn interrupt_job(&self, id: String) -> napi::Result<()> {
        self.engine.interrupt_job(&id).await?;
        Ok(())
    }

    /// The counts of a job of this process, including those not written yet; `null` for a
    /// job of another process or one whose final write is done.
    #[napi]
    pub fn live_counts(&self, id: String) -> Option<LiveCounts> {
        self.engine
            .live_counts(&id)
            .map(|(good, bad)| LiveCounts { good, bad })
    }

    /// Whether a drain has begun.
    #[napi]
    pub fn is_draining(&self) -> bool {
        self.engine.is_draining()
    }

    /// Refuses new jobs, stops batch loops between items, waits up to `deadlineMs` for running
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

    /// Records the acknowledgement of a stop/cancel hook.
    #[napi]
    pub async fn acknowledge_halt(&self, id: String, failed: bool) -> napi::Result<()> {
        self.engine.acknowledge_halt(&id, failed).await?;
        Ok(())
    }

    /// Runs a batch job's `count` items through `runChunk(start, end) → Promise<{ finished,
    /// halted }>`, where `start..end` index the id array the caller keeps. Resolves
    /// `"completed"` or `"halted"`.
    #[napi]
    pub async fn run_batch(
        &self,
        id: String,
        count: u32,
        run_chunk: RunChunkFn,
        options: Option<RunBatchOptions>,
    ) -> napi::Result<String> {
        let options = options.map_or_else(BatchOptions::default, |o| BatchOptions {
            concurrency: o.concurrency.map(|c| c as usize),
            max_chunk: o.max_chunk.map(|c| c as usize),
        });
        let runner = Arc::new(JsItemRunner {
            run_chunk: Arc::new(run_chunk),
        });
        let outcome = self
            .engine
            .run_batch(&id, count as usize, runner, options)
            .await?;
        Ok(match outcome {
            BatchOutcome::Completed => "completed",
            BatchOutcome::Halted => "halted",
        }
        .to_owned())
    }

    /// The `cancel` route's write; resolves whether a running job matched.
    #[napi]
    pub async fn request_cancel(&self, id: String) -> napi::Result<bool> {
        Ok(self.engine.request_cancel(&id).await?)
    }

    /// One stop/cancel check for a job now.
    #[napi]
    pub async fn check_stop(&self, id: String) {
        self.engine.check_stop(&id).await;
    }

    /// How many stoppable jobs this process is watching.
    #[napi]
    pub fn live_jobs(&self) -> u32 {
        self.engine.live_jobs() as u32
    }

    /// Writes pending counts and stops the background tasks (at most `deadlineMs`).
    #[napi]
    pub async fn close(&self, deadline_ms: Option<u32>) {
        let deadline = Duration::from_millis(u64::from(deadline_ms.unwrap_or(5_000)));
        self.engine.close(deadline).await;
    }
}

/// `((processed / total) * 100).toFixed(2)`, exactly as JavaScript computes it.
#[napi]
pub fn percentage(processed: f64, total: f64) -> String {
    percent::percentage(processed, total)
}
