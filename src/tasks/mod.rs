//! The engine's background tasks and the writes they share. A task depends on the live jobs
//! ([`crate::state`]), the store and the host's events, never on another task or on the
//! engine:
//!
//! - [`writer`]: early count writes, when quick items pile up;
//! - [`watcher`]: every `watch_interval`, count writes that double as stop checks, one query
//!   for the stoppable jobs that had nothing to write, and the stop grace of work functions;
//! - [`heartbeat`]: keeps this process's jobs its own, and confirms them when a batch waits;
//! - [`sweeper`]: ends other processes' jobs whose heartbeat stopped;
//! - [`end`]: a job's final write (not a task of its own: each end runs on its caller's
//!   future, so one job's retried end never holds up another job's writes).

use std::any::Any;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::{EngineEvents, LogLevel};
use crate::state::LiveJobs;
use crate::store::Store;

pub mod end;
pub mod heartbeat;
pub mod sweeper;
pub mod watcher;
pub mod writer;

mod count_write;

pub use count_write::write_counts;

/// What every task works with.
#[derive(Clone)]
pub struct TaskContext {
    /// Where job state is kept.
    pub store: Arc<dyn Store>,
    /// The live jobs of this process.
    pub jobs: Arc<LiveJobs>,
    /// The host's log and hooks.
    pub events: Arc<dyn EngineEvents>,
    /// Whether the database answers, as the tasks see it.
    pub health: Arc<Health>,
    /// Tracks the count writes the tasks spawn, so closing can wait for them.
    pub writes: TaskTracker,
}

impl TaskContext {
    /// Logs a message.
    pub fn log(&self, level: LogLevel, message: String) {
        self.events.log(level, message);
    }

    /// Says, once, that a job is no longer this process's, and has its work stopped.
    pub fn report_lost(&self, id: &str) {
        self.events.job_cut_off(id);
        self.log(
            LogLevel::Warn,
            format!(
                "apostrophe-jobs: job {id} is no longer this process's to write: another process ended it \
                 (it saw no heartbeat from this process for longer than orphanAfter, for example while this \
                 process was frozen or cut off from MongoDB), or it was ended or deleted elsewhere. This \
                 process starts no new item of it and never writes to it again; an item in flight finishes \
                 and is not counted."
            ),
        );
    }
}

/// Whether the database answers, as the tasks see it: transient failures are reported once
/// per outage, and the sweeper waits until this process has been connected for a full bound.
#[derive(Debug)]
pub struct Health {
    in_outage: AtomicBool,
    last_failure: Mutex<Option<Instant>>,
    since: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            in_outage: AtomicBool::new(false),
            last_failure: Mutex::new(None),
            since: Instant::now(),
        }
    }
}

impl Health {
    /// Records a transient failure. Returns whether it starts an outage (to report it once).
    pub fn failed(&self) -> bool {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        !self.in_outage.swap(true, Ordering::SeqCst)
    }

    /// Records a success. Returns whether it ends an outage.
    pub fn answered(&self) -> bool {
        self.in_outage.swap(false, Ordering::SeqCst)
    }

    /// Whether the database has answered without a failure for at least `bound`, counted from
    /// the start.
    pub fn healthy_for(&self, bound: Duration) -> bool {
        let since = self
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(self.since)
            .max(self.since);
        since.elapsed() >= bound
    }
}

/// Spawns a background task that is restarted, with a logged error, if it panics: a task that
/// died silently would stop heartbeats, and other processes would sweep live jobs. `task`
/// makes the task's future; the task returns only when `shutdown` is cancelled.
pub fn spawn_supervised<F, Fut>(
    tracker: &TaskTracker,
    shutdown: CancellationToken,
    events: Arc<dyn EngineEvents>,
    name: &'static str,
    task: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tracker.spawn(async move {
        loop {
            match tokio::spawn(task()).await {
                Ok(()) => return,
                Err(error) if error.is_panic() => {
                    events.log(
                        LogLevel::Error,
                        format!(
                            "apostrophe-jobs: the {name} task failed ({}); it is restarted in a second. Please report this as a bug of apostrophe-jobs-native.",
                            panic_message(error.into_panic())
                        ),
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(_) => return,
            }
        }
    });
}

fn panic_message(panic: Box<dyn Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

#[cfg(test)]
pub(crate) mod testing {
    //! What the tests of the tasks share: a context on an in-memory store, and a host that
    //! records the hooks it is asked to call and the messages it is given.

    use std::sync::{Arc, Mutex};

    use mongodb::bson::Document;
    use tokio::time::Instant;
    use tokio_util::task::TaskTracker;

    use super::{Health, TaskContext};
    use crate::events::{EngineEvents, LogLevel};
    use crate::job::{HaltKind, NewJob};
    use crate::options::{EngineOptions, Timings};
    use crate::state::{LiveJob, LiveJobs};
    use crate::store::memory::MemoryStore;

    /// A host that records.
    #[derive(Default)]
    pub struct Recorded {
        pub halts: Mutex<Vec<(String, HaltKind, Document)>>,
        pub logs: Mutex<Vec<(LogLevel, String)>>,
    }

    impl Recorded {
        /// The messages logged so far that contain `text`.
        pub fn logged(&self, text: &str) -> usize {
            self.logs
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, message)| message.contains(text))
                .count()
        }

        /// How many hooks were called.
        pub fn halts(&self) -> usize {
            self.halts.lock().unwrap().len()
        }
    }

    impl EngineEvents for Recorded {
        fn halt_requested(&self, id: &str, kind: HaltKind, job: &Document) {
            self.halts
                .lock()
                .unwrap()
                .push((id.to_owned(), kind, job.clone()));
        }

        fn job_cut_off(&self, id: &str) {
            self.logs
                .lock()
                .unwrap()
                .push((LogLevel::Warn, format!("(cut off: {id})")));
        }

        fn log(&self, level: LogLevel, message: String) {
            self.logs.lock().unwrap().push((level, message));
        }
    }

    /// A task context of a process named `worker`, on `store`.
    pub fn context(
        store: &MemoryStore,
        worker: &str,
        options: EngineOptions,
    ) -> (TaskContext, Arc<Recorded>) {
        let events = Arc::new(Recorded::default());
        let timings = Timings::from_options(&options).unwrap();
        let ctx = TaskContext {
            store: Arc::new(store.clone()),
            jobs: Arc::new(LiveJobs::new(worker.to_owned(), timings)),
            events: events.clone(),
            health: Arc::new(Health::default()),
            writes: TaskTracker::new(),
        };
        (ctx, events)
    }

    /// Starts a job (stoppable when `stoppable`) in `ctx`'s process.
    pub async fn start(ctx: &TaskContext, stoppable: bool) -> Arc<LiveJob> {
        let id = crate::job::new_job_id();
        let heartbeats = ctx.jobs.timings().orphan_after.is_some();
        let sent_at = Instant::now();
        let new_job = NewJob {
            can_stop: stoppable,
            ..Default::default()
        };
        ctx.store
            .insert(new_job.initial_fields(&id, ctx.jobs.worker_id(), heartbeats))
            .await
            .unwrap();
        ctx.jobs
            .register(id, HaltKind::for_job(false, stoppable), sent_at, 0)
    }

    /// Options with a bound of 3 s (heartbeats every 0.5 s, sweeps every 1.5 s).
    pub fn orphan_after_three_seconds() -> EngineOptions {
        EngineOptions {
            orphan_after: Some(std::time::Duration::from_secs(3)),
            ..Default::default()
        }
    }

    /// Lets the tasks run for `duration` of (paused) time.
    pub async fn run_for(duration: std::time::Duration) {
        tokio::time::sleep(duration).await;
    }
}
