//! A job's final write: its last counts and its ending in one fenced update, so the counts
//! are exact the moment `ended` is true and nothing changes the job after that. Retried while
//! MongoDB cannot be reached (within `finishRetryWindow`), and retried with `results: null`
//! when the document would pass MongoDB's size limit.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::TaskContext;
use crate::error::{ErrorKind, Result};
use crate::events::LogLevel;
use crate::job::Ending;
use crate::results::RawValue;
use crate::state::LiveJob;
use crate::store::Fenced;

/// What became of a job's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOutcome {
    /// The ending is in the job document.
    Written,
    /// This process was done with the job already (ended it, or lost it): nothing written.
    AlreadyGone,
    /// Another process had ended the job: nothing written (the loss was reported).
    Lost,
}

/// Ends `job` this way, with `results` (raw BSON) for an ending that has them.
pub async fn end_job(
    ctx: &TaskContext,
    job: &Arc<LiveJob>,
    ending: Ending,
    mut results: Option<RawValue>,
) -> Result<EndOutcome> {
    let Some(counts) = ctx.jobs.begin_end(job) else {
        return Ok(EndOutcome::AlreadyGone);
    };
    let id = job.id();
    let mut set = counts.set_fields();
    set.extend(ending.set_fields());
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    let mut retried = false;
    loop {
        let written = ctx
            .store
            .end(
                id,
                ctx.jobs.worker_id(),
                set.clone(),
                results.as_ref().map(RawValue::value),
            )
            .await;
        let error = match written {
            Ok(Fenced::Applied(())) => {
                ctx.jobs.end_done(job);
                return Ok(EndOutcome::Written);
            }
            Ok(Fenced::Refused) => {
                // A retry after a lost reply finds its own first attempt.
                if retried
                    && matches!(ctx.store.find(id).await, Ok(Some(document)) if ending.is_recorded_in(&document))
                {
                    ctx.jobs.end_done(job);
                    return Ok(EndOutcome::Written);
                }
                if ctx.jobs.lose(job) {
                    ctx.report_lost(id);
                }
                return Ok(EndOutcome::Lost);
            }
            Err(error) => error,
        };
        if results.is_some() && error.is_document_too_large() {
            ctx.log(
                LogLevel::Error,
                format!("apostrophe-jobs: the results of job {id} are too large to store (MongoDB's 16 MB document limit); the job ends without them ({error})"),
            );
            results = None;
            continue;
        }
        if error.is_transient() && started.elapsed() < ctx.jobs.timings().finish_retry_window {
            if !retried {
                ctx.log(
                    LogLevel::Error,
                    format!("{error}; the end of job {id} is retried until MongoDB answers"),
                );
            }
            retried = true;
            sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            continue;
        }
        // Given up: no heartbeat keeps the job any more, so another process ends it as
        // interrupted once the bound has passed.
        ctx.jobs.end_done(job);
        let fate = if ctx.jobs.timings().orphan_after.is_some() {
            "another process ends it as failed (interrupted) once its heartbeat is older than orphanAfter"
        } else {
            "it stays running in the database (heartbeats are off, so no process will end it)"
        };
        return Err(ErrorKind::EndNotWritten {
            id: id.to_owned(),
            fate,
            source: error,
        }
        .into());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mongodb::bson::{doc, Bson};
    use tokio_util::sync::CancellationToken;

    use super::{end_job, EndOutcome};
    use crate::job::Ending;
    use crate::options::EngineOptions;
    use crate::state::Phase;
    use crate::store::memory::MemoryStore;
    use crate::tasks::testing::{context, run_for, start};
    use crate::tasks::writer;

    #[tokio::test(start_paused = true)]
    async fn an_end_retried_through_an_outage_of_its_job_holds_up_no_other_job() {
        let store = MemoryStore::default();
        let (ctx, events) = context(&store, "w1", EngineOptions::default());
        let (ending, busy) = (start(&ctx, true).await, start(&ctx, true).await);
        ending.add_counts(3.0, 0.0).unwrap();
        store.set_job_failing(ending.id(), true);
        let shutdown = CancellationToken::new();
        tokio::spawn(writer::run(ctx.clone(), shutdown.clone()));
        let end = tokio::spawn({
            let (ctx, ending) = (ctx.clone(), ending.clone());
            async move { end_job(&ctx, &ending, Ending::end(true), None).await }
        });
        for second in 1..=20 {
            busy.add_counts(40.0, 0.0).unwrap();
            run_for(Duration::from_secs(1)).await;
            assert_eq!(
                store.job(busy.id()).unwrap().get_i32("good"),
                Ok(40 * second),
                "the other job's counts go out at the usual pace"
            );
        }
        assert!(!end.is_finished());
        store.set_job_failing(ending.id(), false);
        assert_eq!(end.await.unwrap().unwrap(), EndOutcome::Written);
        let ended = store.job(ending.id()).unwrap();
        assert_eq!(ended.get_str("status"), Ok("completed"));
        assert_eq!(ended.get_i32("good"), Ok(3));
        assert_eq!(events.logged("is retried until MongoDB answers"), 1);
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn an_end_refused_by_the_fence_loses_the_job_and_writes_nothing() {
        let store = MemoryStore::default();
        let (ctx, events) = context(&store, "w1", EngineOptions::default());
        let job = start(&ctx, true).await;
        job.add_counts(5.0, 0.0).unwrap();
        store.change(
            job.id(),
            doc! { "ended": true, "status": "failed", "interrupted": true },
        );
        let outcome = end_job(&ctx, &job, Ending::end(true), None).await.unwrap();
        assert_eq!(outcome, EndOutcome::Lost);
        let swept = store.job(job.id()).unwrap();
        assert_eq!(
            swept.get_str("status"),
            Ok("failed"),
            "never completed and interrupted"
        );
        assert_eq!(swept.get_i32("good"), Ok(0));
        assert_eq!(events.logged("is no longer this process's"), 1);
        assert_eq!(
            end_job(&ctx, &job, Ending::end(true), None).await.unwrap(),
            EndOutcome::AlreadyGone
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_a_lost_reply_recognises_its_own_ending() {
        let store = MemoryStore::default();
        let (ctx, events) = context(&store, "w1", EngineOptions::default());
        let job = start(&ctx, true).await;
        store.lose_next_end_reply();
        let outcome = end_job(&ctx, &job, Ending::end(true), None).await.unwrap();
        assert_eq!(outcome, EndOutcome::Written);
        assert_eq!(
            store.job(job.id()).unwrap().get_str("status"),
            Ok("completed")
        );
        assert_eq!(events.logged("is no longer this process's"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_end_given_up_after_the_window_leaves_the_job_to_another_process() {
        let store = MemoryStore::default();
        let options = EngineOptions {
            finish_retry_window: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        let (ctx, _) = context(&store, "w1", options);
        let job = start(&ctx, true).await;
        store.set_down(true);
        let message = end_job(&ctx, &job, Ending::end(true), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(message.contains("could not be written"), "{message}");
        assert!(message.contains("another process ends it"), "{message}");
        assert_eq!(job.phase(), Phase::Gone, "no heartbeat keeps it any more");
        store.set_down(false);
        assert_eq!(store.job(job.id()).unwrap().get("results"), None::<&Bson>);
    }
}
