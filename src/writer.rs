//! The writer: the one task that writes counts and final states, so a job's counts can never
//! land after the update that ends it (the 2.x race, where the modal could stop at 99/100).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use mongodb::bson::{doc, DateTime, Document};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, sleep_until, Instant};

use crate::engine::{LogLevel, Shared};
use crate::error::Result;
use crate::results::RawValue;
use crate::store::is_transient;

/// How long to wait before writing counts again after MongoDB could not be reached.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// When counts have waited a flush interval (100 ms), they go out then only if at least this
/// many items (or a `total`) wait with them: at most one such write per 32 items (0.03 per
/// item), while items take under ~3 ms. Otherwise they go out with the watcher's next tick
/// (every 250 ms), where the write doubles as the job's stop check, so slower items cost 4
/// writes per second, the floor while stops are checked every 250 ms. The `progress` route of
/// the process running a job adds what is not written yet.
pub(crate) const EARLY_FLUSH_ITEMS: f64 = 32.0;

/// A request to the writer.
pub(crate) enum Command {
    /// Write a job's last counts with these `$set` fields (end or halt).
    Finish {
        id: String,
        fields: Document,
        /// The job's `results`, written in place of the `results: null` of `fields`; dropped
        /// (left `null`) when the document would grow too large.
        results: Option<RawValue>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// The watcher's tick: write everything pending now (reading `canceling` back for
    /// stoppable jobs), then reply, so the watcher only queries the jobs left unchecked.
    Tick { reply: oneshot::Sender<()> },
    /// Write everything pending and stop.
    Close { reply: oneshot::Sender<()> },
}

pub(crate) async fn run(shared: Arc<Shared>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut next_flush: Option<Instant> = None;
    let mut last_flush = Instant::now() - shared.timings.flush_interval;
    let mut outage = false;
    loop {
        let far_future = Instant::now() + Duration::from_secs(86_400);
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(Command::Finish { id, fields, results, reply }) => {
                    let _ = reply.send(finish(&shared, &id, fields, results).await);
                }
                Some(Command::Tick { reply }) => {
                    if !outage || next_flush.is_none_or(|at| at <= Instant::now()) {
                        last_flush = Instant::now();
                        next_flush = None;
                        if !flush_all(&shared, &mut outage).await {
                            next_flush = Some(Instant::now() + RETRY_DELAY);
                        }
                    }
                    let _ = reply.send(());
                }
                Some(Command::Close { reply }) => {
                    flush_all(&shared, &mut outage).await;
                    let _ = reply.send(());
                    return;
                }
                None => {
                    flush_all(&shared, &mut outage).await;
                    return;
                }
            },
            _ = shared.flush_wanted.notified(), if next_flush.is_none() => {
                next_flush = Some(Instant::now().max(last_flush + shared.timings.flush_interval));
            }
            _ = sleep_until(next_flush.unwrap_or(far_future)), if next_flush.is_some() => {
                next_flush = None;
                if !outage && !shared.counters().wants_early_flush() {
                    // Slow items: left for the next tick.
                    continue;
                }
                last_flush = Instant::now();
                if !flush_all(&shared, &mut outage).await {
                    next_flush = Some(Instant::now() + RETRY_DELAY);
                }
            }
        }
    }
}

/// Writes every job's pending counts, one update per job, concurrently. A stoppable job of
/// this process has its `canceling` read back by the same command (a stop check), and every
/// job of this process its heartbeat refreshed. What cannot be written goes back into the
/// book for the next try. Returns whether everything was written.
async fn flush_all(shared: &Shared, outage: &mut bool) -> bool {
    let pending = shared.counters().take_dirty();
    if pending.is_empty() {
        return true;
    }
    let heartbeat = shared.timings.orphan_after.is_some();
    let writes = pending.into_iter().map(|(id, change)| async move {
        let stoppable = shared
            .live()
            .get(&id)
            .is_some_and(|job| job.kind.is_some() && !job.halting);
        let extra =
            (heartbeat && change.is_owned()).then(|| doc! { "heartbeatAt": DateTime::now() });
        let update = change.clone().into_update(extra)?;
        let written_at = Instant::now();
        let written = if stoppable {
            shared.store.update_reading_canceling(&id, update).await
        } else {
            shared.store.update(&id, update).await.map(|_| false)
        };
        match written {
            Ok(stop_requested) => {
                if let Some(job) = shared.live().get_mut(&id) {
                    job.written_at = written_at;
                    if stoppable {
                        job.checked_at = written_at;
                    }
                }
                if stop_requested {
                    shared.stops_seen().push(id);
                    shared.stop_seen.notify_one();
                }
                None
            }
            Err(error) => Some((id, change, error)),
        }
    });
    let mut all_written = true;
    for (id, change, error) in join_all(writes).await.into_iter().flatten() {
        if is_transient(&error) {
            all_written = false;
            if !*outage {
                shared.events.log(
                    LogLevel::Error,
                    format!("{error}; job counts are kept and written once MongoDB answers again"),
                );
            }
            shared.counters().restore(&id, change);
        } else {
            shared.events.log(
                LogLevel::Error,
                format!("{error}; the counts of job {id} since its last write are lost"),
            );
        }
    }
    if *outage && all_written {
        shared.events.log(
            LogLevel::Warn,
            "apostrophe-jobs: MongoDB answers again; pending job counts were written".to_owned(),
        );
    }
    *outage = !all_written;
    all_written
}

/// The final write of a job: its pending counts and the ending fields in one update, retried
/// while MongoDB cannot be reached (within the retry window), and retried with
/// `results: null` when the document would pass the size limit.
async fn finish(
    shared: &Shared,
    id: &str,
    fields: Document,
    mut results: Option<RawValue>,
) -> Result<()> {
    let pending = shared.counters().finish(id);
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    let mut reported = false;
    loop {
        // Small: counts and status fields; the results stay raw bytes, never cloned.
        let update = pending
            .clone()
            .into_update(Some(fields.clone()))
            .expect("the ending fields are never empty");
        let written = match &results {
            Some(results) => {
                shared
                    .store
                    .update_with_raw_field(id, update, "results", results.value())
                    .await
            }
            None => shared.store.update(id, update).await,
        };
        let error = match written {
            Ok(_) => {
                shared.counters().forget(id);
                return Ok(());
            }
            Err(error) => error,
        };
        if results.is_some() && error.is_document_too_large() {
            shared.events.log(
                LogLevel::Error,
                format!("apostrophe-jobs: the results of job {id} are too large to store (MongoDB's 16 MB document limit); the job ends without them ({error})"),
            );
            results = None;
            continue;
        }
        if is_transient(&error) && started.elapsed() < shared.timings.finish_retry_window {
            if !reported {
                shared.events.log(
                    LogLevel::Error,
                    format!("{error}; the end of job {id} is retried until MongoDB answers"),
                );
                reported = true;
            }
            sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            continue;
        }
        // Keep the counts for the flusher: they are still true even if the ending is not.
        shared.counters().restore(id, pending);
        shared.flush_wanted.notify_one();
        return Err(error);
    }
}
