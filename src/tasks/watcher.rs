//! The stop/cancel watcher: one task for all of this process's jobs (2.x ran one timer and
//! one query per job). At each tick every job with counts to write gets a write, which for a
//! stoppable job reads `canceling` back and so is its stop check; the stoppable jobs with
//! nothing to write share one query. A job whose items finish slowly costs one query per
//! tick at most, and a busy one no query at all. A count write that sees a stop, and a
//! `cancel` handled by this process, have their job checked at once.
//!
//! The tick also ends the jobs whose work function has not acknowledged a stop within the
//! stop grace (a batch loop enforces the grace for its own items).

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::count_write::{write_counts, write_deltas};
use super::{end, TaskContext};
use crate::events::LogLevel;
use crate::job::Ending;

/// Runs until `shutdown`.
pub async fn run(ctx: TaskContext, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(ctx.jobs.timings().watch_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.jobs.stops_to_check.notified() => {
                let seen = ctx.jobs.take_stops_seen();
                check_stops(&ctx, &seen).await;
            }
            _ = ticks.tick() => tick(&ctx).await,
        }
    }
}

async fn tick(ctx: &TaskContext) {
    let plan = ctx.jobs.tick_plan();
    for job in plan.writes {
        ctx.writes.spawn(write_counts(ctx.clone(), job));
    }
    if ctx.jobs.has_deltas() {
        ctx.writes.spawn(write_deltas(ctx.clone()));
    }
    if !plan.queries.is_empty() {
        check_stops(ctx, &plan.queries).await;
    }
    for job in ctx.jobs.stalled_halts(Instant::now()) {
        let grace = ctx.jobs.timings().stop_grace;
        ctx.log(
            LogLevel::Error,
            format!(
                "apostrophe-jobs: the work function of job {} did not acknowledge the stop (or cancel) \
                 request within {grace:?} (the stopGrace option); the job is ended as failed (interrupted). \
                 The work may still be running: call reporting.isCanceling() in its loop, or watch \
                 reporting.signal, and acknowledge promptly.",
                job.id()
            ),
        );
        let ctx = ctx.clone();
        ctx.writes.clone().spawn(async move {
            ctx.events.job_cut_off(job.id());
            if let Err(error) = end::end_job(&ctx, &job, Ending::interrupted(), None).await {
                ctx.log(LogLevel::Error, error.to_string());
            }
        });
    }
}

/// Reads which of these jobs have been asked to stop, marks them halting (no new item) and
/// calls their hook with the document. One round trip for all of them.
pub async fn check_stops(ctx: &TaskContext, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let sent_at = Instant::now();
    let requested = match ctx.store.find_canceling(ids).await {
        Ok(documents) => {
            ctx.health.answered();
            documents
        }
        Err(error) => {
            if error.is_transient() && !ctx.health.failed() {
                return;
            }
            ctx.log(
                LogLevel::Error,
                format!("{error}; stop requests are picked up once MongoDB answers again"),
            );
            return;
        }
    };
    ctx.jobs.checked(ids, sent_at);
    for document in requested {
        let Some(job) = document.get_str("_id").ok().and_then(|id| ctx.jobs.get(id)) else {
            continue;
        };
        if let Some(kind) = job.begin_halt() {
            ctx.events.halt_requested(job.id(), kind, &document);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mongodb::bson::doc;
    use tokio_util::sync::CancellationToken;

    use super::run;
    use crate::options::EngineOptions;
    use crate::state::Phase;
    use crate::store::memory::MemoryStore;
    use crate::tasks::testing::{context, run_for, start};

    #[tokio::test(start_paused = true)]
    async fn a_busy_jobs_count_write_is_its_stop_check_and_one_query_covers_the_quiet_ones() {
        let store = MemoryStore::default();
        let (ctx, _) = context(&store, "w1", EngineOptions::default());
        let busy = start(&ctx, true).await;
        let _quiet = start(&ctx, true).await;
        let _quiet_too = start(&ctx, true).await;
        let shutdown = CancellationToken::new();
        tokio::spawn(run(ctx.clone(), shutdown.clone()));
        for _ in 0..4 {
            busy.add_counts(1.0, 0.0).unwrap();
            run_for(Duration::from_millis(250)).await;
        }
        // The first tick comes at once, then one per 250 ms.
        let ticks = 4;
        assert_eq!(
            store.calls("find_canceling"),
            ticks,
            "one query per tick for both quiet jobs"
        );
        assert_eq!(
            store.calls("write_counts"),
            4,
            "the busy job is checked by its writes"
        );
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_calls_the_hook_once_with_the_document() {
        let store = MemoryStore::default();
        let (ctx, events) = context(&store, "w1", EngineOptions::default());
        let job = start(&ctx, true).await;
        let shutdown = CancellationToken::new();
        tokio::spawn(run(ctx.clone(), shutdown.clone()));
        run_for(Duration::from_millis(100)).await;
        store.change(job.id(), doc! { "canceling": true });
        job.add_counts(1.0, 0.0).unwrap();
        run_for(Duration::from_secs(2)).await;
        assert_eq!(events.halts(), 1);
        let halts = events.halts.lock().unwrap();
        assert_eq!(halts[0].0, job.id());
        assert_eq!(halts[0].2.get_bool("canceling"), Ok(true));
        assert!(matches!(job.phase(), Phase::Halting { .. }));
        assert!(!job.may_start_item());
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_work_function_that_never_acknowledges_a_stop_is_ended_interrupted_after_the_grace() {
        let store = MemoryStore::default();
        let options = EngineOptions {
            stop_grace: Some(Duration::from_secs(3)),
            ..Default::default()
        };
        let (ctx, events) = context(&store, "w1", options);
        let job = start(&ctx, true).await;
        job.add_counts(2.0, 0.0).unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(run(ctx.clone(), shutdown.clone()));
        store.change(job.id(), doc! { "canceling": true });
        run_for(Duration::from_secs(2)).await;
        assert_eq!(events.halts(), 1);
        assert_eq!(store.job(job.id()).unwrap().get_bool("ended"), Ok(false));
        run_for(Duration::from_secs(2)).await;
        let ended = store.job(job.id()).unwrap();
        assert_eq!(ended.get_str("status"), Ok("failed"));
        assert_eq!(ended.get_bool("interrupted"), Ok(true));
        assert_eq!(ended.get_i32("good"), Ok(2), "its counts are kept");
        assert_eq!(events.logged("did not acknowledge the stop"), 1);
        assert_eq!(events.logged("may still be running"), 1);
        assert_eq!(job.phase(), Phase::Gone);
        shutdown.cancel();
    }
}
