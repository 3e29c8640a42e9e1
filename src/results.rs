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

/// The results of a running batch job, appended a range of items at a time.
#[derive(Debug, Default)]
pub struct GatheredResults {
    document: RawDocumentBuf,
    too_large: bool,
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
    /// Appends the elements of `chunk`, a BSON document `{ id: result, … }`, in order. The
    /// caller sends each id once. Past the document limit everything is dropped, and later
    /// chunks are ignored. A chunk that is not valid BSON is refused whole.
    pub fn append(&mut self, chunk: &[u8]) -> Result<(), String> {
        let chunk = RawDocument::from_bytes(chunk).map_err(|error| error.to_string())?;
        let elements = chunk
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| error.to_string())?;
        if self.too_large {
            return Ok(());
        }
        if self.document.as_bytes().len() + chunk.as_bytes().len() > DOCUMENT_LIMIT {
            self.too_large = true;
            self.document = RawDocumentBuf::new();
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
