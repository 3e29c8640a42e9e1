//! Coalescing of `good`/`bad`/`setTotal`: calls only add to an in-memory book; the writer
//! turns each job's pending change into one update per flush, and folds what is left into
//! the update that ends the job, so the stored counts are exact the moment `ended` is true.

use std::collections::HashMap;

use mongodb::bson::{Bson, Document};

use crate::job::js_number;

/// What one job has been told since its last write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pending {
    good: f64,
    bad: f64,
    total: Option<Bson>,
}

impl Pending {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.good == 0.0 && self.bad == 0.0 && self.total.is_none()
    }

    /// Folds an older, unwritten change (from a failed flush) under this newer one: counts
    /// add up, the newer `total` wins.
    pub fn absorb_older(&mut self, older: Pending) {
        self.good += older.good;
        self.bad += older.bad;
        if self.total.is_none() {
            self.total = older.total;
        }
    }

    /// The `$inc` for the counters (`processed` grows by both), if any.
    pub fn increments(&self) -> Option<Document> {
        let mut inc = Document::new();
        if self.good != 0.0 {
            inc.insert("good", js_number(self.good));
        }
        if self.bad != 0.0 {
            inc.insert("bad", js_number(self.bad));
        }
        let processed = self.good + self.bad;
        if processed != 0.0 {
            inc.insert("processed", js_number(processed));
        }
        (!inc.is_empty()).then_some(inc)
    }

    /// The update document for this change, with `extra_set` (the fields that end or halt the
    /// job) merged into its `$set`. `None` when there is nothing to write at all.
    pub fn into_update(self, extra_set: Option<Document>) -> Option<Document> {
        let mut update = Document::new();
        if let Some(inc) = self.increments() {
            update.insert("$inc", inc);
        }
        let mut set = Document::new();
        if let Some(total) = self.total {
            set.insert("total", total);
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

/// The pending changes of every job of this process.
#[derive(Debug, Default)]
pub struct CounterBook {
    pending: HashMap<String, Pending>,
}

impl CounterBook {
    /// Adds `good` and `bad` to a job's counters. Returns whether the book was empty before,
    /// which is when the writer needs waking.
    pub fn add(&mut self, id: &str, good: f64, bad: f64) -> bool {
        let was_empty = self.pending.is_empty();
        let entry = self.entry(id);
        entry.good += good;
        entry.bad += bad;
        was_empty
    }

    /// Records a `setTotal`; the last one before a write wins, as with 2.x's `$set`s.
    pub fn set_total(&mut self, id: &str, total: Bson) -> bool {
        let was_empty = self.pending.is_empty();
        self.entry(id).total = Some(total);
        was_empty
    }

    /// Takes one job's pending change, leaving nothing behind for it.
    pub fn take(&mut self, id: &str) -> Pending {
        self.pending.remove(id).unwrap_or_default()
    }

    /// Takes every job's pending change.
    pub fn take_all(&mut self) -> Vec<(String, Pending)> {
        self.pending
            .drain()
            .filter(|(_, pending)| !pending.is_empty())
            .collect()
    }

    /// Puts back a change that could not be written, under anything added since.
    pub fn restore(&mut self, id: String, older: Pending) {
        self.pending.entry(id).or_default().absorb_older(older);
    }

    /// Whether any job has something to write.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn entry(&mut self, id: &str) -> &mut Pending {
        if !self.pending.contains_key(id) {
            self.pending.insert(id.to_owned(), Pending::default());
        }
        self.pending.get_mut(id).expect("inserted above")
    }
}

/// The `$inc`/`$set` for a `good`/`bad`/`setTotal` change alone: used by tests and by the
/// flush, which has no extra fields to set.
pub fn flush_update(pending: Pending) -> Option<Document> {
    pending.into_update(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn many_increments_become_one_update_with_processed() {
        let mut book = CounterBook::default();
        assert!(book.add("a", 1.0, 0.0));
        for _ in 0..98 {
            assert!(!book.add("a", 1.0, 0.0));
        }
        book.add("a", 0.0, 1.0);
        let update = flush_update(book.take("a")).unwrap();
        assert_eq!(
            update,
            doc! { "$inc": { "good": 99, "bad": 1, "processed": 100 } }
        );
        assert!(book.is_empty());
    }

    #[test]
    fn total_is_set_and_the_last_value_wins() {
        let mut book = CounterBook::default();
        book.set_total("a", Bson::Int32(5));
        book.set_total("a", Bson::Int32(7));
        assert_eq!(
            flush_update(book.take("a")).unwrap(),
            doc! { "$set": { "total": 7 } }
        );
    }

    #[test]
    fn ending_fields_ride_along_with_the_last_counts() {
        let mut book = CounterBook::default();
        book.add("a", 2.0, 0.0);
        let update = book
            .take("a")
            .into_update(Some(doc! { "ended": true, "status": "completed" }))
            .unwrap();
        assert_eq!(
            update,
            doc! {
                "$inc": { "good": 2, "processed": 2 },
                "$set": { "ended": true, "status": "completed" }
            }
        );
    }

    #[test]
    fn nothing_pending_means_no_write() {
        let mut book = CounterBook::default();
        assert_eq!(flush_update(book.take("missing")), None);
        book.add("a", 1.0, -1.0);
        // good and bad both move, processed does not.
        assert_eq!(
            flush_update(book.take("a")).unwrap(),
            doc! { "$inc": { "good": 1, "bad": -1 } }
        );
    }

    #[test]
    fn a_failed_flush_is_restored_under_newer_changes() {
        let mut book = CounterBook::default();
        book.add("a", 3.0, 0.0);
        book.set_total("a", Bson::Int32(10));
        let taken = book.take_all();
        book.add("a", 1.0, 0.0);
        book.set_total("a", Bson::Int32(20));
        for (id, pending) in taken {
            book.restore(id, pending);
        }
        assert_eq!(
            flush_update(book.take("a")).unwrap(),
            doc! { "$inc": { "good": 4, "processed": 4 }, "$set": { "total": 20 } }
        );
    }

    #[test]
    fn fractional_counts_become_doubles_like_the_node_driver() {
        let mut book = CounterBook::default();
        book.add("a", 1.5, 0.0);
        assert_eq!(
            flush_update(book.take("a")).unwrap(),
            doc! { "$inc": { "good": 1.5, "processed": 1.5 } }
        );
    }
}
