//! The stop/cancel watcher: one task per engine, at most one periodic query per tick for all
//! of this process's live stoppable jobs (2.x ran one timer and one query per job). Each tick
//! first has the writer write pending counts, reading `canceling` back for the jobs it
//! writes; the query covers only the jobs that write did not check, so a job whose items
//! finish slowly costs no query at all. (A job written by an early flush just before the tick
//! is queried as well.) A count write that sees a stop, and a `cancel` handled by this
//! process, have their job checked at once, outside the tick. A tick never overlaps the
//! previous one, because the loop awaits each check before the next tick.
//!
//! The same task keeps the heartbeat of the process's running jobs (one write for all of
//! them) and ends other processes' jobs whose heartbeat stopped (their process died).

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::DateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::engine::{LogLevel, Shared};
use crate::{job, writer};

pub(crate) async fn run(
    shared: Arc<Shared>,
    writer: mpsc::UnboundedSender<writer::Command>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(shared.timings.watch_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    let mut caretaker = shared.timings.orphan_after.map(Caretaker::new);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.stop_seen.notified() => {
                let seen: Vec<String> = shared.stops_seen().drain(..).collect();
                for id in seen {
                    check_inner(&shared, Some(&id), None, true).await;
                }
                continue;
            }
            _ = ticks.tick() => {}
        }
        // Pending counts go out first; for a stoppable job, that write reads `canceling`
        // back, so only the jobs it did not check are queried.
        let tick_started = Instant::now();
        let (reply, written) = oneshot::channel();
        if writer.send(writer::Command::Tick { reply }).is_ok() {
            // The writer may be retrying a job's end while MongoDB is away: checks and
            // heartbeats go on without waiting for it.
            let _ = tokio::time::timeout(shared.timings.watch_interval, written).await;
        }
        let ok = check_inner(&shared, None, Some(tick_started), !failing).await;
        failing = !ok;
        if let Some(caretaker) = caretaker.as_mut() {
            caretaker.tick(&shared).await;
        }
    }
}

/// Heartbeats and the sweeping of orphans.
struct Caretaker {
    orphan_after: Duration,
    next_heartbeat: Instant,
    next_sweep: Instant,
    /// Since when this process has reached the database without a failure. A process that
    /// was cut off itself waits a full bound before sweeping, so that every other process
    /// has had the time to heartbeat again.
    healthy_since: Option<Instant>,
    swept_once: bool,
}

impl Caretaker {
    fn new(orphan_after: Duration) -> Self {
        let now = Instant::now();
        Caretaker {
            orphan_after,
            next_heartbeat: now,
            next_sweep: now,
            healthy_since: Some(now),
            swept_once: false,
        }
    }

    async fn tick(&mut self, shared: &Shared) {
        let now = Instant::now();
        if now >= self.next_heartbeat {
            let every = self.orphan_after / 6;
            self.next_heartbeat = now + every;
            // Count writes carry the heartbeat too: only the jobs without one lately.
            let ids: Vec<String> = shared
                .live()
                .iter()
                .filter(|(_, job)| now.duration_since(job.written_at) >= every / 2)
                .map(|(id, _)| id.clone())
                .collect();
            if !ids.is_empty() {
                match shared.store.heartbeat(&ids, DateTime::now()).await {
                    Ok(()) => {
                        self.healthy_since.get_or_insert(now);
                        let mut live = shared.live();
                        for id in &ids {
                            if let Some(job) = live.get_mut(id) {
                                job.written_at = now;
                            }
                        }
                    }
                    Err(_) => self.healthy_since = None,
                }
            }
        }
        let healthy_long_enough = self
            .healthy_since
            .is_some_and(|since| since.elapsed() >= self.orphan_after);
        if now >= self.next_sweep && (!self.swept_once || healthy_long_enough) {
            self.next_sweep = now + self.orphan_after / 2;
            self.swept_once = true;
            self.sweep(shared).await;
        }
    }

    async fn sweep(&mut self, shared: &Shared) {
        let cutoff = DateTime::from_system_time(std::time::SystemTime::now() - self.orphan_after);
        let fields = job::interrupted_fields(DateTime::now());
        match shared.store.end_orphans(cutoff, &shared.worker.id, fields).await {
            Ok(0) => {}
            Ok(count) => shared.events.log(
                LogLevel::Warn,
                format!("apostrophe-jobs: ended {count} job(s) as failed (interrupted): their process stopped sending heartbeats more than {:?} ago", self.orphan_after),
            ),
            Err(error) => {
                self.healthy_since = None;
                shared.events.log(LogLevel::Error, format!("{error}; orphaned jobs are looked for again later"));
            }
        }
    }
}

/// One pass: reads which of the watched jobs (or only `only`) have `canceling: true`, marks
/// them halting, wakes their batch loop and calls their hook.
pub(crate) async fn check(shared: &Shared, only: Option<&str>) {
    check_inner(shared, only, None, true).await;
}

/// `checked_since`: leave out the jobs whose `canceling` was read since then.
async fn check_inner(
    shared: &Shared,
    only: Option<&str>,
    checked_since: Option<Instant>,
    log_failure: bool,
) -> bool {
    let checking_at = Instant::now();
    let ids: Vec<String> = shared
        .live()
        .iter()
        .filter(|(id, live)| {
            live.kind.is_some()
                && !live.halting
                && only.is_none_or(|only| only == id.as_str())
                && checked_since.is_none_or(|since| live.checked_at < since)
        })
        .map(|(id, _)| id.clone())
        .collect();
    if ids.is_empty() {
        return true;
    }
    let requested = match shared.store.find_canceling(&ids).await {
        Ok(documents) => {
            let mut live = shared.live();
            for id in &ids {
                if let Some(job) = live.get_mut(id) {
                    job.checked_at = checking_at;
                }
            }
            documents
        }
        Err(error) => {
            if log_failure {
                shared.events.log(
                    LogLevel::Error,
                    format!("{error}; stop requests are picked up once MongoDB answers again"),
                );
            }
            return false;
        }
    };
    for document in requested {
        let Ok(id) = document.get_str("_id") else {
            continue;
        };
        let kind = {
            let mut live = shared.live();
            let Some(job) = live.get_mut(id) else {
                continue;
            };
            if job.halting {
                continue;
            }
            let Some(kind) = job.kind else {
                continue;
            };
            job.halting = true;
            job.halt.cancel();
            kind
        };
        shared.events.halt_requested(id, kind, &document);
    }
    true
}
