//! The item ledger of a batch job started with `trackItems`: which items of the batch
//! finished, and which of those failed, as two bitmaps of one bit per item. Bit `i` is
//! `byte[i >> 3] & (1 << (i & 7))` (least significant bit first). The bitmaps live with the
//! job's counts ([`crate::counters::Counts`]) under the same lock, so a write takes the counts
//! and the bitmaps as one snapshot: whenever `processed` is stored, the bitmaps stored with it
//! agree with it.
//!
//! Marking an item is O(1) and allocates nothing; the bitmaps are copied only when a write
//! takes them.

use mongodb::bson::{spec::BinarySubtype, Binary, Bson, Document};

/// The largest batch whose items are tracked: its two bitmaps take 8 MiB together, half of
/// MongoDB's document limit.
pub const MAX_TRACKED_ITEMS: usize = 32 * 1024 * 1024;

/// The bytes a field holding one bitmap of `total` bits takes in a BSON document, beyond the
/// bitmap itself: type byte, key and its terminator, length, subtype.
const FIELD_OVERHEAD: usize = 1 + "itemsFinished".len() + 1 + 4 + 1;

/// Which items of a batch finished, and which failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemLedger {
    total: usize,
    finished: Vec<u8>,
    failed: Vec<u8>,
    /// An index out of range was warned about already.
    warned_out_of_range: bool,
}

/// What became of a mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// A bit was set that was not set before.
    Changed,
    /// The bits were set already.
    Unchanged,
    /// The index is not in the batch; nothing was marked. `first` is true the first time for
    /// the ledger, to warn once.
    OutOfRange {
        /// Whether this is the first out-of-range index of the ledger.
        first: bool,
    },
}

/// The bitmaps as one write stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemBitmaps {
    /// Items that finished, good or bad.
    pub finished: Vec<u8>,
    /// Items that finished bad.
    pub failed: Vec<u8>,
}

impl ItemBitmaps {
    /// Adds `itemsFinished` and `itemsFailed` to `set`.
    pub fn insert_into(&self, set: &mut Document) {
        set.insert("itemsFinished", binary(self.finished.clone()));
        set.insert("itemsFailed", binary(self.failed.clone()));
    }
}

/// A bitmap as stored: a BSON Binary of the generic subtype.
pub fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    })
}

impl ItemLedger {
    /// A ledger of `total` items, none finished.
    pub fn new(total: usize) -> Self {
        let bytes = total.div_ceil(8);
        ItemLedger {
            total,
            finished: vec![0; bytes],
            failed: vec![0; bytes],
            warned_out_of_range: false,
        }
    }

    /// Marks item `index` finished, and failed unless `good`.
    pub fn mark(&mut self, index: usize, good: bool) -> Marked {
        if index >= self.total {
            let first = !std::mem::replace(&mut self.warned_out_of_range, true);
            return Marked::OutOfRange { first };
        }
        let (byte, bit) = (index >> 3, 1u8 << (index & 7));
        let mut changed = self.finished[byte] & bit == 0;
        self.finished[byte] |= bit;
        if !good {
            changed |= self.failed[byte] & bit == 0;
            self.failed[byte] |= bit;
        }
        if changed {
            Marked::Changed
        } else {
            Marked::Unchanged
        }
    }

    /// Whether item `index` finished.
    #[cfg(test)]
    pub fn is_finished(&self, index: usize) -> bool {
        index < self.total && self.finished[index >> 3] & (1 << (index & 7)) != 0
    }

    /// Whether item `index` failed.
    #[cfg(test)]
    pub fn is_failed(&self, index: usize) -> bool {
        index < self.total && self.failed[index >> 3] & (1 << (index & 7)) != 0
    }

    /// How many items finished.
    #[cfg(test)]
    pub fn finished_count(&self) -> usize {
        self.finished
            .iter()
            .map(|byte| byte.count_ones() as usize)
            .sum()
    }

    /// A copy of the bitmaps, for a write.
    pub fn bitmaps(&self) -> ItemBitmaps {
        ItemBitmaps {
            finished: self.finished.clone(),
            failed: self.failed.clone(),
        }
    }

    /// How many bytes the two bitmap fields take in the job document.
    pub fn stored_size(&self) -> usize {
        stored_size(self.total)
    }
}

/// How many bytes the two bitmap fields of a batch of `total` items take in a job document.
pub fn stored_size(total: usize) -> usize {
    2 * (total.div_ceil(8) + FIELD_OVERHEAD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn bits_are_set_least_significant_first() {
        let mut ledger = ItemLedger::new(10);
        assert_eq!(
            ledger.bitmaps().finished,
            vec![0, 0],
            "ten bits take two bytes"
        );
        assert_eq!(ledger.mark(0, true), Marked::Changed);
        assert_eq!(ledger.mark(3, true), Marked::Changed);
        assert_eq!(ledger.mark(9, true), Marked::Changed);
        assert_eq!(ledger.mark(3, true), Marked::Unchanged);
        let bitmaps = ledger.bitmaps();
        assert_eq!(bitmaps.finished, vec![0b0000_1001, 0b0000_0010]);
        assert_eq!(bitmaps.failed, vec![0, 0]);
        assert!(ledger.is_finished(9) && !ledger.is_finished(8));
        assert_eq!(ledger.finished_count(), 3);
    }

    #[test]
    fn a_failed_item_sets_both_bits() {
        let mut ledger = ItemLedger::new(16);
        ledger.mark(7, false);
        ledger.mark(8, true);
        let bitmaps = ledger.bitmaps();
        assert_eq!(bitmaps.finished, vec![0b1000_0000, 0b0000_0001]);
        assert_eq!(bitmaps.failed, vec![0b1000_0000, 0]);
        assert!(ledger.is_failed(7) && !ledger.is_failed(8));
        assert_eq!(
            ledger.mark(8, false),
            Marked::Changed,
            "a good item reported bad later is failed"
        );
        assert_eq!(ledger.mark(8, true), Marked::Unchanged);
        assert!(ledger.is_failed(8), "bits are never cleared");
    }

    #[test]
    fn an_index_out_of_range_is_ignored_and_reported_once() {
        let mut ledger = ItemLedger::new(3);
        assert_eq!(ledger.mark(3, true), Marked::OutOfRange { first: true });
        assert_eq!(
            ledger.mark(usize::MAX, false),
            Marked::OutOfRange { first: false }
        );
        assert_eq!(ledger.bitmaps().finished, vec![0]);
        let mut empty = ItemLedger::new(0);
        assert_eq!(empty.mark(0, true), Marked::OutOfRange { first: true });
        assert!(empty.bitmaps().finished.is_empty());
    }

    #[test]
    fn the_bitmaps_are_generic_binaries_and_their_stored_size_is_exact() {
        let mut ledger = ItemLedger::new(20);
        ledger.mark(1, false);
        let mut set = doc! {};
        ledger.bitmaps().insert_into(&mut set);
        assert_eq!(
            set,
            doc! { "itemsFinished": binary(vec![2, 0, 0]), "itemsFailed": binary(vec![2, 0, 0]) }
        );
        let mut bytes = Vec::new();
        set.to_writer(&mut bytes).unwrap();
        let empty_document = 5;
        // `itemsFailed` is two bytes shorter than `itemsFinished`: the estimate is an upper bound.
        assert_eq!(bytes.len() - empty_document + 2, ledger.stored_size());
    }
}
