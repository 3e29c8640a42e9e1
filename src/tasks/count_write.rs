//! One write of a job's counts, shared by the writer and the watcher: fenced, with the
//! heartbeat, reading `canceling` back when it is the job's stop check, and recorded in the
//! job's state whatever its outcome.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::TaskContext;
use crate::events::LogLevel;
use crate::state::{AfterWrite, LiveJob, WriteOutcome};
use crate::store::Fenced;

/// A write that has not answered in this long is counted as failed (its counts are written
/// again, whole, so a late landing does no harm), so one stuck job never stops its own writes
/// for good.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes a job's pending counts, unless a write of it is in flight or nothing is pending.
pub async fn write_counts(ctx: TaskContext, job: Arc<LiveJob>) {
    let Some((counts, read_canceling)) = job.begin_write() else {
        return;
    };
    let heartbeat = ctx.jobs.timings().orphan_after.is_some();
    let sent_at = Instant::now();
    let written = tokio::time::timeout(
        WRITE_TIMEOUT,
        ctx.store.write_counts(
            job.id(),
            ctx.jobs.worker_id(),
            counts.set_fields(),
            heartbeat,
            read_canceling,
        ),
    )
    .await;
    let (outcome, restore) = match written {
        Ok(Ok(Fenced::Applied(canceling))) => {
            ctx.health.answered();
            if job.note_write_reached(true) {
                ctx.log(
                    LogLevel::Warn,
                    format!(
                        "apostrophe-jobs: the counts of job {} are written again",
                        job.id()
                    ),
                );
            }
            (WriteOutcome::Applied { canceling }, None)
        }
        Ok(Ok(Fenced::Refused)) => (WriteOutcome::Refused, None),
        Ok(Err(error)) if error.is_transient() => {
            ctx.health.failed();
            if job.note_write_reached(false) {
                ctx.log(
                    LogLevel::Error,
                    format!(
                        "{error}; the counts of job {} are kept and written once MongoDB answers again",
                        job.id()
                    ),
                );
            }
            (WriteOutcome::Failed, Some(counts))
        }
        Err(_) => {
            ctx.health.failed();
            (WriteOutcome::Failed, Some(counts))
        }
        Ok(Err(error)) => {
            // Refused for what it holds (a total MongoDB cannot store, say): written again it
            // would fail again. The counts themselves are absolute and go out with the next
            // write.
            ctx.log(
                LogLevel::Error,
                format!(
                    "{error}; the total and failed items of job {} reported since its last write are dropped",
                    job.id()
                ),
            );
            (WriteOutcome::Failed, None)
        }
    };
    if ctx.jobs.write_landed(&job, restore, sent_at, outcome) == AfterWrite::Lost {
        ctx.report_lost(job.id());
    }
}

/// Writes the counts reported for jobs of other processes.
pub async fn write_deltas(ctx: TaskContext) {
    for (id, delta) in ctx.jobs.take_deltas() {
        match ctx.store.add_to_job(&id, delta.update()).await {
            Ok(true) => {}
            Ok(false) => ctx.log(
                LogLevel::Warn,
                format!("apostrophe-jobs: counts were reported for job {id}, which has ended or does not exist; they are ignored"),
            ),
            Err(error) if error.is_transient() => ctx.jobs.restore_delta(id, delta),
            Err(error) => ctx.log(
                LogLevel::Error,
                format!("{error}; counts reported for job {id} are lost"),
            ),
        }
    }
}
