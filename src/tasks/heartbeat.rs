//! Heartbeats: every sixth of the bound (`orphanAfter`), one write refreshes `heartbeatAt`,
//! stamped by the database server, for this process's jobs that no count write refreshed
//! lately. A heartbeat that finds a job no longer this process's loses it. When a batch waits
//! because its job's lease lapsed (no write confirmed the job for two thirds of the bound),
//! a heartbeat goes out at once to confirm it, or to find it lost.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::TaskContext;
use crate::events::LogLevel;

/// Confirmations asked for by waiting batches go out at most this often.
const CONFIRMATION_SPACING: Duration = Duration::from_millis(250);

/// Runs until `shutdown`; does nothing when heartbeats are off.
pub async fn run(ctx: TaskContext, shutdown: CancellationToken) {
    let Some(every) = ctx.jobs.timings().heartbeat_every() else {
        return shutdown.cancelled().await;
    };
    let mut ticks = tokio::time::interval(every / 2);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_round = Instant::now() - CONFIRMATION_SPACING;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
            _ = ctx.jobs.confirmation_wanted.notified() => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(last_round + CONFIRMATION_SPACING) => {}
                }
            }
        }
        last_round = Instant::now();
        beat(&ctx).await;
    }
}

async fn beat(ctx: &TaskContext) {
    let due = ctx.jobs.heartbeats_due(Instant::now());
    if due.is_empty() {
        return;
    }
    let ids: Vec<String> = due.iter().map(|job| job.id().to_owned()).collect();
    let sent_at = Instant::now();
    match ctx.store.heartbeat(&ids, ctx.jobs.worker_id()).await {
        Ok(still_ours) => {
            ctx.health.answered();
            for id in ctx.jobs.heartbeat_landed(&due, &still_ours, sent_at) {
                ctx.report_lost(&id);
            }
        }
        Err(error) => {
            let starts_outage = !error.is_transient() || ctx.health.failed();
            if starts_outage {
                ctx.log(
                    LogLevel::Error,
                    format!("{error}; heartbeats go on once MongoDB answers again, and batches wait for them"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mongodb::bson::doc;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::run;
    use crate::state::Phase;
    use crate::store::memory::MemoryStore;
    use crate::tasks::spawn_supervised;
    use crate::tasks::testing::{context, orphan_after_three_seconds, run_for, start};

    #[tokio::test(start_paused = true)]
    async fn a_quiet_job_gets_a_heartbeat_stamped_by_the_servers_clock() {
        let store = MemoryStore::default();
        let (ctx, _) = context(&store, "w1", orphan_after_three_seconds());
        let job = start(&ctx, false).await;
        let shutdown = CancellationToken::new();
        tokio::spawn(run(ctx.clone(), shutdown.clone()));
        run_for(Duration::from_secs(10)).await;
        let stamped = *store
            .job(job.id())
            .unwrap()
            .get_datetime("heartbeatAt")
            .unwrap();
        let age = store.now().timestamp_millis() - stamped.timestamp_millis();
        assert!(
            age <= 500,
            "a heartbeat at most a sixth of the bound old, not {age} ms"
        );
        assert!(job.may_start_item(), "the lease holds");
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_that_finds_the_job_ended_elsewhere_loses_it_and_says_so_once() {
        let store = MemoryStore::default();
        let (ctx, events) = context(&store, "w1", orphan_after_three_seconds());
        let job = start(&ctx, false).await;
        let shutdown = CancellationToken::new();
        tokio::spawn(run(ctx.clone(), shutdown.clone()));
        store.change(
            job.id(),
            doc! { "ended": true, "status": "failed", "interrupted": true },
        );
        run_for(Duration::from_secs(5)).await;
        assert_eq!(job.phase(), Phase::Gone);
        assert!(!job.may_start_item());
        assert_eq!(events.logged("is no longer this process's"), 1);
        assert!(job.add_counts(1.0, 0.0).is_err(), "nothing more is counted");
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lapsed_lease_stops_new_items_until_a_heartbeat_confirms_the_job() {
        let store = MemoryStore::default();
        let (ctx, _) = context(&store, "w1", orphan_after_three_seconds());
        let job = start(&ctx, false).await;
        let shutdown = CancellationToken::new();
        tokio::spawn(run(ctx.clone(), shutdown.clone()));
        store.set_down(true);
        run_for(Duration::from_secs(3)).await;
        assert!(
            !job.may_start_item(),
            "two thirds of the bound without a confirmed write"
        );
        store.set_down(false);
        tokio::time::timeout(Duration::from_secs(2), job.lease_confirmed())
            .await
            .expect("a heartbeat goes out at once for a waiting batch");
        assert!(job.may_start_item());
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_logged_and_restarted() {
        let store = MemoryStore::default();
        let (ctx, events) = context(&store, "w1", orphan_after_three_seconds());
        let job = start(&ctx, false).await;
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        store.panic_on_next_heartbeat();
        let (task_ctx, task_shutdown) = (ctx.clone(), shutdown.clone());
        spawn_supervised(
            &tracker,
            shutdown.clone(),
            ctx.events.clone(),
            "heartbeat",
            move || run(task_ctx.clone(), task_shutdown.clone()),
        );
        run_for(Duration::from_secs(10)).await;
        assert_eq!(events.logged("the heartbeat task failed"), 1);
        let stamped = *store
            .job(job.id())
            .unwrap()
            .get_datetime("heartbeatAt")
            .unwrap();
        assert!(
            store.now().timestamp_millis() - stamped.timestamp_millis() <= 500,
            "heartbeats go on"
        );
        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(1), tracker.wait())
            .await
            .expect("the supervisor returns once the task is shut down");
    }
}
