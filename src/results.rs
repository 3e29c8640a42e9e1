//! A job's `results`, kept as BSON bytes from JavaScript to the final write, never parsed.
//!
//! Parsed into a `Document`, 100,000 entries took ~18 MB (a `Bson` is 112 bytes, plus each
//! key's allocation) for 2.6 MB of BSON. A batch job's results are also gathered here range
//! by range while it runs, so the JavaScript heap never holds an object with a key per item
//! (in V8, ~180 bytes per key at 100,000 keys), and they stop growing at MongoDB's document
//! limit, past which they could not be stored anyway.

use mongodb::bson::{RawBsonRef, RawDocument, RawDocumentBuf};

/// MongoDB's largest document: gathered results that would pass it are dropped.
pub const DOCUMENT_LIMIT: usize = 16 * 1024 * 1024;

/// What the results budget keeps free beyond the fields it is told about: the job's other
/// fields (counts, status, `failedItems`, ids and dates) and BSON's framing.
pub const RESULTS_MARGIN: usize = 64 * 1024;

/// How large a job's `results` may be when the rest of its document takes `reserved` bytes
/// (its extra fields, labels and item bitmaps) plus [`RESULTS_MARGIN`], so that the final
/// write stays within [`DOCUMENT_LIMIT`].
pub fn results_budget(reserved: usize) -> usize {
    DOCUMENT_LIMIT.saturating_sub(reserved.saturating_add(RESULTS_MARGIN))
}

/// Bytes that JavaScript handed over; `Box`ed so the core never sees the binding's type.
pub type Bytes = Box<dyn AsRef<[u8]> + Send + Sync>;

/// A job's `results`, as raw BSON.
pub enum RawValue {
    /// A `{ value }` document serialised by JavaScript (the `end(job, ok, results)` path).
    Envelope(Bytes),
    /// Results gathered by [`GatheredResults`]: the `{ id: result, … }` document itself.
    Document(RawDocumentBuf),
}

impl RawValue {
    /// Checks an envelope: a BSON document whose `value` field can be read.
    pub fn from_envelope(bytes: Bytes) -> Result<Self, String> {
        read_envelope(bytes.as_ref().as_ref())?;
        Ok(RawValue::Envelope(bytes))
    }

    /// The value itself.
    pub fn value(&self) -> RawBsonRef<'_> {
        match self {
            RawValue::Envelope(bytes) => {
                read_envelope(bytes.as_ref().as_ref()).expect("checked by from_envelope")
            }
            RawValue::Document(document) => RawBsonRef::Document(document),
        }
    }

    /// Whether the value is `null` (or `undefined`, which the site's driver stores as null).
    pub fn is_null(&self) -> bool {
        matches!(self.value(), RawBsonRef::Null | RawBsonRef::Undefined)
    }

    /// An upper bound of the bytes the value takes in the job document (an envelope's own
    /// framing is counted too).
    pub fn size(&self) -> usize {
        match self {
            RawValue::Envelope(bytes) => bytes.as_ref().as_ref().len(),
            RawValue::Document(document) => document.as_bytes().len(),
        }
    }
}

fn read_envelope(bytes: &[u8]) -> Result<RawBsonRef<'_>, String> {
    let document = RawDocument::from_bytes(bytes).map_err(|error| error.to_string())?;
    match document.get("value") {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err("the document has no `value` field".to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

/// What `end` writes as `results`.
pub enum EndResults {
    /// `null`.
    Null,
    /// These.
    Given(RawValue),
    /// What the batch job gathered with [`GatheredResults`] (`{}` if nothing).
    Gathered,
}

/// The results of a running batch job, appended a range of items at a time, up to a budget:
/// MongoDB's document limit less what the rest of the job document takes.
#[derive(Debug)]
pub struct GatheredResults {
    document: RawDocumentBuf,
    too_large: bool,
    budget: usize,
}

impl Default for GatheredResults {
    fn default() -> Self {
        GatheredResults::with_budget(results_budget(0))
    }
}

/// What gathering left for the final write.
#[derive(Debug)]
pub enum Gathered {
    /// The results document.
    Results(RawDocumentBuf),
    /// They grew past MongoDB's document limit and were dropped.
    TooLarge,
}

impl GatheredResults {
    /// No results yet, which may take `budget` bytes.
    pub fn with_budget(budget: usize) -> Self {
        GatheredResults {
            document: RawDocumentBuf::new(),
            too_large: false,
            budget,
        }
    }

    /// How many bytes the results may take.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Lowers the budget by `bytes` that the job document takes for something else (the item
    /// bitmaps); results already past the new budget are dropped.
    pub fn reserve(&mut self, bytes: usize) {
        self.budget = self.budget.saturating_sub(bytes);
        if self.document.as_bytes().len() > self.budget {
            self.drop_all();
        }
    }

    /// Gives back `bytes` reserved before (a ledger that was replaced).
    pub fn release(&mut self, bytes: usize) {
        self.budget = self.budget.saturating_add(bytes).min(results_budget(0));
    }

    fn drop_all(&mut self) {
        self.too_large = true;
        self.document = RawDocumentBuf::new();
    }

    /// Appends the elements of `chunk`, a BSON document `{ id: result, … }`, in order. The
    /// caller sends each id once. Past the budget everything is dropped, and later chunks are
    /// ignored. A chunk that is not valid BSON is refused whole.
    pub fn append(&mut self, chunk: &[u8]) -> Result<(), String> {
        let chunk = RawDocument::from_bytes(chunk).map_err(|error| error.to_string())?;
        let elements = chunk
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| error.to_string())?;
        if self.too_large {
            return Ok(());
        }
        if self.document.as_bytes().len() + chunk.as_bytes().len() > self.budget {
            self.drop_all();
            return Ok(());
        }
        for (key, value) in elements {
            self.document.append_ref(key, value);
        }
        Ok(())
    }

    /// What the final write gets.
    pub fn into_gathered(self) -> Gathered {
        if self.too_large {
            Gathered::TooLarge
        } else {
            Gathered::Results(self.document)
        }
    }

    /// Takes what was gathered, leaving no results and the same budget.
    pub fn take(&mut self) -> Gathered {
        std::mem::replace(self, GatheredResults::with_budget(self.budget)).into_gathered()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, rawdoc, Bson};

    fn bytes(document: mongodb::bson::Document) -> Vec<u8> {
        let mut bytes = Vec::new();
        document.to_writer(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn chunks_are_appended_in_order_with_their_types() {
        let mut gathered = GatheredResults::default();
        gathered
            .append(&bytes(doc! { "b": 1, "a": Bson::Null }))
            .unwrap();
        gathered.append(&bytes(doc! { "c": { "x": "y" } })).unwrap();
        let Gathered::Results(document) = gathered.into_gathered() else {
            panic!("not too large");
        };
        assert_eq!(
            document.to_document().unwrap(),
            doc! { "b": 1, "a": Bson::Null, "c": { "x": "y" } }
        );
    }

    #[test]
    fn past_the_document_limit_results_are_dropped_for_good() {
        let mut gathered = GatheredResults::default();
        let big = "x".repeat(DOCUMENT_LIMIT / 2);
        gathered.append(&bytes(doc! { "a": big.clone() })).unwrap();
        gathered.append(&bytes(doc! { "b": big })).unwrap();
        gathered.append(&bytes(doc! { "c": 1 })).unwrap();
        assert!(matches!(gathered.into_gathered(), Gathered::TooLarge));
    }

    #[test]
    fn the_budget_leaves_room_for_the_extra_fields_and_the_bitmaps() {
        // A job whose extra fields take 1 MiB and whose batch of 8 Mi items keeps two 1 MiB
        // bitmaps: gathered results stop short of the document limit by all three.
        let extra = bytes(doc! { "rerun": { "ids": "x".repeat(1024 * 1024) } });
        let items = 8 * 1024 * 1024;
        let mut gathered = GatheredResults::with_budget(results_budget(extra.len()));
        gathered.reserve(crate::ledger::stored_size(items));
        let reserved = extra.len() + crate::ledger::stored_size(items) + RESULTS_MARGIN;
        assert_eq!(gathered.budget(), DOCUMENT_LIMIT - reserved);
        assert!(reserved > 3 * 1024 * 1024);
        // Results that would fit the document limit alone, but not beside the other fields.
        let chunk = "r".repeat(1024 * 1024 - 64);
        let mut fitted = 0;
        for n in 0..15 {
            let mut range = mongodb::bson::Document::new();
            range.insert(n.to_string(), chunk.clone());
            gathered.append(&bytes(range)).unwrap();
            if gathered.too_large {
                break;
            }
            fitted += 1;
        }
        assert_eq!(fitted, 12, "12 MiB fit the budget, the 13th MiB does not");
        let Gathered::TooLarge = gathered.take() else {
            panic!("dropped past the budget");
        };
        assert_eq!(
            gathered.budget(),
            DOCUMENT_LIMIT - reserved,
            "taking them keeps the budget"
        );

        // The final document, with results just within the budget, fits the limit.
        let mut fitting = GatheredResults::with_budget(results_budget(extra.len()));
        fitting.reserve(crate::ledger::stored_size(items));
        // The empty document's framing (5 bytes) counts, then the chunk's: 5 + 8 bytes.
        let room = fitting.budget() - 5 - 5 - (1 + 2 + 4 + 1);
        fitting
            .append(&bytes(doc! { "a": "r".repeat(room) }))
            .unwrap();
        let Gathered::Results(results) = fitting.take() else {
            panic!("within the budget");
        };
        let mut ledger = crate::ledger::ItemLedger::new(items);
        ledger.mark(items - 1, false);
        let mut set =
            doc! { "labels": { "title": "Publish" }, "good": 0, "bad": 1, "processed": 1 };
        ledger.bitmaps().insert_into(&mut set);
        let mut job = mongodb::bson::Document::from_reader(extra.as_slice()).unwrap();
        job.extend(set);
        job.insert("results", results.to_document().unwrap());
        let mut stored = Vec::new();
        job.to_writer(&mut stored).unwrap();
        assert!(
            stored.len() <= DOCUMENT_LIMIT && stored.len() > DOCUMENT_LIMIT - 2 * RESULTS_MARGIN,
            "{} bytes",
            stored.len()
        );
    }

    #[test]
    fn results_already_gathered_past_a_lowered_budget_are_dropped() {
        let mut gathered = GatheredResults::with_budget(1000);
        gathered
            .append(&bytes(doc! { "a": "x".repeat(500) }))
            .unwrap();
        gathered.reserve(400);
        assert!(matches!(gathered.take(), Gathered::Results(_)));
        gathered
            .append(&bytes(doc! { "a": "x".repeat(500) }))
            .unwrap();
        gathered.reserve(100);
        assert!(matches!(gathered.take(), Gathered::TooLarge));
    }

    #[test]
    fn a_broken_chunk_is_refused_whole() {
        let mut gathered = GatheredResults::default();
        let mut broken = bytes(doc! { "a": 1, "b": "two" });
        // The type byte of `b`, after the length (4) and `a` (1 + 2 + 4).
        broken[11] = 0x77;
        assert!(gathered.append(&broken).is_err());
        assert!(gathered.append(&[1, 2, 3]).is_err());
        let Gathered::Results(document) = gathered.into_gathered() else {
            panic!("not too large");
        };
        assert_eq!(document.as_bytes(), rawdoc! {}.as_bytes());
    }

    #[test]
    fn an_envelope_gives_its_value() {
        let value = RawValue::from_envelope(Box::new(bytes(doc! { "value": { "a": 1 } }))).unwrap();
        assert!(matches!(value.value(), RawBsonRef::Document(_)));
        assert!(
            RawValue::from_envelope(Box::new(bytes(doc! { "value": Bson::Null })))
                .unwrap()
                .is_null()
        );
        assert!(RawValue::from_envelope(Box::new(bytes(doc! { "other": 1 }))).is_err());
    }
}
