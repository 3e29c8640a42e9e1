//! The loop of `run`: hands a batch job's items to the item runner (the JavaScript side, which
//! calls the site's `change(req, id, cb)`) in order, `concurrency` at a time, and takes no new
//! item once a stop has been picked up. The item in flight when a stop arrives finishes.
//!
//! Items travel as index ranges into the id array that JavaScript keeps, so `change` receives
//! the very elements that `launder.ids` kept (a number stays a number) and nothing is copied.
//! At concurrency 1 the ranges grow while items are quick, because one hop into JavaScript
//! costs far more than a no-op item; the runner checks for a stop between the items of a
//! range, so stops are as prompt as with one item per hop.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{try_join_all, BoxFuture};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// Runs the site's `change` for some items.
pub trait ItemRunner: Send + Sync + 'static {
    /// Runs the items at these indexes one after the other, in order, counting each as good
    /// or bad as it finishes. Resolves once the last has finished, or early when a stop was
    /// requested.
    fn run_items(&self, items: Range<usize>) -> BoxFuture<'static, Result<ChunkReport>>;
}

/// What the runner did with a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkReport {
    /// How many of the range's items ran to completion.
    pub finished: usize,
    /// Whether the runner stopped early because the job is halting.
    pub halted: bool,
}

/// How a batch runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchOptions {
    /// How many items run at once. Defaults to 1, the 2.x order (one after the other).
    pub concurrency: Option<usize>,
    /// The largest range of items per hop at concurrency 1. Defaults to 1,024.
    pub max_chunk: Option<usize>,
}

/// How a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every item was handed over and finished.
    Completed,
    /// A stop was picked up; later items were not started.
    Halted,
}

/// A chunk that finishes faster than this doubles the next one.
const QUICK_CHUNK: Duration = Duration::from_millis(2);
/// A chunk slower than this halves the next one, so a single slow item never waits behind
/// a long chunk of its neighbours in one hop.
const SLOW_CHUNK: Duration = Duration::from_millis(50);

/// Runs a batch of `count` items. `halt` is the job's stop signal from the watcher.
pub async fn run(
    count: usize,
    runner: Arc<dyn ItemRunner>,
    halt: CancellationToken,
    options: BatchOptions,
) -> Result<BatchOutcome> {
    let concurrency = options.concurrency.unwrap_or(1).max(1);
    if concurrency == 1 {
        run_in_series(
            count,
            runner,
            halt,
            options.max_chunk.unwrap_or(1024).max(1),
        )
        .await
    } else {
        run_in_lanes(count, runner, halt, concurrency).await
    }
}

async fn run_in_series(
    count: usize,
    runner: Arc<dyn ItemRunner>,
    halt: CancellationToken,
    max_chunk: usize,
) -> Result<BatchOutcome> {
    let mut next = 0;
    let mut chunk = 1;
    while next < count {
        if halt.is_cancelled() {
            return Ok(BatchOutcome::Halted);
        }
        let end = (next + chunk).min(count);
        let started = Instant::now();
        let report = runner.run_items(next..end).await?;
        if report.halted {
            return Ok(BatchOutcome::Halted);
        }
        next = end;
        let took = started.elapsed();
        if took < QUICK_CHUNK {
            chunk = (chunk * 2).min(max_chunk);
        } else if took > SLOW_CHUNK {
            chunk = (chunk / 2).max(1);
        }
    }
    Ok(BatchOutcome::Completed)
}

/// `concurrency` lanes take the next item from a shared cursor, so items start in order and
/// at most `concurrency` run at once (async's `eachLimit`).
async fn run_in_lanes(
    count: usize,
    runner: Arc<dyn ItemRunner>,
    halt: CancellationToken,
    concurrency: usize,
) -> Result<BatchOutcome> {
    let cursor = Arc::new(AtomicUsize::new(0));
    let halted = Arc::new(AtomicBool::new(false));
    let lanes = (0..concurrency.min(count)).map(|_| {
        let (cursor, halted, runner, halt) =
            (cursor.clone(), halted.clone(), runner.clone(), halt.clone());
        async move {
            loop {
                if halt.is_cancelled() || halted.load(Ordering::Relaxed) {
                    halted.store(true, Ordering::Relaxed);
                    return Ok::<(), crate::Error>(());
                }
                let index = cursor.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return Ok(());
                }
                if runner.run_items(index..index + 1).await?.halted {
                    halted.store(true, Ordering::Relaxed);
                }
            }
        }
    });
    try_join_all(lanes).await?;
    Ok(if halted.load(Ordering::Relaxed) {
        BatchOutcome::Halted
    } else {
        BatchOutcome::Completed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A runner in Rust standing in for the JavaScript side: records the order in which items
    /// start, takes `delay` per item, and obeys the halt token between items as the
    /// JavaScript runner obeys its stop hook.
    struct RecordingRunner {
        started: Mutex<Vec<usize>>,
        running: AtomicUsize,
        most_at_once: AtomicUsize,
        chunk_sizes: Mutex<Vec<usize>>,
        delay: Duration,
        halt: CancellationToken,
        halt_after: Option<usize>,
    }

    impl RecordingRunner {
        fn new(delay: Duration, halt: CancellationToken, halt_after: Option<usize>) -> Arc<Self> {
            Arc::new(RecordingRunner {
                started: Mutex::new(Vec::new()),
                running: AtomicUsize::new(0),
                most_at_once: AtomicUsize::new(0),
                chunk_sizes: Mutex::new(Vec::new()),
                delay,
                halt,
                halt_after,
            })
        }

        fn started(&self) -> Vec<usize> {
            self.started.lock().unwrap().clone()
        }
    }

    struct Shared(Arc<RecordingRunner>);

    impl ItemRunner for Shared {
        fn run_items(&self, items: Range<usize>) -> BoxFuture<'static, Result<ChunkReport>> {
            let this = self.0.clone();
            Box::pin(async move {
                this.chunk_sizes.lock().unwrap().push(items.len());
                let mut finished = 0;
                for item in items {
                    if this.halt.is_cancelled() {
                        return Ok(ChunkReport {
                            finished,
                            halted: true,
                        });
                    }
                    let count = {
                        let mut started = this.started.lock().unwrap();
                        started.push(item);
                        started.len()
                    };
                    let now = this.running.fetch_add(1, Ordering::SeqCst) + 1;
                    this.most_at_once.fetch_max(now, Ordering::SeqCst);
                    if !this.delay.is_zero() {
                        tokio::time::sleep(this.delay).await;
                    }
                    this.running.fetch_sub(1, Ordering::SeqCst);
                    finished += 1;
                    if Some(count) == this.halt_after {
                        this.halt.cancel();
                    }
                }
                Ok(ChunkReport {
                    finished,
                    halted: false,
                })
            })
        }
    }

    fn ids(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    #[tokio::test]
    async fn items_run_one_at_a_time_in_order_by_default() {
        let halt = CancellationToken::new();
        let runner = RecordingRunner::new(Duration::ZERO, halt.clone(), None);
        let outcome = run(
            1000,
            Arc::new(Shared(runner.clone())),
            halt,
            BatchOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(outcome, BatchOutcome::Completed);
        assert_eq!(runner.started(), ids(1000));
        assert_eq!(runner.most_at_once.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn quick_items_travel_in_growing_chunks_up_to_the_limit() {
        let halt = CancellationToken::new();
        let runner = RecordingRunner::new(Duration::ZERO, halt.clone(), None);
        let options = BatchOptions {
            concurrency: None,
            max_chunk: Some(64),
        };
        run(1000, Arc::new(Shared(runner.clone())), halt, options)
            .await
            .unwrap();
        let sizes = runner.chunk_sizes.lock().unwrap().clone();
        assert_eq!(&sizes[..4], &[1, 2, 4, 8]);
        assert!(sizes.iter().all(|&size| size <= 64));
        assert!(
            sizes.len() < 40,
            "{} hops for 1000 quick items",
            sizes.len()
        );
    }

    #[tokio::test]
    async fn slow_items_go_one_per_hop() {
        let halt = CancellationToken::new();
        let runner = RecordingRunner::new(Duration::from_millis(60), halt.clone(), None);
        run(
            4,
            Arc::new(Shared(runner.clone())),
            halt,
            BatchOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(*runner.chunk_sizes.lock().unwrap(), vec![1, 1, 1, 1]);
    }

    #[tokio::test]
    async fn a_stop_lets_the_current_item_finish_and_starts_no_other() {
        let halt = CancellationToken::new();
        let runner = RecordingRunner::new(Duration::ZERO, halt.clone(), Some(10));
        let outcome = run(
            100,
            Arc::new(Shared(runner.clone())),
            halt,
            BatchOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(outcome, BatchOutcome::Halted);
        assert_eq!(runner.started(), ids(10));
    }

    #[tokio::test]
    async fn concurrency_caps_items_in_flight_and_starts_them_in_order() {
        let halt = CancellationToken::new();
        let runner = RecordingRunner::new(Duration::from_millis(2), halt.clone(), None);
        let options = BatchOptions {
            concurrency: Some(4),
            max_chunk: None,
        };
        let outcome = run(40, Arc::new(Shared(runner.clone())), halt, options)
            .await
            .unwrap();
        assert_eq!(outcome, BatchOutcome::Completed);
        assert_eq!(runner.started(), ids(40));
        assert_eq!(runner.most_at_once.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_stop_under_concurrency_starts_no_new_items() {
        let halt = CancellationToken::new();
        let runner = RecordingRunner::new(Duration::from_millis(1), halt.clone(), Some(8));
        let options = BatchOptions {
            concurrency: Some(3),
            max_chunk: None,
        };
        let outcome = run(100, Arc::new(Shared(runner.clone())), halt, options)
            .await
            .unwrap();
        assert_eq!(outcome, BatchOutcome::Halted);
        // Items already started by the other lanes when the stop arrived may finish.
        assert!(runner.started().len() <= 10);
    }

    #[tokio::test]
    async fn an_empty_batch_completes_at_once() {
        let halt = CancellationToken::new();
        let runner = RecordingRunner::new(Duration::ZERO, halt.clone(), None);
        let outcome = run(
            0,
            Arc::new(Shared(runner.clone())),
            halt,
            BatchOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(outcome, BatchOutcome::Completed);
        assert!(runner.chunk_sizes.lock().unwrap().is_empty());
    }
}
