//! The live jobs of this process, and every rule about them: who may write a job, when it is
//! halting, ending or lost, whether a new item may start, which counts wait to be written, and
//! which stop checks and heartbeats are due. The tasks and the engine act on jobs only through
//! these methods, so they cannot disagree about a job.
//!
//! A job moves through [`Phase`]s: `Running` → (`Halting`, once its stop hook was called) →
//! `Ending` (its final write is under way) → gone. It can also be *lost* from any phase but
//! `Ending`: a fenced write found that another process ended it (it judged this process dead,
//! e.g. while it was frozen). A lost job takes no new item and is never written again.
//!
//! Locks: std mutexes around small maps and a few fields, held for a few instructions and
//! never across an `.await`; a poisoned one only means a panic elsewhere, and the data stays
//! consistent, so it is used as is.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mongodb::bson::{Bson, Document};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::counters::{Counts, CountsWrite, Delta, Deltas};
use crate::job::HaltKind;
use crate::options::Timings;
use crate::results::{results_budget, Gathered, GatheredResults};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a live job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Taking items, reporting counts.
    Running,
    /// Its stop/cancel hook was called at `since`; it takes no new item.
    Halting {
        /// When the hook was called.
        since: Instant,
    },
    /// Its final write is under way: its counts are final.
    Ending,
    /// Done with: ended, lost or given up. No write of this process touches it again.
    Gone,
}

/// Why a batch takes no new item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoNewItems {
    /// The user asked for a stop (or cancel) and the hook was called.
    Stop,
    /// The process drains before it exits.
    Drain,
    /// The job ended or was lost: there is nothing left to report to.
    Gone,
}

/// What became of a count write.
#[derive(Debug)]
pub enum WriteOutcome {
    /// It applied; `canceling` as read back (false when not read).
    Applied {
        /// The job's `canceling`, if the write read it.
        canceling: bool,
    },
    /// The fence refused it: the job is not this process's any more, or has ended.
    Refused,
    /// It did not reach the database; the counts are kept for the next write.
    Failed,
}

/// What a count write that landed means for the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterWrite {
    /// Nothing to do.
    Nothing,
    /// A stop was requested: the watcher checks the job now.
    StopSeen,
    /// The job was lost just now (first time): say so once.
    Lost,
}

/// Why a count report was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The job is ending or ended; `first` is true the first time, to warn once.
    Ended {
        /// Whether this is the first ignored report for the job.
        first: bool,
    },
}

/// A job running in this process.
#[derive(Debug)]
pub struct LiveJob {
    id: String,
    kind: Option<HaltKind>,
    /// How long a confirmed write keeps the job this process's own; `None` without heartbeats.
    lease: Option<Duration>,
    epoch: Instant,
    counts: Mutex<Counts>,
    results: Mutex<GatheredResults>,
    life: Mutex<Life>,
    /// Cancelled when no new item may start (stop, drain, end, loss).
    no_new_items: CancellationToken,
    /// Cancelled when the job is gone from this process (ended, lost).
    gone: CancellationToken,
    /// Milliseconds since `epoch` at which the last confirmed write of the job was sent.
    confirmed_ms: AtomicU64,
    lease_changed: Notify,
    in_batch: AtomicBool,
    draining: AtomicBool,
    /// The writer's wake-up, shared by all jobs.
    write_wanted: Arc<Notify>,
    /// The heartbeat task's wake-up, shared by all jobs.
    confirmation_wanted: Arc<Notify>,
}

#[derive(Debug)]
struct Life {
    phase: Phase,
    /// When `canceling` was last read (by the watcher, or by a count write).
    checked_at: Instant,
    /// When the document was last written (counts or heartbeat).
    written_at: Instant,
    write_in_flight: bool,
    /// Its count writes fail (reported once, until one lands again).
    writes_failing: bool,
}

impl LiveJob {
    /// The job id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The hook a stop request is answered with; `None` for a job that cannot be stopped.
    pub fn kind(&self) -> Option<HaltKind> {
        self.kind
    }

    fn life(&self) -> MutexGuard<'_, Life> {
        lock(&self.life)
    }

    /// Where the job is in its life.
    pub fn phase(&self) -> Phase {
        self.life().phase
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Adds to the job's counts. `Err` when the job is ending or gone: its counts are final.
    pub fn add_counts(&self, good: f64, bad: f64) -> Result<(), Ignored> {
        self.changing_counts(|counts| counts.add(good, bad))
    }

    /// Records a `setTotal`.
    pub fn set_total(&self, total: Bson) -> Result<(), Ignored> {
        self.changing_counts(|counts| counts.set_total(total))
    }

    /// One finished item of the job's batch, at `index`: counted when `count`, and marked in
    /// the item ledger when the batch tracks its items. `Ok(true)` when the index is out of
    /// the batch's range for the first time (warn once); `Err` when the job is ending or gone.
    pub fn finish_item(&self, index: usize, good: bool, count: bool) -> Result<bool, Ignored> {
        let mut warn_out_of_range = false;
        self.changing_counts(|counts| {
            let report = counts.finish_item(index, good, count);
            warn_out_of_range = report.warn_out_of_range;
            report.was_clean
        })?;
        Ok(warn_out_of_range)
    }

    /// Starts tracking which of the batch's `total` items finish and fail (a new ledger),
    /// and lowers the results budget by the room the bitmaps take in the document.
    pub fn track_items(&self, total: usize) {
        let reserved = crate::ledger::stored_size(total);
        let previous = {
            let mut counts = lock(&self.counts);
            let previous = counts.ledger().map(|ledger| ledger.stored_size());
            counts.track_items(total);
            previous
        };
        // A second batch of the job replaces the first one's ledger.
        let mut results = lock(&self.results);
        if let Some(previous) = previous {
            results.release(previous);
        }
        results.reserve(reserved);
    }

    /// How many bytes the job's `results` may take in its document.
    pub fn results_budget(&self) -> usize {
        lock(&self.results).budget()
    }

    /// Keeps a failed item in the job's `failedItems`, up to the configured number.
    pub fn add_failed_item(&self, item: Document) -> Result<(), Ignored> {
        self.changing_counts(|counts| counts.add_failed_item(item))
    }

    // The one lock of an item's report (it runs once per item, on the JavaScript thread).
    fn changing_counts(&self, change: impl FnOnce(&mut Counts) -> bool) -> Result<(), Ignored> {
        let mut counts = lock(&self.counts);
        if let Some(first) = counts.refuse_when_final() {
            return Err(Ignored::Ended { first });
        }
        // The writer is woken by the first change after a write (and by a total); it writes
        // early only if enough waits by then, else the change goes with the next tick.
        if change(&mut counts) {
            drop(counts);
            self.write_wanted.notify_one();
        }
        Ok(())
    }

    /// Appends a range of results (a BSON document `{ id: result, … }`).
    pub fn add_results(&self, chunk: &[u8]) -> Result<(), String> {
        if matches!(self.phase(), Phase::Ending | Phase::Gone) {
            return Err("the job has ended".to_owned());
        }
        lock(&self.results).append(chunk)
    }

    /// Takes the results gathered so far.
    pub fn take_results(&self) -> Gathered {
        lock(&self.results).take()
    }

    /// Whether a new item may start: no stop, drain or end, and the job is surely still this
    /// process's (its lease holds).
    pub fn may_start_item(&self) -> bool {
        !self.no_new_items.is_cancelled() && self.lease_holds(Instant::now())
    }

    /// Why no new item may start, if so.
    pub fn no_new_items(&self) -> Option<NoNewItems> {
        if !self.no_new_items.is_cancelled() {
            return None;
        }
        Some(match self.phase() {
            Phase::Ending | Phase::Gone => NoNewItems::Gone,
            Phase::Halting { .. } => NoNewItems::Stop,
            Phase::Running if self.draining.load(Ordering::SeqCst) => NoNewItems::Drain,
            // A stop hook about to be called: the watcher cancels before it calls.
            Phase::Running => NoNewItems::Stop,
        })
    }

    /// Resolves once no new item may start.
    pub async fn until_no_new_items(&self) {
        self.no_new_items.cancelled().await
    }

    /// Resolves once the job is gone from this process.
    pub async fn until_gone(&self) {
        self.gone.cancelled().await
    }

    fn lease_holds(&self, now: Instant) -> bool {
        match self.lease {
            None => true,
            Some(lease) => {
                self.millis(now)
                    < self.confirmed_ms.load(Ordering::Acquire) + lease.as_millis() as u64
            }
        }
    }

    /// Resolves once the lease holds again (a heartbeat, asked for now and every second,
    /// confirmed the job) or no new item may start anyway.
    pub async fn lease_confirmed(&self) {
        loop {
            let changed = self.lease_changed.notified();
            if self.lease_holds(Instant::now()) || self.no_new_items.is_cancelled() {
                return;
            }
            self.confirmation_wanted.notify_one();
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.no_new_items.cancelled() => return,
            }
        }
    }

    /// A write of the job that was sent at `sent_at` applied: the job was this process's then.
    fn confirm(&self, sent_at: Instant) {
        self.confirmed_ms
            .fetch_max(self.millis(sent_at), Ordering::AcqRel);
        self.life().written_at = sent_at;
        self.lease_changed.notify_waiters();
    }

    /// Marks that a batch loop runs the job's items (the batch loop then enforces the stop
    /// grace itself).
    pub fn set_in_batch(&self, in_batch: bool) {
        self.in_batch.store(in_batch, Ordering::SeqCst);
    }

    /// Starts a halt: the job takes no new item, and its hook is to be called. `None` if it
    /// cannot be stopped, or is halting, ending or gone already.
    pub fn begin_halt(&self) -> Option<HaltKind> {
        let kind = self.kind?;
        let mut life = self.life();
        if life.phase != Phase::Running {
            return None;
        }
        life.phase = Phase::Halting {
            since: Instant::now(),
        };
        drop(life);
        self.no_new_items.cancel();
        Some(kind)
    }

    /// Takes the counts to write now, if any and if no write of the job is in flight. Returns
    /// them with whether the write should read `canceling` back (a stop check).
    pub fn begin_write(&self) -> Option<(CountsWrite, bool)> {
        let mut life = self.life();
        if life.write_in_flight || !matches!(life.phase, Phase::Running | Phase::Halting { .. }) {
            return None;
        }
        let write = lock(&self.counts).take()?;
        life.write_in_flight = true;
        Some((write, self.kind.is_some() && life.phase == Phase::Running))
    }

    /// Records whether a count write of the job reached the database. Returns true when that
    /// changes (the first failure, or the first success after failures), to report it once.
    pub fn note_write_reached(&self, reached: bool) -> bool {
        let mut life = self.life();
        let changed = life.writes_failing == reached;
        life.writes_failing = !reached;
        changed
    }

    /// Whether the job has counts to write (or one write in flight).
    fn has_write_due(&self) -> bool {
        self.life().write_in_flight || lock(&self.counts).is_dirty()
    }

    fn wants_early_write(&self) -> bool {
        lock(&self.counts).wants_early_write()
    }
}

/// Jobs this process is done with, so late reports for them are recognised and ignored
/// (rather than taken for another process's job), and a `progress` read that raced with a
/// job's end still shows its last counts. Bounded: the oldest are forgotten.
#[derive(Debug, Default)]
struct GoneJobs {
    order: VecDeque<String>,
    jobs: HashMap<String, GoneJob>,
}

#[derive(Debug)]
struct GoneJob {
    /// Its counts (good, bad) when it was done with.
    totals: (f64, f64),
    /// Whether a late report was warned about already.
    warned: bool,
}

const REMEMBERED_GONE_JOBS: usize = 10_000;

impl GoneJobs {
    fn add(&mut self, id: String, totals: (f64, f64)) {
        let gone = GoneJob {
            totals,
            warned: false,
        };
        if self.jobs.insert(id.clone(), gone).is_none() {
            self.order.push_back(id);
            if self.order.len() > REMEMBERED_GONE_JOBS {
                if let Some(oldest) = self.order.pop_front() {
                    self.jobs.remove(&oldest);
                }
            }
        }
    }
}

/// What the watcher does at a tick.
#[derive(Debug, Default)]
pub struct TickPlan {
    /// Jobs whose counts are written now; for a stoppable running job, the write reads
    /// `canceling` back and is its stop check.
    pub writes: Vec<Arc<LiveJob>>,
    /// Stoppable running jobs with nothing to write, whose `canceling` is queried.
    pub queries: Vec<String>,
}

/// The live jobs of this process.
#[derive(Debug)]
pub struct LiveJobs {
    jobs: Mutex<HashMap<String, Arc<LiveJob>>>,
    gone: Mutex<GoneJobs>,
    deltas: Mutex<Deltas>,
    stops_seen: Mutex<Vec<String>>,
    /// Wakes the watcher: a count write saw a stop request.
    pub stops_to_check: Notify,
    /// Wakes the writer: a job has counts worth writing before the tick.
    pub write_wanted: Arc<Notify>,
    /// Wakes the heartbeat task: a batch waits for its job's lease to be confirmed.
    pub confirmation_wanted: Arc<Notify>,
    worker_id: String,
    timings: Timings,
    epoch: Instant,
    draining: AtomicBool,
}

impl LiveJobs {
    /// The live jobs of the process `worker_id` (its owner id in job documents).
    pub fn new(worker_id: String, timings: Timings) -> Self {
        LiveJobs {
            jobs: Mutex::new(HashMap::new()),
            gone: Mutex::new(GoneJobs::default()),
            deltas: Mutex::new(Deltas::default()),
            stops_seen: Mutex::new(Vec::new()),
            stops_to_check: Notify::new(),
            write_wanted: Arc::new(Notify::new()),
            confirmation_wanted: Arc::new(Notify::new()),
            worker_id,
            timings,
            epoch: Instant::now(),
            draining: AtomicBool::new(false),
        }
    }

    /// This process's owner id (`workerId`).
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The timings the tasks follow.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Registers a job whose insert was sent at `sent_at` and applied; its labels and extra
    /// fields take `reserved` bytes of its document (less room for its results).
    pub fn register(
        &self,
        id: String,
        kind: Option<HaltKind>,
        sent_at: Instant,
        reserved: usize,
    ) -> Arc<LiveJob> {
        let job = Arc::new(LiveJob {
            id: id.clone(),
            kind,
            lease: self.timings.lease(),
            epoch: self.epoch,
            counts: Mutex::new(Counts::new(self.timings.keep_failed_items)),
            results: Mutex::new(GatheredResults::with_budget(results_budget(reserved))),
            life: Mutex::new(Life {
                phase: Phase::Running,
                checked_at: sent_at,
                written_at: sent_at,
                write_in_flight: false,
                writes_failing: false,
            }),
            no_new_items: CancellationToken::new(),
            gone: CancellationToken::new(),
            confirmed_ms: AtomicU64::new(
                sent_at.saturating_duration_since(self.epoch).as_millis() as u64
            ),
            lease_changed: Notify::new(),
            in_batch: AtomicBool::new(false),
            draining: AtomicBool::new(self.is_draining()),
            write_wanted: self.write_wanted.clone(),
            confirmation_wanted: self.confirmation_wanted.clone(),
        });
        if self.is_draining() {
            job.no_new_items.cancel();
        }
        lock(&self.jobs).insert(id, job.clone());
        job
    }

    /// A live job of this process.
    pub fn get(&self, id: &str) -> Option<Arc<LiveJob>> {
        lock(&self.jobs).get(id).cloned()
    }

    /// Whether no job of this process is live.
    pub fn is_empty(&self) -> bool {
        lock(&self.jobs).is_empty()
    }

    fn all(&self) -> Vec<Arc<LiveJob>> {
        lock(&self.jobs).values().cloned().collect()
    }

    fn late_for_gone_job(&self, id: &str) -> Option<Ignored> {
        let mut gone = lock(&self.gone);
        let job = gone.jobs.get_mut(id)?;
        let first = !job.warned;
        job.warned = true;
        Some(Ignored::Ended { first })
    }

    /// The counts (good, bad) of a job of this process, written or not: while it runs, and
    /// for a while after it ended (a reader may have read the document just before the end
    /// landed). `None` for a job of another process.
    pub fn counts(&self, id: &str) -> Option<(f64, f64)> {
        match self.get(id) {
            Some(job) => Some(lock(&job.counts).totals()),
            None => lock(&self.gone).jobs.get(id).map(|job| job.totals),
        }
    }

    /// Counts for a job that is not live here: another process's, written as `$inc`s, unless
    /// this process was done with it (then they are late, and ignored).
    pub fn add_foreign_counts(&self, id: &str, good: f64, bad: f64) -> Result<(), Ignored> {
        if let Some(ignored) = self.late_for_gone_job(id) {
            return Err(ignored);
        }
        if lock(&self.deltas).add(id, good, bad) {
            self.write_wanted.notify_one();
        }
        Ok(())
    }

    /// A total for a job that is not live here; see [`LiveJobs::add_foreign_counts`].
    pub fn set_foreign_total(&self, id: &str, total: Bson) -> Result<(), Ignored> {
        if let Some(ignored) = self.late_for_gone_job(id) {
            return Err(ignored);
        }
        if lock(&self.deltas).set_total(id, total) {
            self.write_wanted.notify_one();
        }
        Ok(())
    }

    /// Whether counts wait for jobs of other processes.
    pub fn has_deltas(&self) -> bool {
        !lock(&self.deltas).is_empty()
    }

    /// Takes the counts waiting for jobs of other processes.
    pub fn take_deltas(&self) -> Vec<(String, Delta)> {
        lock(&self.deltas).take()
    }

    /// Puts back a delta that could not be written.
    pub fn restore_delta(&self, id: String, delta: Delta) {
        lock(&self.deltas).restore(id, delta);
    }

    /// Jobs whose counts are worth writing before the tick, and whether other processes'
    /// counts wait.
    pub fn early_writes(&self) -> (Vec<Arc<LiveJob>>, bool) {
        let jobs = self
            .all()
            .into_iter()
            .filter(|job| job.wants_early_write())
            .collect();
        (jobs, self.has_deltas())
    }

    /// The watcher's tick: every job with counts to write gets a write (a stop check too, for
    /// a stoppable running job); the stoppable running jobs with nothing to write are queried.
    /// A job whose write is still in flight is checked by that write.
    pub fn tick_plan(&self) -> TickPlan {
        let mut plan = TickPlan::default();
        for job in self.all() {
            if job.has_write_due() {
                plan.writes.push(job);
            } else if job.kind.is_some() && job.phase() == Phase::Running {
                plan.queries.push(job.id.clone());
            }
        }
        plan
    }

    /// Records what became of a count write sent at `sent_at`.
    pub fn write_landed(
        &self,
        job: &LiveJob,
        failed: Option<CountsWrite>,
        sent_at: Instant,
        outcome: WriteOutcome,
    ) -> AfterWrite {
        let phase = {
            let mut life = job.life();
            life.write_in_flight = false;
            life.phase
        };
        match outcome {
            WriteOutcome::Applied { canceling } => {
                job.confirm(sent_at);
                let mut life = job.life();
                if job.kind.is_some() {
                    life.checked_at = life.checked_at.max(sent_at);
                }
                if canceling && life.phase == Phase::Running {
                    drop(life);
                    lock(&self.stops_seen).push(job.id.clone());
                    self.stops_to_check.notify_one();
                    return AfterWrite::StopSeen;
                }
                AfterWrite::Nothing
            }
            WriteOutcome::Failed => {
                if let Some(failed) = failed {
                    lock(&job.counts).restore(failed);
                }
                AfterWrite::Nothing
            }
            // Refused after the job's own final write began: that write landed first.
            WriteOutcome::Refused if matches!(phase, Phase::Ending | Phase::Gone) => {
                AfterWrite::Nothing
            }
            WriteOutcome::Refused => {
                if self.lose(job) {
                    AfterWrite::Lost
                } else {
                    AfterWrite::Nothing
                }
            }
        }
    }

    /// Takes the jobs a count write found asked to stop.
    pub fn take_stops_seen(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.stops_seen))
    }

    /// Records a stop check by the watcher's query, sent at `sent_at`.
    pub fn checked(&self, ids: &[String], sent_at: Instant) {
        for id in ids {
            if let Some(job) = self.get(id) {
                let mut life = job.life();
                life.checked_at = life.checked_at.max(sent_at);
            }
        }
    }

    /// Jobs whose heartbeat is due: not written for half a heartbeat period, or waiting for
    /// their lease to be confirmed.
    pub fn heartbeats_due(&self, now: Instant) -> Vec<Arc<LiveJob>> {
        let Some(every) = self.timings.heartbeat_every() else {
            return Vec::new();
        };
        self.all()
            .into_iter()
            .filter(|job| {
                let life = job.life();
                matches!(life.phase, Phase::Running | Phase::Halting { .. })
                    && (now.saturating_duration_since(life.written_at) >= every / 2
                        || !job.lease_holds(now))
            })
            .collect()
    }

    /// Records a heartbeat sent at `sent_at` for `sent`, of which `still_ours` applied. Returns
    /// the jobs lost just now (first time).
    pub fn heartbeat_landed(
        &self,
        sent: &[Arc<LiveJob>],
        still_ours: &[String],
        sent_at: Instant,
    ) -> Vec<String> {
        let mut lost = Vec::new();
        for job in sent {
            if still_ours.iter().any(|id| id == &job.id) {
                job.confirm(sent_at);
            } else if !matches!(job.phase(), Phase::Ending | Phase::Gone) && self.lose(job) {
                lost.push(job.id.clone());
            }
        }
        lost
    }

    /// Halting jobs whose hook has not acknowledged within the stop grace, outside a batch
    /// (a batch loop enforces the grace itself).
    pub fn stalled_halts(&self, now: Instant) -> Vec<Arc<LiveJob>> {
        self.all()
            .into_iter()
            .filter(|job| {
                !job.in_batch.load(Ordering::SeqCst)
                    && matches!(job.phase(), Phase::Halting { since } if now.saturating_duration_since(since) >= self.timings.stop_grace)
            })
            .collect()
    }

    /// Starts a job's final write: no new item, no new count. Returns its last counts, or
    /// `None` when it is ending or gone already.
    pub fn begin_end(&self, job: &LiveJob) -> Option<CountsWrite> {
        let mut life = job.life();
        if matches!(life.phase, Phase::Ending | Phase::Gone) {
            return None;
        }
        life.phase = Phase::Ending;
        drop(life);
        job.no_new_items.cancel();
        Some(lock(&job.counts).take_final())
    }

    /// The final write of a job landed, or was given up: the job is gone from this process.
    pub fn end_done(&self, job: &LiveJob) {
        self.remove(job);
    }

    /// The job is no longer this process's (a fenced write was refused). Returns whether it
    /// was lost just now, so the loss is reported once.
    pub fn lose(&self, job: &LiveJob) -> bool {
        if job.phase() == Phase::Gone {
            return false;
        }
        self.remove(job);
        true
    }

    fn remove(&self, job: &LiveJob) {
        job.life().phase = Phase::Gone;
        job.no_new_items.cancel();
        job.gone.cancel();
        job.lease_changed.notify_waiters();
        lock(&self.jobs).remove(&job.id);
        let totals = {
            let mut counts = lock(&job.counts);
            counts.close();
            counts.totals()
        };
        lock(&self.gone).add(job.id.clone(), totals);
    }

    /// Begins a drain: no new job, no new item.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for job in self.all() {
            job.draining.store(true, Ordering::SeqCst);
            job.no_new_items.cancel();
        }
    }

    /// Whether a drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The ids of the live jobs.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.jobs).keys().cloned().collect()
    }
}
