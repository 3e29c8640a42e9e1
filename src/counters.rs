//! Coalescing of `good`/`bad`/`setTotal` and of failed items: calls only touch memory; a
//! job's change becomes one update per write, and what is left rides with the update that ends
//! the job, so the stored counts are exact the moment `ended` is true.
//!
//! A job of this process keeps its absolute counts and writes them with `$set`, so a write
//! retried after a lost reply (a database restart mid-write) can never count twice. Counts
//! reported for a job of another process can only be `$inc`s ([`Deltas`]).

use std::collections::HashMap;

use mongodb::bson::{Bson, Document};

use crate::job::js_number;
use crate::options::EARLY_WRITE_ITEMS;

/// The counts of a job of this process.
#[derive(Debug, Default)]
pub struct Counts {
    good: f64,
    bad: f64,
    /// A `setTotal` not written yet (the last one wins, as with 2.x's `$set`s).
    total: Option<Bson>,
    /// The last `setTotal` of all: the final write carries it, whatever became of the
    /// writes before it (one in flight when the job ends is refused once the end lands).
    last_total: Option<Bson>,
    failed_items: Vec<Bson>,
    keep_failed_items: usize,
    failed_items_changed: bool,
    dirty: bool,
    /// Items counted since the last write.
    pending_items: f64,
    /// The final write took the counts: they are final, nothing more is counted.
    closed: bool,
    /// A report after the close was warned about.
    warned_closed: bool,
}

/// What one write of a job's counts sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CountsWrite {
    good: f64,
    bad: f64,
    total: Option<Bson>,
    failed_items: Option<Vec<Bson>>,
}

impl CountsWrite {
    /// The `$set` fields: the whole counts, and `total` and `failedItems` when they changed.
    pub fn set_fields(&self) -> Document {
        let mut set = Document::new();
        set.insert("good", js_number(self.good));
        set.insert("bad", js_number(self.bad));
        set.insert("processed", js_number(self.good + self.bad));
        if let Some(total) = &self.total {
            set.insert("total", total.clone());
        }
        if let Some(failed_items) = &self.failed_items {
            set.insert("failedItems", failed_items.clone());
        }
        set
    }
}

impl Counts {
    /// Counts of a new job that keeps its first `keep_failed_items` failed items.
    pub fn new(keep_failed_items: usize) -> Self {
        Counts {
            keep_failed_items,
            ..Default::default()
        }
    }

    /// Adds to the counters. Returns whether the job had nothing to write before (the writer
    /// may need waking).
    pub fn add(&mut self, good: f64, bad: f64) -> bool {
        self.good += good;
        self.bad += bad;
        self.pending_items += good.abs() + bad.abs();
        self.mark_dirty()
    }

    /// Records a `setTotal`. Returns true: a total is worth a write before the tick (the
    /// progress bar needs it).
    pub fn set_total(&mut self, total: Bson) -> bool {
        self.last_total = Some(total.clone());
        self.total = Some(total);
        self.mark_dirty();
        true
    }

    /// Keeps a failed item (`{ id, message }`) if fewer than the limit are kept. Returns
    /// whether the job had nothing to write before.
    pub fn add_failed_item(&mut self, item: Document) -> bool {
        if self.failed_items.len() >= self.keep_failed_items {
            return false;
        }
        self.failed_items.push(Bson::Document(item));
        self.failed_items_changed = true;
        self.mark_dirty()
    }

    /// Whether the job has something to write.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Whether what waits is worth a write before the next tick.
    pub fn wants_early_write(&self) -> bool {
        self.dirty && (self.total.is_some() || self.pending_items >= EARLY_WRITE_ITEMS)
    }

    /// The counts (good, bad), written or not.
    pub fn totals(&self) -> (f64, f64) {
        (self.good, self.bad)
    }

    /// Takes what is to write, if anything: the counts, and the total and failed items that
    /// changed since the last write.
    pub fn take(&mut self) -> Option<CountsWrite> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        self.pending_items = 0.0;
        let failed_items = self.failed_items_changed.then(|| self.failed_items.clone());
        self.failed_items_changed = false;
        Some(CountsWrite {
            good: self.good,
            bad: self.bad,
            total: self.total.take(),
            failed_items,
        })
    }

    /// A report refused because the counts are final (see [`Counts::take_final`]): `None`
    /// while they are not; else whether this is the first refusal, so it is warned once.
    pub fn refuse_when_final(&mut self) -> Option<bool> {
        self.closed
            .then(|| !std::mem::replace(&mut self.warned_closed, true))
    }

    /// Makes the counts final without a final write (the job was lost).
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Takes everything the job reported, for its final write: it must not depend on the
    /// writes before it, which may still be in flight and are refused once the end lands.
    /// The counts are final from then on.
    pub fn take_final(&mut self) -> CountsWrite {
        self.take();
        self.closed = true;
        CountsWrite {
            good: self.good,
            bad: self.bad,
            total: self.last_total.clone(),
            failed_items: (!self.failed_items.is_empty()).then(|| self.failed_items.clone()),
        }
    }

    /// Puts back a write that did not land: the counts are absolute, so only what newer calls
    /// did not replace comes back.
    pub fn restore(&mut self, failed: CountsWrite) {
        if self.total.is_none() {
            self.total = failed.total;
        }
        if failed.failed_items.is_some() {
            self.failed_items_changed = true;
        }
        self.mark_dirty();
    }

    fn mark_dirty(&mut self) -> bool {
        let was_clean = !self.dirty;
        self.dirty = true;
        was_clean
    }
}

/// Counts reported for jobs of other processes (2.x allowed `good(job)` anywhere with the
/// job's `_id`): `$inc`s, written on jobs that have not ended.
#[derive(Debug, Default)]
pub struct Deltas {
    jobs: HashMap<String, Delta>,
}

/// What one write adds to a job of another process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    good: f64,
    bad: f64,
    total: Option<Bson>,
}

impl Delta {
    /// The update: `$inc` of the non-zero counters, `$set` of the total.
    pub fn update(&self) -> Document {
        let mut update = Document::new();
        let mut inc = Document::new();
        for (field, value) in [
            ("good", self.good),
            ("bad", self.bad),
            ("processed", self.good + self.bad),
        ] {
            if value != 0.0 {
                inc.insert(field, js_number(value));
            }
        }
        if !inc.is_empty() {
            update.insert("$inc", inc);
        }
        if let Some(total) = &self.total {
            update.insert("$set", mongodb::bson::doc! { "total": total.clone() });
        }
        update
    }
}

impl Deltas {
    /// Adds to a job's counters. Returns whether nothing was pending before.
    pub fn add(&mut self, id: &str, good: f64, bad: f64) -> bool {
        let was_empty = self.jobs.is_empty();
        let delta = self.jobs.entry(id.to_owned()).or_default();
        delta.good += good;
        delta.bad += bad;
        was_empty
    }

    /// Records a total. Returns whether nothing was pending before.
    pub fn set_total(&mut self, id: &str, total: Bson) -> bool {
        let was_empty = self.jobs.is_empty();
        self.jobs.entry(id.to_owned()).or_default().total = Some(total);
        was_empty
    }

    /// Whether anything waits.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Takes everything pending; nothing of a job is kept once taken.
    pub fn take(&mut self) -> Vec<(String, Delta)> {
        self.jobs.drain().collect()
    }

    /// Puts back a delta that could not be written, under what came since.
    pub fn restore(&mut self, id: String, failed: Delta) {
        let delta = self.jobs.entry(id).or_default();
        delta.good += failed.good;
        delta.bad += failed.bad;
        if delta.total.is_none() {
            delta.total = failed.total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn a_job_of_this_process_writes_its_whole_counts_so_a_retry_cannot_double_count() {
        let mut counts = Counts::new(100);
        let wake_ups = (0..99).filter(|_| counts.add(1.0, 0.0)).count();
        assert_eq!(wake_ups, 1, "one wake-up per write");
        counts.add(0.0, 1.0);
        assert_eq!(
            counts.take().unwrap().set_fields(),
            doc! { "good": 99, "bad": 1, "processed": 100 }
        );
        counts.add(1.0, 0.0);
        assert_eq!(
            counts.take().unwrap().set_fields(),
            doc! { "good": 100, "bad": 1, "processed": 101 }
        );
        assert_eq!(counts.take(), None, "nothing new, nothing written");
    }

    #[test]
    fn a_total_is_set_once_and_the_last_value_wins() {
        let mut counts = Counts::new(100);
        counts.set_total(Bson::Int32(5));
        counts.set_total(Bson::Int32(7));
        assert!(counts.wants_early_write(), "a total is worth a write");
        assert_eq!(
            counts.take().unwrap().set_fields(),
            doc! { "good": 0, "bad": 0, "processed": 0, "total": 7 }
        );
        counts.add(1.0, 0.0);
        assert!(!counts.take().unwrap().set_fields().contains_key("total"));
    }

    #[test]
    fn enough_items_make_a_write_worth_it_early() {
        let mut counts = Counts::new(100);
        counts.add(31.0, 0.0);
        assert!(!counts.wants_early_write());
        counts.add(0.0, 1.0);
        assert!(counts.wants_early_write(), "32 items");
        counts.take();
        counts.add(1.0, 0.0);
        assert!(!counts.wants_early_write());
    }

    #[test]
    fn a_write_that_did_not_land_is_restored_under_newer_changes() {
        let mut counts = Counts::new(100);
        counts.add(3.0, 0.0);
        counts.set_total(Bson::Int32(10));
        let failed = counts.take().unwrap();
        counts.add(1.0, 0.0);
        counts.restore(failed);
        assert_eq!(
            counts.take().unwrap().set_fields(),
            doc! { "good": 4, "bad": 0, "processed": 4, "total": 10 }
        );
        counts.set_total(Bson::Int32(20));
        let failed = counts.take().unwrap();
        counts.set_total(Bson::Int32(30));
        counts.restore(failed);
        assert_eq!(
            counts.take().unwrap().set_fields().get("total"),
            Some(&Bson::Int32(30)),
            "a newer total wins over a restored one"
        );
    }

    #[test]
    fn the_final_write_carries_the_total_and_failed_items_already_taken_by_earlier_writes() {
        let mut counts = Counts::new(100);
        counts.set_total(Bson::Int32(50));
        counts.add_failed_item(doc! { "id": "x", "message": "no" });
        counts.add(1.0, 1.0);
        // In flight when the job ends: refused once the end lands, so the end must not need it.
        let _in_flight = counts.take().unwrap();
        let fields = counts.take_final().set_fields();
        assert_eq!(fields.get("total"), Some(&Bson::Int32(50)));
        assert_eq!(fields.get_array("failedItems").unwrap().len(), 1);
        assert_eq!(fields.get("processed"), Some(&Bson::Int32(2)));
        let mut quiet = Counts::new(100);
        assert_eq!(
            quiet.take_final().set_fields(),
            doc! { "good": 0, "bad": 0, "processed": 0 },
            "no total unless one was set"
        );
    }

    #[test]
    fn only_the_first_failed_items_are_kept() {
        let mut counts = Counts::new(2);
        for n in 0..5 {
            counts.add_failed_item(doc! { "id": n, "message": "no" });
        }
        let fields = counts.take_final().set_fields();
        let items = fields.get_array("failedItems").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1].as_document().unwrap().get("id"),
            Some(&Bson::Int32(1))
        );
    }

    #[test]
    fn counts_for_a_job_of_another_process_are_increments() {
        let mut deltas = Deltas::default();
        assert!(deltas.add("b", 2.0, 1.0));
        assert!(!deltas.add("b", 0.0, 0.0));
        let taken = deltas.take();
        assert_eq!(
            taken[0].1.update(),
            doc! { "$inc": { "good": 2, "bad": 1, "processed": 3 } }
        );
        assert!(deltas.is_empty());
        deltas.add("b", 1.0, -1.0);
        deltas.set_total("b", Bson::Int32(9));
        let (id, delta) = deltas.take().pop().unwrap();
        deltas.restore(id, delta);
        deltas.add("b", 1.0, 0.0);
        assert_eq!(
            deltas.take()[0].1.update(),
            doc! { "$inc": { "good": 2, "bad": -1, "processed": 1 }, "$set": { "total": 9 } }
        );
    }

    #[test]
    fn fractional_counts_become_doubles_like_the_node_driver() {
        let mut counts = Counts::new(100);
        counts.add(1.5, 0.0);
        assert_eq!(
            counts.take().unwrap().set_fields(),
            doc! { "good": 1.5, "bad": 0, "processed": 1.5 }
        );
    }
}
