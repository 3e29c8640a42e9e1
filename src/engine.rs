//! The engine of one site: the front door the bindings call. It owns the store, the live jobs
//! and the background tasks, and stops the tasks when it is dropped.

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{Bson, DateTime, RawDocumentBuf};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::batch::{self, BatchOptions, BatchOutcome, ItemRunner};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{EngineEvents, LogLevel};
use crate::job::{self, Ending, HaltKind, NewJob};
use crate::ledger::MAX_TRACKED_ITEMS;
use crate::options::{EngineOptions, Timings};
use crate::results::{EndResults, Gathered, RawValue};
use crate::state::{Ignored, LiveJob, LiveJobs};
use crate::store::{MongoStore, Store};
use crate::tasks::end::{self, EndOutcome};
use crate::tasks::{self, heartbeat, sweeper, watcher, writer, Health, TaskContext};

/// The engine of one site. Dropping it stops its background tasks; [`Engine::close`] also
/// writes what is pending first.
pub struct Engine {
    ctx: TaskContext,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    _stop_tasks_on_drop: DropGuard,
}

impl Engine {
    /// Connects to the database (a clear error when it cannot be reached) and starts the
    /// background tasks. Must be called within a tokio runtime.
    pub async fn connect(options: EngineOptions, events: Arc<dyn EngineEvents>) -> Result<Self> {
        let timings = Timings::from_options(&options)?;
        let store_options = options.store.clone().ok_or_else(|| {
            Error::invalid_argument("no MongoDB URI and database name were given")
        })?;
        let store = MongoStore::connect(&store_options).await?;
        if let Some(after) = options.expire_after {
            store.expire_after(after).await?;
        }
        Ok(Self::start(Arc::new(store), timings, events))
    }

    /// Starts an engine on a store. Must be called within a tokio runtime.
    pub fn with_store(
        store: Arc<dyn Store>,
        options: &EngineOptions,
        events: Arc<dyn EngineEvents>,
    ) -> Result<Self> {
        Ok(Self::start(store, Timings::from_options(options)?, events))
    }

    fn start(store: Arc<dyn Store>, timings: Timings, events: Arc<dyn EngineEvents>) -> Self {
        let ctx = TaskContext {
            store,
            jobs: Arc::new(LiveJobs::new(job::new_job_id(), timings)),
            events,
            health: Arc::new(Health::default()),
            writes: TaskTracker::new(),
        };
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        macro_rules! supervise {
            ($name:literal, $task:path) => {{
                let (ctx, shutdown_for_task) = (ctx.clone(), shutdown.clone());
                tasks::spawn_supervised(
                    &tasks,
                    shutdown.clone(),
                    ctx.events.clone(),
                    $name,
                    move || $task(ctx.clone(), shutdown_for_task.clone()),
                );
            }};
        }
        supervise!("writer", writer::run);
        supervise!("watcher", watcher::run);
        supervise!("heartbeat", heartbeat::run);
        supervise!("sweeper", sweeper::run);
        tasks.close();
        Engine {
            ctx,
            _stop_tasks_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            tasks,
        }
    }

    /// This process's owner id (`workerId` in its jobs).
    pub fn worker_id(&self) -> &str {
        self.ctx.jobs.worker_id()
    }

    /// `start`: inserts the job document and registers the job (stop requests, heartbeat).
    pub async fn start_job(&self, new_job: NewJob) -> Result<Arc<LiveJob>> {
        if self.shutdown.is_cancelled() || self.ctx.jobs.is_draining() {
            return Err(ErrorKind::ShuttingDown.into());
        }
        new_job.check_fields()?;
        let id = job::new_job_id();
        let kind = HaltKind::for_job(new_job.can_cancel, new_job.can_stop);
        let heartbeats = self.ctx.jobs.timings().orphan_after.is_some();
        let reserved = new_job.stored_size();
        let sent_at = Instant::now();
        self.ctx
            .store
            .insert(new_job.initial_fields(&id, self.worker_id(), heartbeats))
            .await?;
        Ok(self.ctx.jobs.register(id, kind, sent_at, reserved))
    }

    /// A job of this process, while it runs.
    pub fn job(&self, id: &str) -> Option<Arc<LiveJob>> {
        self.ctx.jobs.get(id)
    }

    fn warn_late(&self, id: &str, what: &str, ignored: Ignored) {
        let Ignored::Ended { first } = ignored;
        if first {
            self.ctx.log(
                LogLevel::Warn,
                format!("apostrophe-jobs: {what} was reported for job {id} after it ended; it is ignored (the job's counts were final when it ended)"),
            );
        }
    }

    /// `good`/`bad` by job id: counted in memory and written within the flush interval. For a
    /// job of another process, added to its document; for a job that ended, ignored (warned
    /// once).
    pub fn add_counts(&self, id: &str, good: f64, bad: f64) {
        let counted = match self.job(id) {
            Some(job) => job.add_counts(good, bad),
            None => self.ctx.jobs.add_foreign_counts(id, good, bad),
        };
        if let Err(ignored) = counted {
            self.warn_late(id, "a count", ignored);
        }
    }

    /// The item at `index` of `job`'s batch finished: counted, and marked in the item ledger
    /// when the batch tracks its items. Returns whether another item may start.
    pub fn item_finished(&self, job: &LiveJob, index: usize, good: bool) -> bool {
        self.finish_item(job, index, good, true);
        job.may_start_item()
    }

    /// Marks the item at `index` of `job`'s batch finished (and failed unless `good`) in the
    /// item ledger, without counting it (the site counts it itself); nothing when the batch
    /// does not track its items.
    pub fn mark_item(&self, job: &LiveJob, index: usize, good: bool) {
        self.finish_item(job, index, good, false);
    }

    fn finish_item(&self, job: &LiveJob, index: usize, good: bool, count: bool) {
        match job.finish_item(index, good, count) {
            Ok(false) => {}
            Ok(true) => self.ctx.log(
                LogLevel::Warn,
                format!(
                    "apostrophe-jobs: item {index} was reported for job {}, whose batch has fewer items; it is left out of itemsFinished and itemsFailed (said once per batch)",
                    job.id()
                ),
            ),
            Err(ignored) => self.warn_late(job.id(), "an item's outcome", ignored),
        }
    }

    /// `setTotal` by job id: stored verbatim with the next write.
    pub fn set_total(&self, id: &str, total: Bson) {
        let set = match self.job(id) {
            Some(job) => job.set_total(total),
            None => self.ctx.jobs.set_foreign_total(id, total),
        };
        if let Err(ignored) = set {
            self.warn_late(id, "a total", ignored);
        }
    }

    /// Keeps a failed item of a job (its id, as BSON, and the error message) in the job's
    /// additive `failedItems`, up to the configured number.
    pub fn add_failed_item(&self, job: &LiveJob, item_id: Bson, message: String) {
        let item = mongodb::bson::doc! { "id": item_id, "message": message };
        if let Err(ignored) = job.add_failed_item(item) {
            self.warn_late(job.id(), "a failed item", ignored);
        }
    }

    /// The counts (good, bad) of a job of this process, including those not written yet, so
    /// the `progress` route is exact in the process that runs the job; kept a while after the
    /// job ended, for a read of the document that raced with the end. `None` for a job of
    /// another process.
    pub fn live_counts(&self, id: &str) -> Option<(f64, f64)> {
        self.ctx.jobs.counts(id)
    }

    /// Appends a range of a batch job's results (a BSON document `{ id: result, … }`, each
    /// id sent once) to what the job has gathered; [`Engine::end_job`] writes them.
    pub fn add_results(&self, job: &LiveJob, chunk: &[u8]) -> Result<()> {
        job.add_results(chunk).map_err(|message| {
            Error::invalid_argument(format!(
                "the results of a range of job {} cannot be kept ({message}); they are left out",
                job.id()
            ))
        })
    }

    /// Takes the results a job has gathered, for a caller that ends it with them itself;
    /// `None` when they grew too large to store.
    pub fn take_results(&self, job: &LiveJob) -> Option<RawDocumentBuf> {
        match job.take_results() {
            Gathered::Results(document) => Some(document),
            Gathered::TooLarge => {
                self.log_results_too_large(job.id(), "");
                None
            }
        }
    }

    fn log_results_too_large(&self, id: &str, consequence: &str) {
        self.ctx.log(
            LogLevel::Error,
            format!("apostrophe-jobs: the results of job {id} grew past MongoDB's 16 MB document limit and were dropped{consequence}"),
        );
    }

    /// `end`: writes the job's last counts together with `ended: true`, its status and
    /// `results`, in one update. When the document would pass MongoDB's size limit, it is
    /// written again with `results: null` (still `completed`).
    pub async fn end_job(
        &self,
        job: &Arc<LiveJob>,
        success: bool,
        results: EndResults,
    ) -> Result<EndOutcome> {
        let results = match results {
            EndResults::Null => None,
            EndResults::Given(value) => Some(value),
            EndResults::Gathered => match job.take_results() {
                Gathered::Results(document) => Some(RawValue::Document(document)),
                Gathered::TooLarge => {
                    self.log_results_too_large(job.id(), "; the job ends without them");
                    None
                }
            },
        };
        let mut results = results.filter(|value| !value.is_null());
        if results
            .as_ref()
            .is_some_and(|value| value.size() > job.results_budget())
        {
            self.ctx.log(
                LogLevel::Error,
                format!(
                    "apostrophe-jobs: the results of job {} are too large to store beside the job's other fields (at most {} bytes of results fit MongoDB's 16 MB document limit); the job ends without them",
                    job.id(),
                    job.results_budget()
                ),
            );
            results = None;
        }
        end::end_job(&self.ctx, job, Ending::end(success), results).await
    }

    /// Ends a job whose work was cut short (a drain): `failed` with `interrupted: true`.
    pub async fn interrupt_job(&self, job: &Arc<LiveJob>) -> Result<EndOutcome> {
        end::end_job(&self.ctx, job, Ending::interrupted(), None).await
    }

    /// The acknowledgement of a stop/cancel hook: writes `stopped`/`canceled` (or `failed`
    /// when the hook reported an error), `ended: true`, `canceling: false`, with the last
    /// counts.
    pub async fn acknowledge_halt(&self, job: &Arc<LiveJob>, failed: bool) -> Result<EndOutcome> {
        let kind = job.kind().ok_or_else(|| {
            Error::invalid_argument(format!(
                "job {} has no stop or cancel hook, so there is no stop to acknowledge",
                job.id()
            ))
        })?;
        end::end_job(&self.ctx, job, Ending::halt(kind, failed), None).await
    }

    /// Runs a batch job's `count` items through `runner`; see [`crate::batch`]. A batch cut
    /// short by a drain ends its job as interrupted.
    pub async fn run_batch(
        &self,
        job: &Arc<LiveJob>,
        count: usize,
        runner: &dyn ItemRunner,
        options: BatchOptions,
    ) -> Result<BatchOutcome> {
        let options = BatchOptions {
            stop_grace: options
                .stop_grace
                .or(Some(self.ctx.jobs.timings().stop_grace)),
            ..options
        };
        if options.track_items {
            if count <= MAX_TRACKED_ITEMS {
                job.track_items(count);
            } else {
                self.ctx.log(
                    LogLevel::Warn,
                    format!(
                        "apostrophe-jobs: job {} has {count} items, more than the {MAX_TRACKED_ITEMS} whose outcome can be tracked in its document; itemsFinished and itemsFailed are not kept",
                        job.id()
                    ),
                );
            }
        }
        let outcome = batch::run(job, count, runner, options).await?;
        if outcome == BatchOutcome::Drained {
            self.interrupt_job(job).await?;
        }
        Ok(outcome)
    }

    /// The `cancel` route: asks a running job, in any process, to stop. A job of this
    /// process is checked at once, rather than at the watcher's next tick.
    pub async fn request_cancel(&self, id: &str) -> Result<bool> {
        let requested = self.ctx.store.request_cancel(id).await?;
        if requested && self.job(id).is_some() {
            watcher::check_stops(&self.ctx, &[id.to_owned()]).await;
        }
        Ok(requested)
    }

    /// `checkStop`: one stop check for this job now, instead of at the next tick.
    pub async fn check_stop(&self, id: &str) {
        if self.job(id).is_some() {
            watcher::check_stops(&self.ctx, &[id.to_owned()]).await;
        }
    }

    /// Deletes jobs that ended longer than `older_than` ago by the database's clock; returns
    /// how many.
    pub async fn purge(&self, older_than: Duration) -> Result<u64> {
        let now = self.ctx.store.server_time().await?;
        let cutoff = DateTime::from_millis(
            now.timestamp_millis()
                .saturating_sub(older_than.as_millis() as i64),
        );
        self.ctx.store.purge(cutoff).await
    }

    /// Deletes one job if it has ended; a running job is never deleted. Returns whether it
    /// deleted one.
    pub async fn delete_job(&self, id: &str) -> Result<bool> {
        self.ctx.store.delete_ended(id).await
    }

    /// A graceful drain: refuses new jobs, makes every batch take no new item, waits up to
    /// `deadline` for running jobs to end (their in-flight items finish), then ends the rest
    /// as interrupted, writing their last counts. Returns how many were interrupted.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.ctx.jobs.begin_drain();
        let until = Instant::now() + deadline;
        while !self.ctx.jobs.is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut interrupted = 0;
        for id in self.ctx.jobs.ids() {
            let Some(job) = self.job(&id) else { continue };
            match self.interrupt_job(&job).await {
                Ok(EndOutcome::Written) => interrupted += 1,
                Ok(_) => {}
                Err(error) => self.ctx.log(LogLevel::Error, error.to_string()),
            }
        }
        interrupted
    }

    /// Stops the background tasks, writes every pending count and waits for the writes, at
    /// most `deadline`.
    pub async fn close(&self, deadline: Duration) {
        self.shutdown.cancel();
        for id in self.ctx.jobs.ids() {
            if let Some(job) = self.job(&id) {
                self.ctx
                    .writes
                    .spawn(tasks::write_counts(self.ctx.clone(), job));
            }
        }
        self.ctx.writes.close();
        let _ = tokio::time::timeout(deadline, async {
            self.ctx.writes.wait().await;
            self.tasks.wait().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use mongodb::bson::{doc, Bson, Document};

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::tasks::testing::{orphan_after_three_seconds, run_for, Recorded};

    fn engine(store: &MemoryStore, options: EngineOptions) -> (Engine, Arc<Recorded>) {
        let events = Arc::new(Recorded::default());
        let engine = Engine::with_store(Arc::new(store.clone()), &options, events.clone()).unwrap();
        (engine, events)
    }

    fn stoppable() -> NewJob {
        NewJob {
            can_stop: true,
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn counts_after_the_end_are_ignored_and_warned_about_once() {
        let store = MemoryStore::default();
        let (engine, events) = engine(&store, EngineOptions::default());
        let job = engine.start_job(stoppable()).await.unwrap();
        engine.add_counts(job.id(), 2.0, 0.0);
        engine.end_job(&job, true, EndResults::Null).await.unwrap();
        for _ in 0..3 {
            engine.add_counts(job.id(), 1.0, 0.0);
            engine.set_total(job.id(), Bson::Int32(9));
            assert!(
                !engine.item_finished(&job, 0, true),
                "no item starts after the end"
            );
        }
        run_for(Duration::from_secs(1)).await;
        let ended = store.job(job.id()).unwrap();
        assert_eq!(ended.get_i32("good"), Ok(2));
        assert_eq!(ended.get_i32("processed"), Ok(2));
        assert!(!ended.contains_key("total"));
        assert_eq!(
            events.logged("after it ended; it is ignored"),
            2,
            "once by id, once by handle"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_jobs_counts_stay_readable_after_its_end_for_a_read_that_raced_with_it() {
        let store = MemoryStore::default();
        let (engine, _) = engine(&store, EngineOptions::default());
        let job = engine.start_job(stoppable()).await.unwrap();
        engine.item_finished(&job, 0, true);
        engine.item_finished(&job, 1, false);
        assert_eq!(engine.live_counts(job.id()), Some((1.0, 1.0)));
        engine.end_job(&job, true, EndResults::Null).await.unwrap();
        assert_eq!(engine.live_counts(job.id()), Some((1.0, 1.0)));
        assert_eq!(engine.live_counts("another"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn counts_for_another_processs_job_are_added_while_it_runs() {
        let store = MemoryStore::default();
        let (owner, _) = engine(&store, EngineOptions::default());
        let (other, events) = engine(&store, EngineOptions::default());
        let job = owner.start_job(stoppable()).await.unwrap();
        other.add_counts(job.id(), 2.0, 1.0);
        run_for(Duration::from_millis(300)).await;
        assert_eq!(
            store.job(job.id()).unwrap().get("processed"),
            Some(&Bson::Double(3.0))
        );
        owner.end_job(&job, true, EndResults::Null).await.unwrap();
        other.add_counts(job.id(), 5.0, 0.0);
        run_for(Duration::from_millis(300)).await;
        assert_eq!(
            store.job(job.id()).unwrap().get_i32("good"),
            Ok(0),
            "the owner's end is final"
        );
        assert_eq!(events.logged("which has ended or does not exist"), 1);
    }

    /// Runs items of `item_time`, asking before each whether it may start, as the JavaScript
    /// range runner does; records when each item started, and hands each finished item's
    /// index to `report`.
    struct Items {
        job: Arc<LiveJob>,
        item_time: Duration,
        report: Box<dyn Fn(usize) + Send + Sync>,
        started: std::sync::Mutex<Vec<Instant>>,
    }

    impl Items {
        fn new(
            job: &Arc<LiveJob>,
            item_time: Duration,
            report: impl Fn(usize) + Send + Sync + 'static,
        ) -> Arc<Items> {
            Arc::new(Items {
                job: job.clone(),
                item_time,
                report: Box::new(report),
                started: Default::default(),
            })
        }
    }

    impl ItemRunner for Arc<Items> {
        fn run_items(
            &self,
            items: std::ops::Range<usize>,
        ) -> futures::future::BoxFuture<'static, Result<usize>> {
            let this = self.clone();
            Box::pin(async move {
                let mut finished = 0;
                for index in items {
                    if !this.job.may_start_item() {
                        break;
                    }
                    this.started.lock().unwrap().push(Instant::now());
                    tokio::time::sleep(this.item_time).await;
                    (this.report)(index);
                    finished += 1;
                }
                Ok(finished)
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_owner_cut_off_longer_than_the_bound_stops_and_never_changes_the_swept_job() {
        let store = MemoryStore::default();
        let (owner, owner_events) = engine(&store, orphan_after_three_seconds());
        let (_sweeper, _) = engine(&store, orphan_after_three_seconds());
        let job = owner.start_job(stoppable()).await.unwrap();
        let items = Items::new(&job, Duration::from_millis(100), {
            let job = job.clone();
            move |_| {
                let _ = job.add_counts(1.0, 0.0);
            }
        });
        let batch = tokio::spawn({
            let (job, items) = (job.clone(), items.clone());
            let owner = Arc::new(owner);
            async move {
                owner
                    .run_batch(&job, 200, &items, BatchOptions::default())
                    .await
            }
        });
        run_for(Duration::from_secs(1)).await;
        let cut_at = Instant::now();
        store.set_owner_cut_off(owner_events_worker(&store, job.id()).as_str(), true);
        run_for(Duration::from_secs(9)).await;
        let swept: Document = store.job(job.id()).unwrap();
        assert_eq!(swept.get_str("status"), Ok("failed"));
        assert_eq!(swept.get_bool("interrupted"), Ok(true));
        let last_start = *items.started.lock().unwrap().last().unwrap();
        assert!(
            last_start - cut_at < Duration::from_secs(3),
            "no item starts once the lease lapsed (2 s), before the sweep (3 s and more)"
        );
        store.set_owner_cut_off(owner_events_worker(&store, job.id()).as_str(), false);
        let outcome = tokio::time::timeout(Duration::from_secs(5), batch)
            .await
            .expect("the batch ends once the loss is found")
            .unwrap()
            .unwrap();
        assert_eq!(outcome, BatchOutcome::Gone);
        run_for(Duration::from_secs(5)).await;
        assert_eq!(
            store.job(job.id()).unwrap(),
            swept,
            "the swept job never changes again"
        );
        assert_eq!(owner_events.logged("is no longer this process's"), 1);
        let after = items.started.lock().unwrap().len();
        run_for(Duration::from_secs(2)).await;
        assert_eq!(items.started.lock().unwrap().len(), after);
    }

    fn owner_events_worker(store: &MemoryStore, id: &str) -> String {
        store
            .job(id)
            .unwrap()
            .get_str("workerId")
            .unwrap()
            .to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_the_jobs_that_outlive_it_as_interrupted() {
        let store = MemoryStore::default();
        let (engine, _) = engine(&store, EngineOptions::default());
        let job = engine.start_job(stoppable()).await.unwrap();
        engine.add_counts(job.id(), 4.0, 0.0);
        assert_eq!(engine.drain(Duration::from_secs(1)).await, 1);
        let ended = store.job(job.id()).unwrap();
        assert_eq!(ended.get_bool("interrupted"), Ok(true));
        assert_eq!(ended.get_i32("good"), Ok(4));
        assert!(matches!(
            engine.start_job(stoppable()).await.unwrap_err().kind(),
            ErrorKind::ShuttingDown
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn close_writes_pending_counts_and_returns_by_its_deadline_even_if_the_store_hangs() {
        let store = MemoryStore::default();
        let (closing, _) = engine(&store, EngineOptions::default());
        let job = closing.start_job(stoppable()).await.unwrap();
        closing.add_counts(job.id(), 3.0, 0.0);
        closing.close(Duration::from_secs(1)).await;
        assert_eq!(store.job(job.id()).unwrap().get_i32("good"), Ok(3));

        let (stuck, _) = engine(&store, EngineOptions::default());
        let job = stuck.start_job(stoppable()).await.unwrap();
        stuck.add_counts(job.id(), 3.0, 0.0);
        store.set_hanging(true);
        let began = Instant::now();
        stuck.close(Duration::from_secs(2)).await;
        assert_eq!(began.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_engine_stops_its_tasks() {
        let store = MemoryStore::default();
        let (engine, _) = engine(&store, orphan_after_three_seconds());
        let _job = engine.start_job(stoppable()).await.unwrap();
        run_for(Duration::from_secs(2)).await;
        drop(engine);
        run_for(Duration::from_millis(10)).await;
        let calls = ["find_canceling", "heartbeat", "server_time"].map(|m| store.calls(m));
        run_for(Duration::from_secs(10)).await;
        assert_eq!(
            ["find_canceling", "heartbeat", "server_time"].map(|m| store.calls(m)),
            calls
        );
        let _ = doc! {};
    }

    /// Items of 10 ms, each reported through the engine with its index, as `run` reports
    /// them; the items in `failing` fail.
    fn marking(engine: &Arc<Engine>, job: &Arc<LiveJob>, failing: Vec<usize>) -> Arc<Items> {
        let (engine, reported) = (engine.clone(), job.clone());
        Items::new(job, Duration::from_millis(10), move |index| {
            engine.item_finished(&reported, index, !failing.contains(&index));
        })
    }

    use crate::ledger::binary;

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_tracks_its_items_stores_them_with_the_counts_and_at_its_end() {
        let store = MemoryStore::default();
        let (engine, events) = engine(&store, EngineOptions::default());
        let engine = Arc::new(engine);
        let job = engine.start_job(stoppable()).await.unwrap();
        let runner = marking(&engine, &job, vec![1, 9]);
        let options = BatchOptions {
            track_items: true,
            ..Default::default()
        };
        let outcome = engine.run_batch(&job, 10, &runner, options).await.unwrap();
        assert_eq!(outcome, BatchOutcome::Completed);
        run_for(Duration::from_millis(300)).await;
        let running = store.job(job.id()).unwrap();
        assert_eq!(running.get_i32("processed"), Ok(10));
        assert_eq!(
            running.get("itemsFinished"),
            Some(&binary(vec![0xff, 0b11])),
            "written with the counts while the job runs"
        );
        assert_eq!(running.get("itemsFailed"), Some(&binary(vec![0b10, 0b10])));
        engine.mark_item(&job, 10, true);
        engine.item_finished(&job, 11, true);
        assert_eq!(
            events.logged("item 10 was reported for job"),
            1,
            "an index out of the batch is warned about once"
        );
        assert_eq!(events.logged("whose batch has fewer items"), 1);
        engine.end_job(&job, true, EndResults::Null).await.unwrap();
        let ended = store.job(job.id()).unwrap();
        assert_eq!(ended.get_i32("processed"), Ok(11), "counted all the same");
        assert_eq!(ended.get("itemsFinished"), Some(&binary(vec![0xff, 0b11])));
        assert_eq!(ended.get("itemsFailed"), Some(&binary(vec![0b10, 0b10])));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drained_batch_ends_with_the_bitmaps_of_the_items_that_finished() {
        let store = MemoryStore::default();
        let (engine, _) = engine(&store, EngineOptions::default());
        let engine = Arc::new(engine);
        let job = engine.start_job(stoppable()).await.unwrap();
        let runner = marking(&engine, &job, vec![2]);
        let batch = tokio::spawn({
            let (engine, job) = (engine.clone(), job.clone());
            let options = BatchOptions {
                track_items: true,
                ..Default::default()
            };
            async move { engine.run_batch(&job, 100, &runner, options).await }
        });
        run_for(Duration::from_millis(55)).await;
        engine.drain(Duration::from_secs(1)).await;
        assert_eq!(batch.await.unwrap().unwrap(), BatchOutcome::Drained);
        let ended = store.job(job.id()).unwrap();
        assert_eq!(ended.get_bool("interrupted"), Ok(true));
        assert_eq!(
            ended.get_i32("processed"),
            Ok(6),
            "five items, and the one in flight"
        );
        assert_eq!(
            ended.get("itemsFinished").unwrap(),
            &binary({
                let mut bits = vec![0; 13];
                bits[0] = 0b11_1111;
                bits
            })
        );
        assert_eq!(
            ended.get("itemsFailed").unwrap(),
            &binary({
                let mut bits = vec![0; 13];
                bits[0] = 0b100;
                bits
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_tracking_no_bitmap_is_written_and_marks_do_nothing() {
        let store = MemoryStore::default();
        let (engine, events) = engine(&store, EngineOptions::default());
        let job = engine.start_job(stoppable()).await.unwrap();
        engine.item_finished(&job, 0, true);
        engine.mark_item(&job, 5, false);
        engine.end_job(&job, true, EndResults::Null).await.unwrap();
        let ended = store.job(job.id()).unwrap();
        assert_eq!(ended.get_i32("processed"), Ok(1));
        assert!(!ended.contains_key("itemsFinished") && !ended.contains_key("itemsFailed"));
        assert_eq!(events.logs.lock().unwrap().len(), 0);
    }

    /// A stoppable job with the extra fields `rerun` and `retryOf`.
    async fn start_with_extra_fields(engine: &Engine) -> Arc<LiveJob> {
        engine
            .start_job(NewJob {
                fields: doc! { "rerun": { "ids": ["a"] }, "retryOf": "j0" },
                ..stoppable()
            })
            .await
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn extra_fields_go_last_and_a_field_of_the_core_is_refused_before_any_insert() {
        let store = MemoryStore::default();
        let (engine, _) = engine(&store, EngineOptions::default());
        let job = start_with_extra_fields(&engine).await;
        let stored = store.job(job.id()).unwrap();
        let keys: Vec<&str> = stored.keys().map(String::as_str).collect();
        assert_eq!(keys[keys.len() - 3..], ["heartbeatAt", "rerun", "retryOf"]);
        let inserts = store.calls("insert");
        for clash in ["good", "status", "_id", "itemsFinished", "endedAt"] {
            let mut fields = doc! { "rerun": 1 };
            fields.insert(clash, "mine");
            let error = engine
                .start_job(NewJob {
                    fields,
                    ..stoppable()
                })
                .await
                .unwrap_err();
            assert!(matches!(error.kind(), ErrorKind::InvalidArgument { .. }));
            assert!(error.to_string().contains(&format!("`{clash}`")), "{error}");
        }
        assert_eq!(store.calls("insert"), inserts, "nothing inserted");
    }

    #[tokio::test(start_paused = true)]
    async fn the_stop_hook_gets_the_document_without_its_large_fields() {
        let store = MemoryStore::default();
        let (engine, events) = engine(&store, EngineOptions::default());
        let job = start_with_extra_fields(&engine).await;
        job.track_items(4);
        engine.item_finished(&job, 2, false);
        run_for(Duration::from_millis(300)).await;
        assert!(store.job(job.id()).unwrap().contains_key("itemsFailed"));
        assert!(engine.request_cancel(job.id()).await.unwrap());
        let halts = events.halts.lock().unwrap();
        let document = &halts[0].2;
        assert_eq!(document.get_str("retryOf"), Ok("j0"));
        assert_eq!(document.get_i32("bad"), Ok(1));
        for large in crate::job::LARGE_FIELDS {
            assert!(!document.contains_key(large), "{large}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_ended_job_is_deleted() {
        let store = MemoryStore::default();
        let (engine, _) = engine(&store, EngineOptions::default());
        let job = engine.start_job(stoppable()).await.unwrap();
        assert!(!engine.delete_job(job.id()).await.unwrap(), "running");
        assert!(store.job(job.id()).is_some());
        engine.end_job(&job, true, EndResults::Null).await.unwrap();
        assert!(engine.delete_job(job.id()).await.unwrap());
        assert!(store.job(job.id()).is_none());
        assert!(!engine.delete_job(job.id()).await.unwrap(), "gone already");
    }

    #[tokio::test(start_paused = true)]
    async fn given_results_that_do_not_fit_beside_the_extra_fields_are_left_out() {
        let store = MemoryStore::default();
        let (engine, events) = engine(&store, EngineOptions::default());
        let extra = doc! { "rerun": { "ids": "i".repeat(1024 * 1024) } };
        let job = engine
            .start_job(NewJob {
                fields: extra,
                ..stoppable()
            })
            .await
            .unwrap();
        let mut bytes = Vec::new();
        doc! { "value": { "r": "r".repeat(15 * 1024 * 1024) } }
            .to_writer(&mut bytes)
            .unwrap();
        let results = EndResults::Given(RawValue::from_envelope(Box::new(bytes)).unwrap());
        engine.end_job(&job, true, results).await.unwrap();
        let ended = store.job(job.id()).unwrap();
        assert_eq!(ended.get_str("status"), Ok("completed"));
        assert_eq!(ended.get("results"), Some(&Bson::Null));
        assert_eq!(events.logged("beside the job's other fields"), 1);
    }
}
