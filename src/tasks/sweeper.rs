//! The sweeper: every half bound, ends the running jobs of other processes whose heartbeat is
//! older than the bound (`orphanAfter`) by the database server's clock, so neither process's
//! own clock matters. Each job is ended only if its heartbeat is still the one judged stale,
//! so a process that comes back to life in between keeps its job.
//!
//! A process that could not reach the database lately waits a full bound first, so that every
//! live process has had the time to heartbeat again after an outage they all saw (the sweeper
//! would otherwise take them all for dead). That holds at start-up too.

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::TaskContext;
use crate::events::LogLevel;
use crate::job::Ending;

/// Runs until `shutdown`; does nothing when heartbeats are off.
pub async fn run(ctx: TaskContext, shutdown: CancellationToken) {
    let Some(orphan_after) = ctx.jobs.timings().orphan_after else {
        return shutdown.cancelled().await;
    };
    let mut ticks = tokio::time::interval(orphan_after / 2);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if ctx.health.healthy_for(orphan_after) {
            sweep(&ctx, orphan_after).await;
        }
    }
}

async fn sweep(ctx: &TaskContext, orphan_after: std::time::Duration) {
    let failed = |error: crate::Error| {
        ctx.health.failed();
        ctx.log(
            LogLevel::Error,
            format!("{error}; orphaned jobs are looked for again later"),
        );
    };
    let now = match ctx.store.server_time().await {
        Ok(now) => now,
        Err(error) => return failed(error),
    };
    let cutoff = mongodb::bson::DateTime::from_millis(
        now.timestamp_millis() - orphan_after.as_millis() as i64,
    );
    let orphans = match ctx.store.find_orphans(cutoff, ctx.jobs.worker_id()).await {
        Ok(orphans) => orphans,
        Err(error) => return failed(error),
    };
    for orphan in orphans {
        match ctx
            .store
            .end_orphan(&orphan, Ending::interrupted().set_fields())
            .await
        {
            Ok(true) => ctx.log(
                LogLevel::Warn,
                format!(
                    "apostrophe-jobs: ended job {} as failed (interrupted): its process ({}) sent no heartbeat since {} by the database's clock, more than {:?} ago",
                    orphan.id,
                    orphan.worker_id,
                    orphan.heartbeat_at.try_to_rfc3339_string().unwrap_or_default(),
                    orphan_after
                ),
            ),
            Ok(false) => {}
            Err(error) => return failed(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mongodb::bson::doc;
    use tokio_util::sync::CancellationToken;

    use super::run;
    use crate::store::memory::MemoryStore;
    use crate::tasks::testing::{context, orphan_after_three_seconds, run_for, start};

    #[tokio::test(start_paused = true)]
    async fn a_silent_job_of_another_process_is_ended_interrupted_by_the_servers_clock() {
        let store = MemoryStore::default();
        let (dead, _) = context(&store, "dead", orphan_after_three_seconds());
        let orphan = start(&dead, true).await;
        drop(dead);
        let (ctx, events) = context(&store, "alive", orphan_after_three_seconds());
        let own = start(&ctx, true).await;
        let shutdown = CancellationToken::new();
        tokio::spawn(run(ctx.clone(), shutdown.clone()));
        run_for(Duration::from_secs(2)).await;
        assert_eq!(
            store.job(orphan.id()).unwrap().get_bool("ended"),
            Ok(false),
            "not yet stale"
        );
        run_for(Duration::from_secs(3)).await;
        let ended = store.job(orphan.id()).unwrap();
        assert_eq!(ended.get_str("status"), Ok("failed"));
        assert_eq!(ended.get_bool("interrupted"), Ok(true));
        assert!(ended.get_datetime("endedAt").is_ok());
        assert_eq!(
            events.logged(&format!("ended job {} as failed", orphan.id())),
            1
        );
        assert_eq!(
            store.job(own.id()).unwrap().get_bool("ended"),
            Ok(false),
            "its own jobs are never swept"
        );
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_that_could_not_reach_the_database_waits_a_full_bound_before_sweeping() {
        let store = MemoryStore::default();
        let (other, _) = context(&store, "other", orphan_after_three_seconds());
        let job = start(&other, true).await;
        let (ctx, _) = context(&store, "sweeper", orphan_after_three_seconds());
        let shutdown = CancellationToken::new();
        tokio::spawn(run(ctx.clone(), shutdown.clone()));
        run_for(Duration::from_millis(2500)).await;
        // An outage everyone saw: the other process could not heartbeat either.
        ctx.health.failed();
        run_for(Duration::from_secs(2)).await;
        assert_eq!(
            store.job(job.id()).unwrap().get_bool("ended"),
            Ok(false),
            "the sweeper gives the others a full bound to heartbeat again"
        );
        store.change(job.id(), doc! { "heartbeatAt": store.now() });
        run_for(Duration::from_secs(2)).await;
        assert_eq!(store.job(job.id()).unwrap().get_bool("ended"), Ok(false));
        run_for(Duration::from_secs(4)).await;
        assert_eq!(
            store.job(job.id()).unwrap().get_bool("ended"),
            Ok(true),
            "silent again"
        );
        shutdown.cancel();
    }
}
