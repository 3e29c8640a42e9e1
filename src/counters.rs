//! Coalescing of `good`/`bad`/`setTotal` and of failed items: calls only touch memory; a
//! job's change becomes one update per write, and what is left rides with the update that ends
//! the job, so the stored counts are exact the moment `ended` is true.
//!
//! A job of this process keeps its absolute counts and writes them with `$set`, so a write
//! retried after a lost reply (a database restart mid-write) can never count twice. Counts
//! reported for a job of another process can only be `$inc`s ([`Deltas`]).
//!
//! A batch job that tracks its items keeps its [`ItemLedger`] here, beside the counts and
//! under the same lock: an item is counted and marked at once, and a write takes both, so
//! the bitmaps stored with `processed` always agree with it.

use std::collections::HashMap;

use mongodb::bson::{Bson, Document};

use crate::job::js_number;
use crate::ledger::{ItemBitmaps, ItemLedger, Marked};
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
    /// Which items of the batch finished and failed, when the batch tracks them.
    ledger: Option<ItemLedger>,
    /// The ledger changed since the last write took it.
    ledger_changed: bool,
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
    items: Option<ItemBitmaps>,
}

/// What became of an item's report ([`Counts::finish_item`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ItemReport {
    /// The job had nothing to write before (the writer may need waking).
    pub was_clean: bool,
    /// The index is out of the batch's range, for the first time in this batch: warn.
    pub warn_out_of_range: bool,
}

impl CountsWrite {
    /// The bitmaps this write carries, if any.
    pub fn items(&self) -> Option<&ItemBitmaps> {
        self.items.as_ref()
    }

    /// The `$set` fields: the whole counts, `total` and `failedItems` when they changed, and
    /// the item bitmaps (`itemsFinished`, `itemsFailed`) when they changed.
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
        if let Some(items) = &self.items {
            items.insert_into(&mut set);
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

    /// Starts tracking the items of a batch of `total` (a new, empty ledger). The bitmaps go
    /// out with the next write.
    pub fn track_items(&mut self, total: usize) {
        self.ledger = Some(ItemLedger::new(total));
        self.ledger_changed = true;
    }

    /// One finished item of the batch, at `index`: counted (good or bad) when `count`, and,
    /// when the batch tracks its items, marked finished (and failed unless `good`). O(1).
    pub fn finish_item(&mut self, index: usize, good: bool, count: bool) -> ItemReport {
        let mut report = ItemReport::default();
        if count {
            let (good, bad) = if good { (1.0, 0.0) } else { (0.0, 1.0) };
            report.was_clean = self.add(good, bad);
        }
        if let Some(ledger) = &mut self.ledger {
            match ledger.mark(index, good) {
                Marked::Changed => {
                    self.ledger_changed = true;
                    report.was_clean |= self.mark_dirty();
                }
                Marked::Unchanged => {}
                Marked::OutOfRange { first } => report.warn_out_of_range = first,
            }
        }
        report
    }

    /// The ledger of the batch, when it tracks its items.
    pub fn ledger(&self) -> Option<&ItemLedger> {
        self.ledger.as_ref()
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
        let items = match &self.ledger {
            Some(ledger) if self.ledger_changed => Some(ledger.bitmaps()),
            _ => None,
        };
        self.ledger_changed = false;
        Some(CountsWrite {
            good: self.good,
            bad: self.bad,
            total: self.total.take(),
            failed_items,
            items,
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
    /// The counts are final from then on. The item bitmaps are always in it when the batch
    /// tracks its items.
    pub fn take_final(&mut self) -> CountsWrite {
        self.dirty = false;
        self.pending_items = 0.0;
        self.total = None;
        self.failed_items_changed = false;
        self.ledger_changed = false;
        self.closed = true;
        CountsWrite {
            good: self.good,
            bad: self.bad,
            total: self.last_total.clone(),
            failed_items: (!self.failed_items.is_empty()).then(|| self.failed_items.clone()),
            items: self.ledger.as_ref().map(ItemLedger::bitmaps),
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
        // The ledger only grows: what it holds now covers what the failed write carried.
        if failed.items.is_some() && self.ledger.is_some() {
            self.ledger_changed = true;
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

    use crate::ledger::binary;

    #[test]
    fn a_tracked_item_is_counted_and_marked_in_the_same_write() {
        let mut counts = Counts::new(100);
        counts.track_items(12);
        let report = counts.finish_item(0, true, true);
        assert!(report.was_clean && !report.warn_out_of_range);
        counts.finish_item(9, false, true);
        counts.finish_item(3, true, true);
        assert_eq!(
            counts.take().unwrap().set_fields(),
            doc! {
                "good": 2, "bad": 1, "processed": 3,
                "itemsFinished": binary(vec![0b0000_1001, 0b0000_0010]),
                "itemsFailed": binary(vec![0, 0b0000_0010]),
            }
        );
        counts.add(1.0, 0.0);
        assert_eq!(
            counts.take().unwrap().set_fields(),
            doc! { "good": 3, "bad": 1, "processed": 4 },
            "unchanged bitmaps are not written again"
        );
        counts.finish_item(11, false, true);
        let fields = counts.take().unwrap().set_fields();
        assert_eq!(
            fields.get("itemsFailed"),
            Some(&binary(vec![0, 0b0000_1010])),
            "each write carries the whole bitmaps"
        );
        assert_eq!(fields.get("processed"), Some(&Bson::Int32(5)));
    }

    #[test]
    fn a_mark_without_counting_sets_the_bits_only() {
        let mut counts = Counts::new(100);
        counts.track_items(4);
        counts.add(0.0, 1.0);
        counts.take();
        let report = counts.finish_item(2, false, false);
        assert!(report.was_clean, "a changed bitmap is worth a write");
        assert_eq!(
            counts.take().unwrap().set_fields(),
            doc! {
                "good": 0, "bad": 1, "processed": 1,
                "itemsFinished": binary(vec![0b100]),
                "itemsFailed": binary(vec![0b100]),
            }
        );
        assert!(!counts.finish_item(2, false, false).was_clean);
        assert_eq!(counts.take(), None, "marking a marked item changes nothing");
        let mut untracked = Counts::new(100);
        assert!(!untracked.finish_item(2, true, false).was_clean);
        assert!(untracked.finish_item(2, true, true).was_clean);
        assert_eq!(
            untracked.take().unwrap().set_fields(),
            doc! { "good": 1, "bad": 0, "processed": 1 },
            "without tracking the index is ignored"
        );
    }

    #[test]
    fn bitmaps_of_a_write_that_did_not_land_go_out_with_the_next_one() {
        let mut counts = Counts::new(100);
        counts.track_items(8);
        counts.finish_item(1, true, true);
        let failed = counts.take().unwrap();
        assert!(failed.items().is_some());
        counts.add(1.0, 0.0);
        counts.restore(failed);
        assert_eq!(
            counts.take().unwrap().set_fields(),
            doc! {
                "good": 2, "bad": 0, "processed": 2,
                "itemsFinished": binary(vec![0b10]),
                "itemsFailed": binary(vec![0]),
            }
        );
        counts.finish_item(2, false, true);
        let failed = counts.take().unwrap();
        counts.finish_item(3, true, true);
        counts.restore(failed);
        assert_eq!(
            counts.take().unwrap().set_fields(),
            doc! {
                "good": 3, "bad": 1, "processed": 4,
                "itemsFinished": binary(vec![0b1110]),
                "itemsFailed": binary(vec![0b100]),
            },
            "the newest bitmaps, which cover the failed write's"
        );
        counts.add(1.0, 0.0);
        let without_items = counts.take().unwrap();
        counts.restore(without_items);
        assert!(
            !counts
                .take()
                .unwrap()
                .set_fields()
                .contains_key("itemsFinished"),
            "a failed write without bitmaps does not bring them back"
        );
    }

    #[test]
    fn the_final_write_carries_both_bitmaps_even_when_unchanged() {
        let mut counts = Counts::new(100);
        counts.track_items(3);
        counts.finish_item(0, true, true);
        counts.finish_item(2, false, true);
        // Taken by a write that is in flight when the job ends.
        let _in_flight = counts.take().unwrap();
        let fields = counts.take_final().set_fields();
        assert_eq!(fields.get("itemsFinished"), Some(&binary(vec![0b101])));
        assert_eq!(fields.get("itemsFailed"), Some(&binary(vec![0b100])));
        assert_eq!(fields.get("processed"), Some(&Bson::Int32(2)));
        assert_eq!(counts.refuse_when_final(), Some(true), "final from then on");
        let mut untracked = Counts::new(100);
        assert!(!untracked
            .take_final()
            .set_fields()
            .contains_key("itemsFinished"));
    }

    #[test]
    fn an_index_out_of_range_is_counted_but_not_marked_and_warned_once() {
        let mut counts = Counts::new(100);
        counts.track_items(2);
        counts.finish_item(0, true, true);
        counts.take();
        let report = counts.finish_item(2, true, true);
        assert!(report.was_clean, "counted as before");
        assert!(report.warn_out_of_range);
        assert!(!counts.finish_item(7, false, false).warn_out_of_range);
        let fields = counts.take().unwrap().set_fields();
        assert_eq!(fields.get("processed"), Some(&Bson::Int32(2)));
        assert!(!fields.contains_key("itemsFinished"), "no bit changed");
        assert_eq!(counts.ledger().unwrap().finished_count(), 1);
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
