//! Coalescing of `good`/`bad`/`setTotal` and of failed items: calls only touch an in-memory
//! book; the writer turns each job's change into one update per flush, and folds what is left
//! into the update that ends the job, so the stored counts are exact the moment `ended` is
//! true.
//!
//! For a job started in this process the book holds its absolute counts and writes them with
//! `$set`, so a write that is retried after a lost reply (a database restart mid-flush) can
//! never count twice. Counts reported for a job of another process can only be `$inc`s.

use std::collections::HashMap;

use mongodb::bson::{Bson, Document};

use crate::job::js_number;

/// What one job has to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Whether `good`/`bad` are absolute (a job of this process) or deltas.
    owned: bool,
    good: f64,
    bad: f64,
    total: Option<Bson>,
    failed_items: Option<Vec<Bson>>,
}

impl Snapshot {
    /// Whether the job was started in this process (its counts are absolute).
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// The update document for this change, with `extra_set` (the fields that end or halt the
    /// job) merged into its `$set`. `None` when there is nothing to write at all.
    pub fn into_update(self, extra_set: Option<Document>) -> Option<Document> {
        let mut update = Document::new();
        let mut set = Document::new();
        let processed = self.good + self.bad;
        if self.owned {
            set.insert("good", js_number(self.good));
            set.insert("bad", js_number(self.bad));
            set.insert("processed", js_number(processed));
        } else {
            let mut inc = Document::new();
            for (field, value) in [
                ("good", self.good),
                ("bad", self.bad),
                ("processed", processed),
            ] {
                if value != 0.0 {
                    inc.insert(field, js_number(value));
                }
            }
            if !inc.is_empty() {
                update.insert("$inc", inc);
            }
        }
        if let Some(total) = self.total {
            set.insert("total", total);
        }
        if let Some(failed_items) = self.failed_items {
            set.insert("failedItems", failed_items);
        }
        if let Some(extra) = extra_set {
            set.extend(extra);
        }
        if !set.is_empty() {
            update.insert("$set", set);
        }
        (!update.is_empty()).then_some(update)
    }
}

#[derive(Debug, Default)]
struct JobCounts {
    owned: bool,
    good: f64,
    bad: f64,
    total: Option<Bson>,
    failed_items: Vec<Bson>,
    failed_items_changed: bool,
    dirty: bool,
    /// Its final write is under way: the counts are final.
    ending: bool,
}

impl JobCounts {
    fn snapshot(&mut self) -> Snapshot {
        self.dirty = false;
        let snapshot = Snapshot {
            owned: self.owned,
            good: self.good,
            bad: self.bad,
            total: self.total.take(),
            failed_items: self.failed_items_changed.then(|| self.failed_items.clone()),
        };
        self.failed_items_changed = false;
        if !self.owned {
            // Deltas are handed over; an owned job keeps its absolute counts.
            self.good = 0.0;
            self.bad = 0.0;
        }
        snapshot
    }
}

/// The pending changes of every job this process writes for.
#[derive(Debug, Default)]
pub struct CounterBook {
    jobs: HashMap<String, JobCounts>,
    /// Items (good + bad) counted since the last `take_dirty`, over all jobs.
    pending_items: f64,
    /// A `total` waits: the progress bar needs it, whatever the number of items.
    total_pending: bool,
    /// How many pending items make a write worth it before the watcher's tick.
    early_flush_items: f64,
    /// How many failed items each job keeps.
    keep_failed_items: usize,
}

impl CounterBook {
    /// A book that keeps the first `keep_failed_items` failed items of each job, and whose
    /// changes are worth an early write once `early_flush_items` items (or a total) wait.
    pub fn new(keep_failed_items: usize, early_flush_items: f64) -> Self {
        CounterBook {
            jobs: HashMap::new(),
            pending_items: 0.0,
            total_pending: false,
            early_flush_items,
            keep_failed_items,
        }
    }

    /// Registers a job started in this process: its counts start at 0 and are written whole.
    pub fn own(&mut self, id: &str) {
        self.jobs.insert(
            id.to_owned(),
            JobCounts {
                owned: true,
                ..Default::default()
            },
        );
    }

    /// Adds to a job's counters. Returns whether the writer needs waking (the job had
    /// nothing pending).
    pub fn add(&mut self, id: &str, good: f64, bad: f64) -> bool {
        let job = self.entry(id);
        if job.ending {
            return false;
        }
        job.good += good;
        job.bad += bad;
        let wake = Self::mark_dirty(job);
        self.pending_items += good.abs() + bad.abs();
        wake
    }

    /// Records a `setTotal`; the last one before a write wins, as with 2.x's `$set`s. Returns
    /// whether the writer needs waking: a total is worth a write before the tick.
    pub fn set_total(&mut self, id: &str, total: Bson) -> bool {
        let was_early = self.wants_early_flush();
        let job = self.entry(id);
        job.total = Some(total);
        let wake = Self::mark_dirty(job);
        self.total_pending = true;
        wake || !was_early
    }

    /// Keeps a failed item (`{ id, message }`) if the job has kept fewer than the limit.
    pub fn add_failed_item(&mut self, id: &str, item: Document) -> bool {
        let keep = self.keep_failed_items;
        let job = self.entry(id);
        if job.failed_items.len() >= keep {
            return false;
        }
        job.failed_items.push(Bson::Document(item));
        job.failed_items_changed = true;
        Self::mark_dirty(job)
    }

    /// Whether the pending changes are worth a write before the watcher's next tick.
    pub fn wants_early_flush(&self) -> bool {
        self.total_pending || self.pending_items >= self.early_flush_items
    }

    /// The absolute counts (good, bad) of a job of this process, including what is not
    /// written yet, until its final write is done.
    pub fn live_counts(&self, id: &str) -> Option<(f64, f64)> {
        self.jobs
            .get(id)
            .filter(|job| job.owned)
            .map(|job| (job.good, job.bad))
    }

    /// Takes the change of every job that has one. Jobs of other processes are forgotten once
    /// their deltas are taken (a failed write restores them).
    pub fn take_dirty(&mut self) -> Vec<(String, Snapshot)> {
        self.pending_items = 0.0;
        self.total_pending = false;
        let taken: Vec<(String, Snapshot)> = self
            .jobs
            .iter_mut()
            .filter(|(_, job)| job.dirty)
            .map(|(id, job)| (id.clone(), job.snapshot()))
            .collect();
        // (The first failed items of another process's job are kept: `failedItems` is
        // written whole.)
        self.jobs
            .retain(|_, job| job.owned || !job.failed_items.is_empty());
        taken
    }

    /// Takes a job's last change. Its counts stay readable (`live_counts`) until `forget`,
    /// once the final write is done; counts reported meanwhile are ignored, as the ended job's
    /// counts are final.
    pub fn finish(&mut self, id: &str) -> Snapshot {
        self.jobs
            .get_mut(id)
            .map(|job| {
                job.ending = true;
                job.snapshot()
            })
            .unwrap_or_default()
    }

    /// Forgets a job whose final write is done.
    pub fn forget(&mut self, id: &str) {
        self.jobs.remove(id);
    }

    /// Puts back a change that could not be written.
    pub fn restore(&mut self, id: &str, failed: Snapshot) {
        let job = self.jobs.entry(id.to_owned()).or_insert_with(|| JobCounts {
            owned: failed.owned,
            ..Default::default()
        });
        if failed.owned {
            // Absolute counts: the entry has them, or (after `finish`) gets them back.
            job.good = job.good.max(failed.good);
            job.bad = job.bad.max(failed.bad);
        } else {
            job.good += failed.good;
            job.bad += failed.bad;
        }
        if job.total.is_none() {
            job.total = failed.total;
        }
        if let Some(items) = failed.failed_items {
            if job.failed_items.len() < items.len() {
                job.failed_items = items;
            }
            job.failed_items_changed = true;
        }
        job.dirty = true;
        job.ending = false;
    }

    /// Whether any job has something to write.
    pub fn is_dirty(&self) -> bool {
        self.jobs.values().any(|job| job.dirty)
    }

    fn entry(&mut self, id: &str) -> &mut JobCounts {
        if !self.jobs.contains_key(id) {
            self.jobs.insert(id.to_owned(), JobCounts::default());
        }
        self.jobs.get_mut(id).expect("inserted above")
    }

    fn mark_dirty(job: &mut JobCounts) -> bool {
        let wake = !job.dirty;
        job.dirty = true;
        wake
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    fn flush(book: &mut CounterBook, id: &str) -> Option<Document> {
        book.take_dirty()
            .into_iter()
            .find(|(job, _)| job == id)
            .and_then(|(_, snapshot)| snapshot.into_update(None))
    }

    #[test]
    fn a_job_of_this_process_writes_its_whole_counts_so_a_retry_cannot_double_count() {
        let mut book = CounterBook::new(100, 16.0);
        book.own("a");
        let wake_ups = (0..99).filter(|_| book.add("a", 1.0, 0.0)).count();
        assert_eq!(wake_ups, 1, "one wake-up per flush");
        book.add("a", 0.0, 1.0);
        let first = flush(&mut book, "a").unwrap();
        assert_eq!(
            first,
            doc! { "$set": { "good": 99, "bad": 1, "processed": 100 } }
        );
        book.add("a", 1.0, 0.0);
        assert_eq!(
            flush(&mut book, "a").unwrap(),
            doc! { "$set": { "good": 100, "bad": 1, "processed": 101 } }
        );
        assert_eq!(flush(&mut book, "a"), None, "nothing new, nothing written");
    }

    #[test]
    fn counts_for_a_job_of_another_process_are_increments() {
        let mut book = CounterBook::new(100, 16.0);
        book.add("b", 2.0, 1.0);
        assert_eq!(
            flush(&mut book, "b").unwrap(),
            doc! { "$inc": { "good": 2, "bad": 1, "processed": 3 } }
        );
        book.add("b", 1.0, -1.0);
        assert_eq!(
            flush(&mut book, "b").unwrap(),
            doc! { "$inc": { "good": 1, "bad": -1 } }
        );
    }

    #[test]
    fn total_is_set_and_the_last_value_wins() {
        let mut book = CounterBook::new(100, 16.0);
        book.set_total("a", Bson::Int32(5));
        book.set_total("a", Bson::Int32(7));
        assert_eq!(
            flush(&mut book, "a").unwrap(),
            doc! { "$set": { "total": 7 } }
        );
    }

    #[test]
    fn ending_fields_ride_along_with_the_last_counts() {
        let mut book = CounterBook::new(100, 16.0);
        book.own("a");
        book.add("a", 2.0, 0.0);
        let update = book
            .finish("a")
            .into_update(Some(doc! { "ended": true, "status": "completed" }))
            .unwrap();
        assert_eq!(
            update,
            doc! { "$set": { "good": 2, "bad": 0, "processed": 2, "ended": true, "status": "completed" } }
        );
        assert!(!book.is_dirty());
    }

    #[test]
    fn live_counts_include_what_is_not_written_until_the_job_is_forgotten() {
        let mut book = CounterBook::new(100, 16.0);
        book.own("a");
        book.add("a", 2.0, 1.0);
        flush(&mut book, "a");
        book.add("a", 1.0, 0.0);
        assert_eq!(book.live_counts("a"), Some((3.0, 1.0)));
        book.finish("a");
        assert_eq!(
            book.live_counts("a"),
            Some((3.0, 1.0)),
            "while the end is written"
        );
        book.forget("a");
        assert_eq!(book.live_counts("a"), None);
        book.add("b", 1.0, 0.0);
        assert_eq!(
            book.live_counts("b"),
            None,
            "another process's job: deltas only"
        );
    }

    #[test]
    fn a_total_or_enough_items_make_a_write_worth_it_early() {
        let mut book = CounterBook::new(100, 16.0);
        book.own("a");
        assert!(book.add("a", 15.0, 0.0), "nothing was pending");
        assert!(!book.wants_early_flush());
        book.add("a", 0.0, 1.0);
        assert!(book.wants_early_flush(), "16 items");
        book.take_dirty();
        book.add("a", 1.0, 0.0);
        assert!(
            book.set_total("a", Bson::Int32(9)),
            "a total is worth a write"
        );
        assert!(book.wants_early_flush());
    }

    #[test]
    fn a_failed_write_is_restored_under_newer_changes() {
        let mut book = CounterBook::new(100, 16.0);
        book.add("b", 3.0, 0.0);
        book.set_total("b", Bson::Int32(10));
        let taken = book.take_dirty();
        book.add("b", 1.0, 0.0);
        book.set_total("b", Bson::Int32(20));
        for (id, snapshot) in taken {
            book.restore(&id, snapshot);
        }
        assert_eq!(
            flush(&mut book, "b").unwrap(),
            doc! { "$inc": { "good": 4, "processed": 4 }, "$set": { "total": 20 } }
        );
        book.own("a");
        book.add("a", 5.0, 0.0);
        let final_write = book.finish("a");
        book.restore("a", final_write);
        assert_eq!(
            flush(&mut book, "a").unwrap(),
            doc! { "$set": { "good": 5, "bad": 0, "processed": 5 } }
        );
    }

    #[test]
    fn only_the_first_failed_items_are_kept() {
        let mut book = CounterBook::new(2, 16.0);
        book.own("a");
        for n in 0..5 {
            book.add_failed_item("a", doc! { "id": n, "message": "no" });
        }
        let update = book.finish("a").into_update(None).unwrap();
        let items = update
            .get_document("$set")
            .unwrap()
            .get_array("failedItems")
            .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1].as_document().unwrap().get("id"),
            Some(&Bson::Int32(1))
        );
    }

    #[test]
    fn fractional_counts_become_doubles_like_the_node_driver() {
        let mut book = CounterBook::new(100, 16.0);
        book.add("b", 1.5, 0.0);
        assert_eq!(
            flush(&mut book, "b").unwrap(),
            doc! { "$inc": { "good": 1.5, "processed": 1.5 } }
        );
    }
}
