//! The writer: writes the counts of quick items before the watcher's next tick, at most once
//! per `flush_interval`, and only when enough items (or a total) wait; counts of slower items
//! go with the tick, where the write doubles as the stop check. Each job's write runs on its
//! own, so a job whose writes fail or hang holds up no other.

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::count_write::{write_counts, write_deltas};
use super::TaskContext;

/// Runs until `shutdown`.
pub async fn run(ctx: TaskContext, shutdown: CancellationToken) {
    let interval = ctx.jobs.timings().flush_interval;
    let mut last_round = Instant::now() - interval;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.jobs.write_wanted.notified() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sleep_until(last_round + interval) => {}
        }
        last_round = Instant::now();
        let (jobs, deltas_waiting) = ctx.jobs.early_writes();
        for job in jobs {
            ctx.writes.spawn(write_counts(ctx.clone(), job));
        }
        if deltas_waiting {
            ctx.writes.spawn(write_deltas(ctx.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mongodb::bson::Bson;
    use tokio_util::sync::CancellationToken;

    use super::run;
    use crate::options::EngineOptions;
    use crate::store::memory::MemoryStore;
    use crate::tasks::testing::{context, run_for, start};
    use crate::tasks::watcher;

    #[tokio::test(start_paused = true)]
    async fn quick_items_are_written_early_and_slow_ones_wait_for_the_tick() {
        let store = MemoryStore::default();
        let (ctx, _) = context(&store, "w1", EngineOptions::default());
        let job = start(&ctx, true).await;
        let shutdown = CancellationToken::new();
        tokio::spawn(run(ctx.clone(), shutdown.clone()));
        for _ in 0..40 {
            job.add_counts(1.0, 0.0).unwrap();
        }
        run_for(Duration::from_millis(150)).await;
        assert_eq!(
            store.job(job.id()).unwrap().get("good"),
            Some(&Bson::Int32(40))
        );
        for _ in 0..5 {
            job.add_counts(1.0, 0.0).unwrap();
        }
        run_for(Duration::from_secs(1)).await;
        assert_eq!(
            store.job(job.id()).unwrap().get("good"),
            Some(&Bson::Int32(40)),
            "five items wait for the watcher's tick"
        );
        assert_eq!(store.calls("write_counts"), 1);
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn one_jobs_failing_writes_hold_up_no_other() {
        let store = MemoryStore::default();
        let (ctx, events) = context(&store, "w1", EngineOptions::default());
        let (failing, fine) = (start(&ctx, false).await, start(&ctx, false).await);
        store.set_job_failing(failing.id(), true);
        let shutdown = CancellationToken::new();
        tokio::spawn(run(ctx.clone(), shutdown.clone()));
        tokio::spawn(watcher::run(ctx.clone(), shutdown.clone()));
        for job in [&failing, &fine] {
            job.add_counts(40.0, 0.0).unwrap();
        }
        run_for(Duration::from_millis(150)).await;
        assert_eq!(
            store.job(fine.id()).unwrap().get("good"),
            Some(&Bson::Int32(40))
        );
        assert_eq!(
            store.job(failing.id()).unwrap().get("good"),
            Some(&Bson::Int32(0))
        );
        assert_eq!(
            events.logged("are kept and written once MongoDB answers"),
            1,
            "said once"
        );
        store.set_job_failing(failing.id(), false);
        failing.add_counts(40.0, 0.0).unwrap();
        run_for(Duration::from_millis(300)).await;
        assert_eq!(
            store.job(failing.id()).unwrap().get("good"),
            Some(&Bson::Int32(80)),
            "kept counts go out whole with the next tick once the job's writes land again"
        );
        let recovered = format!("the counts of job {} are written again", failing.id());
        assert_eq!(events.logged(&recovered), 1);
        shutdown.cancel();
    }
}
