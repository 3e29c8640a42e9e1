// BSON for the values a site hands to apostrophe-jobs (job labels, results, totals, failed
// item ids). They are serialised here with the `bson` package (6.x) and handed to Rust as
// bytes, so each keeps the BSON type the site's own driver would have given it.
//
// Apostrophe 2 sites may run on the MongoDB 2.x/3.x drivers, whose ObjectID, Long, Binary...
// come from `bson` 1.x, or on the 4.x driver (`bson` 4.x). bson 6 refuses those objects
// ("Unsupported BSON version") although the site's driver stores them without a word. So we
// serialise with bson 6 first, which is nearly always enough and is all the hot path costs,
// and only when it refuses a foreign type, rebuild the value with bson 6 types and try again.

const util = require('util');
const BSON = require('bson');

const {
  Binary, BSONRegExp, BSONSymbol, Code, DBRef, Decimal128, Double, Int32, Long, MaxKey, MinKey,
  ObjectId, Timestamp
} = BSON;

// The site drivers store `undefined` as null; bson 6 would drop the key by default.
const SERIALIZE_OPTIONS = { ignoreUndefined: false };

function encodeDocument(document) {
  try {
    return BSON.serialize(document, SERIALIZE_OPTIONS);
  } catch (error) {
    if (!(error instanceof BSON.BSONVersionError)) {
      throw error;
    }
  }
  return BSON.serialize(toCurrentBson(document, '', new Set()), SERIALIZE_OPTIONS);
}

function encodeValue(value) {
  return encodeDocument({ value });
}

function decodeDocument(bytes) {
  return BSON.deserialize(bytes);
}

// How to rebuild each BSON type with bson 6, by `_bsontype`. The fields read here are the
// ones bson 1.x, 4.x and 6.x share, with a fallback where 1.x named them differently, so a
// value made by any of them (or by another copy of bson 6) comes out with the same bytes.
// `convert` rebuilds what a type may contain (a Code's scope, a DBRef's id and fields).
const REBUILD = {
  // `ObjectID` in bson 1.x and 4.x. toHexString rather than `id`: in 1.x `id` may be a
  // 12-character binary string instead of a Buffer.
  ObjectID: (id) => ObjectId.createFromHexString(id.toHexString()),
  ObjectId: (id) => ObjectId.createFromHexString(id.toHexString()),
  // bson 1.x keeps the two halves in `low_`/`high_`, later versions in `low`/`high`.
  Long: (long) => Long.fromBits(lowBits(long), highBits(long), long.unsigned),
  Timestamp: (timestamp) => new Timestamp(Long.fromBits(lowBits(timestamp), highBits(timestamp), true)),
  Decimal128: (decimal) => new Decimal128(decimal.bytes),
  // `buffer` may be longer than the data (bson 1.x allocates ahead); `position` is its length.
  Binary: (binary) => new Binary(binary.buffer.subarray(0, binary.position), binary.sub_type),
  Int32: (number) => new Int32(number.value),
  Double: (number) => new Double(number.value),
  Code: (code, convert) => new Code(code.code, code.scope == null ? null : convert(code.scope, 'scope')),
  BSONRegExp: (regexp) => new BSONRegExp(regexp.pattern, regexp.options),
  // `Symbol` in bson 1.x and 4.x.
  Symbol: (symbol) => new BSONSymbol(symbol.value),
  BSONSymbol: (symbol) => new BSONSymbol(symbol.value),
  MinKey: () => new MinKey(),
  MaxKey: () => new MaxKey(),
  DBRef: (ref, convert) => {
    const fields = ref.fields == null ? undefined : convert(ref.fields, 'fields');
    const rebuilt = new DBRef('', convert(ref.oid, 'oid'), ref.db, fields);
    // Set after construction: the constructor splits a "db.collection" name in two. A bson 4
    // DBRef was split when it was made, but bson 1.x keeps `namespace` whole and stores it so.
    rebuilt.collection = ref.collection != null ? ref.collection : ref.namespace;
    return rebuilt;
  }
};

function lowBits(long) {
  return long.low != null ? long.low : long.low_;
}

function highBits(long) {
  return long.high != null ? long.high : long.high_;
}

// A copy of `value` in which every BSON type object is a bson 6 one. It follows bson 6's own
// serialiser: `toBSON()` first, then BSON types by `_bsontype`, Dates, regular expressions
// and binary data as they are, arrays, Maps and objects (own enumerable keys, in order)
// copied. `path` names the value in error messages (`results.abc[2]`); `ancestors` catches
// circular values, which would otherwise recurse until the stack runs out.
function toCurrentBson(value, path, ancestors) {
  if (typeof value?.toBSON === 'function') {
    value = value.toBSON();
  }
  if (value === null || typeof value !== 'object') {
    return value;
  }
  if (value._bsontype != null) {
    return rebuildBsonType(value, path, ancestors);
  }
  if (util.types.isDate(value) || util.types.isRegExp(value) || ArrayBuffer.isView(value) ||
      util.types.isAnyArrayBuffer(value)) {
    return value;
  }
  if (ancestors.has(value)) {
    throw new UnstorableValueError(path, 'it contains itself (a circular reference).');
  }
  ancestors.add(value);
  let copy;
  if (Array.isArray(value)) {
    copy = value.map((item, index) => toCurrentBson(item, `${path}[${index}]`, ancestors));
  } else if (value instanceof Map) {
    copy = new Map(Array.from(value, ([ key, item ]) => [ key, toCurrentBson(item, child(path, key), ancestors) ]));
  } else {
    // fromEntries defines the keys, so even a key named `__proto__` stays an ordinary key.
    copy = Object.fromEntries(Object.keys(value).map((key) => [ key, toCurrentBson(value[key], child(path, key), ancestors) ]));
  }
  ancestors.delete(value);
  return copy;
}

function rebuildBsonType(value, path, ancestors) {
  const type = value._bsontype;
  const rebuild = Object.hasOwn(REBUILD, type) ? REBUILD[type] : null;
  if (!rebuild) {
    throw new UnstorableValueError(path, `its _bsontype "${String(type)}" is not a type of the bson ` +
      'package (1.x, 4.x or 6.x). Convert it to a plain value (string, number, Date, array, object) or ' +
      'to a type from the bson package or the MongoDB driver before handing it to the job.');
  }
  const convert = (inner, name) => toCurrentBson(inner, child(path, name), ancestors);
  try {
    return rebuild(value, convert);
  } catch (error) {
    if (error instanceof UnstorableValueError) {
      throw error;
    }
    // A value that only looks like a BSON type (fields missing), or an invalid one.
    throw new UnstorableValueError(path, `it has _bsontype "${type}" but could not be rebuilt with ` +
      `bson 6 (${error.message}). Pass a value made by the bson package or the MongoDB driver, or a ` +
      'plain value.', error);
  }
}

function child(path, key) {
  return path ? `${path}.${key}` : String(key);
}

// Thrown for a value that cannot be stored; it says which one and what to do about it.
class UnstorableValueError extends Error {
  constructor(path, reason, cause) {
    super(`apostrophe-jobs: cannot store ${path || 'the document'}: ${reason}`, cause && { cause });
    this.name = 'UnstorableValueError';
  }
}

module.exports = { encodeDocument, encodeValue, decodeDocument };
