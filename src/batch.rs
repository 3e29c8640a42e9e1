//! The loop of `run`: hands a batch job's items to the item runner (the JavaScript side, which
//! calls the site's `change(req, id, cb)`) as ranges of indexes, in order, and starts no range
//! once no new item may start (a stop, a drain, a lapsed lease, the job gone).
//!
//! A range is sized by the time its items take (about [`TARGET_RANGE`]), whatever their
//! speed: one hop into JavaScript costs 150–250 µs, so a range of quick items is long and a
//! range of slow ones short, and the hops stay a fraction of a percent of the work. The runner
//! asks before each item whether it may start ([`LiveJob::may_start_item`]), so stops are as
//! prompt as with one item per hop; with `concurrency`, it runs that many items of the range
//! at once.
//!
//! Items travel as index ranges into the id array that JavaScript keeps, so `change` receives
//! the very elements that `launder.ids` kept (a number stays a number) and nothing is copied.

use std::ops::Range;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::error::Result;
use crate::state::{LiveJob, NoNewItems};

/// Runs the site's `change` for some items.
pub trait ItemRunner: Send + Sync + 'static {
    /// Runs the items at these indexes, in order (with concurrency, starting them in order),
    /// counting each as it finishes, and asking before each whether it may start. Resolves
    /// how many items of the range ran, once they all have finished.
    fn run_items(&self, items: Range<usize>) -> BoxFuture<'static, Result<usize>>;
}

/// How a batch runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchOptions {
    /// How many items run at once. Defaults to 1, the 2.x order (one after the other).
    pub concurrency: Option<usize>,
    /// The largest range of items per hop. Defaults to 4,096.
    pub max_range: Option<usize>,
    /// How long a range should take. Defaults to [`TARGET_RANGE`].
    pub target_range: Option<Duration>,
    /// How long the items in flight may take to finish once a stop was requested, before the
    /// batch gives up on them. Defaults to 10 seconds.
    pub stop_grace: Option<Duration>,
    /// Whether the job keeps which items finished and failed (`itemsFinished`,
    /// `itemsFailed`); the engine starts the ledger before the loop.
    pub track_items: bool,
}

/// How long a range should take. A hop into JavaScript and back costs 150–250 µs of the
/// site's CPU: a range of a second makes that a few µs per item whatever the items' speed,
/// and with concurrency, the lanes that wait at a range's end for its slowest item idle for
/// a small part of it. Nothing else waits for a range's end: counts are reported per item,
/// and stops, drains and the lease are checked before each item.
pub const TARGET_RANGE: Duration = Duration::from_millis(1000);

/// How a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every item ran.
    Completed,
    /// A stop was picked up; the items in flight finished, later items were not started.
    Stopped,
    /// A stop was picked up, and items in flight did not finish within the stop grace: they
    /// are abandoned (their outcome is not counted).
    Abandoned,
    /// A drain began; later items were not started.
    Drained,
    /// The job ended or was lost while its batch ran: nothing more is reported.
    Gone,
}

/// Runs a batch of `count` items of `job`.
pub async fn run(
    job: &LiveJob,
    count: usize,
    runner: &dyn ItemRunner,
    options: BatchOptions,
) -> Result<BatchOutcome> {
    job.set_in_batch(true);
    let outcome = run_ranges(job, count, runner, options).await;
    job.set_in_batch(false);
    outcome
}

async fn run_ranges(
    job: &LiveJob,
    count: usize,
    runner: &dyn ItemRunner,
    options: BatchOptions,
) -> Result<BatchOutcome> {
    let stop_grace = options.stop_grace.unwrap_or(Duration::from_secs(10));
    let mut sizer = RangeSizer::new(&options);
    let mut next = 0;
    while next < count {
        match job.no_new_items() {
            Some(NoNewItems::Stop) => return Ok(BatchOutcome::Stopped),
            Some(NoNewItems::Drain) => return Ok(BatchOutcome::Drained),
            Some(NoNewItems::Gone) => return Ok(BatchOutcome::Gone),
            None => {}
        }
        if !job.may_start_item() {
            job.lease_confirmed().await;
            continue;
        }
        let range = next..(next + sizer.size).min(count);
        let started = Instant::now();
        let finished = tokio::select! {
            finished = runner.run_items(range) => finished?,
            _ = job.until_gone() => return Ok(BatchOutcome::Gone),
            _ = grace_after_stop(job, stop_grace) => return Ok(BatchOutcome::Abandoned),
        };
        if finished == 0 {
            // The runner found that no item may start just after this loop found one may
            // (a lease that lapsed in between): look again, without spinning.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        next += finished;
        sizer.observe(finished, started.elapsed());
    }
    Ok(BatchOutcome::Completed)
}

/// Resolves `grace` after a stop was requested; never for other reasons to take no new item
/// (a drain has its own deadline, a gone job ends the wait anyway).
async fn grace_after_stop(job: &LiveJob, grace: Duration) {
    job.until_no_new_items().await;
    if job.no_new_items() == Some(NoNewItems::Stop) {
        tokio::time::sleep(grace).await;
    } else {
        std::future::pending::<()>().await;
    }
}

/// Sizes ranges by the time their items take.
#[derive(Debug)]
struct RangeSizer {
    size: usize,
    min: usize,
    max: usize,
    target: Duration,
}

impl RangeSizer {
    fn new(options: &BatchOptions) -> Self {
        let concurrency = options.concurrency.unwrap_or(1).max(1);
        let max = options.max_range.unwrap_or(4096).max(1);
        // With concurrency, a range ends when its slowest item does; a few items per lane
        // keep the lanes busy across range boundaries.
        let min = if concurrency > 1 { concurrency * 4 } else { 1 }.min(max);
        RangeSizer {
            size: min,
            min,
            max,
            target: options.target_range.unwrap_or(TARGET_RANGE),
        }
    }

    /// Sizes the next range from how long `finished` items took: shrinks at once, grows at
    /// most eightfold per range.
    fn observe(&mut self, finished: usize, took: Duration) {
        if finished == 0 {
            return;
        }
        let per_item = took.as_secs_f64() / finished as f64;
        let wanted = if per_item > 0.0 {
            (self.target.as_secs_f64() / per_item).min(self.max as f64) as usize
        } else {
            self.max
        };
        self.size = wanted
            .min(self.size.saturating_mul(8))
            .clamp(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::FutureExt;
    use mongodb::bson::doc;

    use super::*;
    use crate::options::EngineOptions;
    use crate::store::memory::MemoryStore;
    use crate::tasks::testing::{context, start};
    use crate::tasks::TaskContext;

    /// A runner in Rust standing in for the JavaScript one: items take `per_item` (of paused
    /// time), the item `hang_at` never finishes, and before each item it asks whether it may
    /// start, as the JavaScript runner does.
    struct TimedRunner {
        job: Arc<LiveJob>,
        per_item: Duration,
        hang_at: Option<usize>,
        started: Mutex<Vec<usize>>,
        ranges: Mutex<Vec<usize>>,
    }

    impl TimedRunner {
        fn new(job: &Arc<LiveJob>, per_item: Duration, hang_at: Option<usize>) -> Arc<Self> {
            Arc::new(TimedRunner {
                job: job.clone(),
                per_item,
                hang_at,
                started: Mutex::default(),
                ranges: Mutex::default(),
            })
        }

        fn started(&self) -> Vec<usize> {
            self.started.lock().unwrap().clone()
        }
    }

    impl ItemRunner for Arc<TimedRunner> {
        fn run_items(&self, items: Range<usize>) -> BoxFuture<'static, Result<usize>> {
            let this = self.clone();
            async move {
                this.ranges.lock().unwrap().push(items.len());
                let mut finished = 0;
                for item in items {
                    if !this.job.may_start_item() {
                        break;
                    }
                    this.started.lock().unwrap().push(item);
                    if this.hang_at == Some(item) {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(this.per_item).await;
                    let _ = this.job.add_counts(1.0, 0.0);
                    finished += 1;
                }
                Ok(finished)
            }
            .boxed()
        }
    }

    async fn job() -> (TaskContext, MemoryStore, Arc<LiveJob>) {
        let store = MemoryStore::default();
        let (ctx, _) = context(&store, "w1", EngineOptions::default());
        let job = start(&ctx, true).await;
        (ctx, store, job)
    }

    fn ids(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn items_run_in_order_in_ranges_sized_by_their_time() {
        let (_, _, job) = job().await;
        // (Paused time has a resolution of a millisecond.)
        let runner = TimedRunner::new(&job, Duration::from_millis(4), None);
        let outcome = run(&job, 1000, &runner, BatchOptions::default())
            .await
            .unwrap();
        assert_eq!(outcome, BatchOutcome::Completed);
        assert_eq!(runner.started(), ids(1000));
        let ranges = runner.ranges.lock().unwrap().clone();
        assert_eq!(
            &ranges[..4],
            &[1, 8, 64, 250],
            "grows at most eightfold, to ~1 s of items"
        );
        assert!(
            ranges.len() <= 7,
            "{} hops for 1000 items of 4 ms",
            ranges.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn quick_items_travel_in_ranges_up_to_the_limit_and_slow_ones_one_by_one() {
        let (_, _, job) = job().await;
        let quick = TimedRunner::new(&job, Duration::ZERO, None);
        let options = BatchOptions {
            max_range: Some(500),
            ..Default::default()
        };
        run(&job, 2000, &quick, options).await.unwrap();
        assert!(quick.ranges.lock().unwrap().iter().all(|&size| size <= 500));
        assert!(quick.ranges.lock().unwrap().len() <= 8);
        let slow = TimedRunner::new(&job, Duration::from_millis(1500), None);
        run(&job, 4, &slow, BatchOptions::default()).await.unwrap();
        assert_eq!(
            *slow.ranges.lock().unwrap(),
            vec![1, 1, 1, 1],
            "items over a second go one by one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_concurrency_ranges_hold_a_few_items_per_lane() {
        let (_, _, job) = job().await;
        let runner = TimedRunner::new(&job, Duration::from_millis(100), None);
        let options = BatchOptions {
            concurrency: Some(4),
            ..Default::default()
        };
        run(&job, 40, &runner, options).await.unwrap();
        assert!(runner
            .ranges
            .lock()
            .unwrap()
            .iter()
            .all(|&size| size >= 16 || size == 8));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_lets_the_item_in_flight_finish_and_starts_no_other() {
        let (ctx, _, job) = job().await;
        let runner = TimedRunner::new(&job, Duration::from_millis(10), None);
        let halting = job.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(95)).await;
            halting.begin_halt();
        });
        let outcome = run(&job, 100, &runner, BatchOptions::default())
            .await
            .unwrap();
        assert_eq!(outcome, BatchOutcome::Stopped);
        assert_eq!(
            runner.started(),
            ids(10),
            "the tenth item was in flight at 95 ms"
        );
        assert_eq!(ctx.jobs.counts(job.id()), Some((10.0, 0.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_that_does_not_finish_within_the_stop_grace_is_abandoned_uncounted() {
        let (ctx, _, job) = job().await;
        let runner = TimedRunner::new(&job, Duration::from_millis(10), Some(3));
        let halting = job.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            halting.begin_halt();
        });
        let options = BatchOptions {
            stop_grace: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        let began = Instant::now();
        let outcome = run(&job, 10, &runner, options).await.unwrap();
        assert_eq!(outcome, BatchOutcome::Abandoned);
        assert_eq!(
            began.elapsed().as_secs(),
            65,
            "a hung item waits for the stop, then the grace"
        );
        assert_eq!(ctx.jobs.counts(job.id()), Some((3.0, 0.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_lost_during_a_range_ends_the_batch_at_once() {
        let (ctx, _, job) = job().await;
        let runner = TimedRunner::new(&job, Duration::from_millis(10), Some(2));
        let (jobs, lost) = (ctx.jobs.clone(), job.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            jobs.lose(&lost);
        });
        let began = Instant::now();
        let outcome = run(&job, 10, &runner, BatchOptions::default())
            .await
            .unwrap();
        assert_eq!(outcome, BatchOutcome::Gone);
        assert_eq!(began.elapsed().as_secs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lapsed_lease_pauses_the_batch_until_the_job_is_confirmed() {
        let store = MemoryStore::default();
        let options = EngineOptions {
            orphan_after: Some(Duration::from_secs(3)),
            ..Default::default()
        };
        let (ctx, _) = context(&store, "w1", options);
        let job = start(&ctx, true).await;
        let runner = TimedRunner::new(&job, Duration::from_millis(500), None);
        // No heartbeat task runs: the lease lapses after 2 s, and a confirmation comes at 5 s.
        let (jobs, confirmed) = (ctx.jobs.clone(), job.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            jobs.heartbeat_landed(
                std::slice::from_ref(&confirmed),
                &[confirmed.id().to_owned()],
                Instant::now(),
            );
        });
        let began = Instant::now();
        run(&job, 8, &runner, BatchOptions::default())
            .await
            .unwrap();
        assert_eq!(runner.started(), ids(8));
        assert_eq!(
            began.elapsed().as_millis(),
            5000 + 4 * 500,
            "four items before the lease lapsed, four after it was confirmed"
        );
        drop(store.job(job.id()).map(|_| doc! {}));
    }
}
