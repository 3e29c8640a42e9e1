'use strict';

// lib/bson.js: values a site hands to the module are stored with the BSON types its own
// driver would give them, including the type objects of the bson 1.x (MongoDB 2.x/3.x
// drivers) and 4.x (4.x driver) packages, which bson 6 refuses. "What the site's driver
// would store" is checked against the bytes that driver's bson version writes itself.
// No database server needed:
//
//   node --test __tests__/bson.test.js

const { test } = require('node:test');
const assert = require('node:assert/strict');
const BSON = require('bson');
const { encodeDocument, encodeValue, decodeDocument } = require('../lib/bson.js');

// The bson packages of the drivers Apostrophe 2 sites run on, with what the driver writes:
// the drivers store `undefined` as null.
const FOREIGN = [
  {
    label: 'bson 1.x',
    bson: require('bson-v1'),
    ObjectId: require('bson-v1').ObjectID,
    BSONSymbol: require('bson-v1').Symbol,
    serialize: (document) => new (require('bson-v1'))().serialize(document, { ignoreUndefined: false })
  },
  {
    label: 'bson 4.x',
    bson: require('bson-v4'),
    ObjectId: require('bson-v4').ObjectId,
    BSONSymbol: require('bson-v4').BSONSymbol,
    serialize: (document) => require('bson-v4').serialize(document, { ignoreUndefined: false })
  }
];

// Decoded without turning wrappers into JavaScript numbers and strings, to see Int32, Double,
// Long and BSONSymbol.
const decodeRaw = (bytes) => BSON.deserialize(bytes, { promoteValues: false });

// The BSON element type of `value` in `encodeValue` bytes (the byte after the length).
const elementType = (bytes) => bytes[4];

function assertStoredLikeTheDriver(foreign, value) {
  assert.deepEqual(encodeValue(value), Buffer.from(foreign.serialize({ value })));
}

test('a document without foreign types is serialised exactly as bson 6 serialises it', () => {
  const document = {
    title: 'Batch',
    count: 3,
    ratio: 0.5,
    big: 2 ** 40,
    when: new Date('2024-05-06T07:08:09Z'),
    missing: undefined,
    list: [ 1, 'two', null, undefined, { deep: [ new Date(0) ] } ],
    id: new BSON.ObjectId(),
    long: BSON.Long.fromString('9007199254740993'),
    decimal: BSON.Decimal128.fromString('1.5'),
    bytes: Buffer.from('abc'),
    pattern: /a+b/i
  };
  assert.deepEqual(encodeDocument(document), BSON.serialize(document, { ignoreUndefined: false }));
});

test('plain data is serialised in one pass, without a conversion walk', () => {
  // The conversion copies every object with Object.fromEntries (bson 6 itself never calls
  // it), so a call during encodeDocument would mean plain data was walked and copied.
  const fromEntries = Object.fromEntries;
  let copies = 0;
  Object.fromEntries = (entries) => { copies++; return fromEntries(entries); };
  try {
    encodeDocument({ results: { a: { b: [ 1, { c: 2 } ] } }, when: new Date() });
  } finally {
    Object.fromEntries = fromEntries;
  }
  assert.equal(copies, 0);
  // ... and the spy sees a walk when there is one.
  Object.fromEntries = (entries) => { copies++; return fromEntries(entries); };
  try {
    encodeDocument({ results: { a: new (require('bson-v1').ObjectID)() } });
  } finally {
    Object.fromEntries = fromEntries;
  }
  assert.ok(copies > 0);
});

test('undefined is stored as null, in documents and in arrays', () => {
  const decoded = decodeDocument(encodeDocument({ a: undefined, list: [ undefined, 1 ] }));
  assert.deepEqual(decoded, { a: null, list: [ null, 1 ] });
});

test('encodeValue stores the value under the key "value"', () => {
  assert.deepEqual(decodeDocument(encodeValue(3)), { value: 3 });
  assert.deepEqual(encodeValue([ 'a', 1 ]), BSON.serialize({ value: [ 'a', 1 ] }));
});

test('decodeDocument uses bson 6 defaults: numbers come back as JavaScript numbers', () => {
  const decoded = decodeDocument(encodeDocument({ i: new BSON.Int32(4), d: new BSON.Double(2), l: BSON.Long.fromNumber(5) }));
  assert.deepEqual(decoded, { i: 4, d: 2, l: 5 });
});

test('a value with toBSON() is stored as what toBSON returns', () => {
  const value = { toBSON: () => ({ kind: 'custom', at: new Date(5) }) };
  assert.deepEqual(decodeDocument(encodeValue(value)), { value: { kind: 'custom', at: new Date(5) } });
});

for (const foreign of FOREIGN) {
  const B = foreign.bson;

  test(`bson 6 alone refuses a ${foreign.label} ObjectID (the reason for this module)`, () => {
    assert.throws(() => BSON.serialize({ value: new foreign.ObjectId() }), BSON.BSONVersionError);
  });

  test(`a ${foreign.label} ObjectID is stored as an ObjectId with the same bytes`, () => {
    const id = new foreign.ObjectId();
    const stored = decodeDocument(encodeValue(id)).value;
    assert.ok(stored instanceof BSON.ObjectId);
    assert.equal(stored.toHexString(), id.toHexString());
    assertStoredLikeTheDriver(foreign, id);
  });

  test(`a ${foreign.label} Long is stored as an Int64 with the same value`, () => {
    const long = B.Long.fromString('-1234567890123456789');
    const bytes = encodeValue(long);
    assert.equal(elementType(bytes), BSON.BSONType.long);
    const stored = decodeRaw(bytes).value;
    assert.ok(stored instanceof BSON.Long);
    assert.equal(stored.toString(), '-1234567890123456789');
    assertStoredLikeTheDriver(foreign, long);
  });

  test(`a small ${foreign.label} Long is still an Int64, not an Int32`, () => {
    const bytes = encodeValue(B.Long.fromNumber(7));
    assert.equal(elementType(bytes), BSON.BSONType.long);
    assert.equal(decodeDocument(bytes).value, 7);
  });

  test(`a ${foreign.label} Decimal128 is stored as a Decimal128 with the same bytes`, () => {
    const decimal = B.Decimal128.fromString('-12345.678901234567890123456789');
    const stored = decodeDocument(encodeValue(decimal)).value;
    assert.ok(stored instanceof BSON.Decimal128);
    assert.deepEqual(Buffer.from(stored.bytes), Buffer.from(decimal.bytes));
    assert.equal(stored.toString(), '-12345.678901234567890123456789');
    assertStoredLikeTheDriver(foreign, decimal);
  });

  test(`a ${foreign.label} Binary is stored with its subtype and bytes`, () => {
    const binary = new B.Binary(Buffer.from([ 0, 1, 2, 254, 255 ]), 0x80);
    const stored = decodeDocument(encodeValue(binary)).value;
    assert.ok(stored instanceof BSON.Binary);
    assert.equal(stored.sub_type, 0x80);
    assert.deepEqual(Buffer.from(stored.buffer), Buffer.from([ 0, 1, 2, 254, 255 ]));
    assertStoredLikeTheDriver(foreign, binary);
  });

  test(`a ${foreign.label} Binary filled with write() keeps only the bytes written`, () => {
    const binary = new B.Binary();
    binary.write(Buffer.from('abc'));
    const stored = decodeDocument(encodeValue(binary)).value;
    assert.deepEqual(Buffer.from(stored.buffer), Buffer.from('abc'));
    assertStoredLikeTheDriver(foreign, binary);
  });

  test(`a ${foreign.label} Binary of the old subtype 2 keeps its inner length prefix`, () => {
    const binary = new B.Binary(Buffer.from('old'), 2);
    const stored = decodeDocument(encodeValue(binary)).value;
    assert.equal(stored.sub_type, 2);
    assert.deepEqual(Buffer.from(stored.buffer), Buffer.from('old'));
    assertStoredLikeTheDriver(foreign, binary);
  });

  test(`a ${foreign.label} Timestamp is stored as a Timestamp with the same t and i`, () => {
    // High bits set in both halves, where signed and unsigned readings differ.
    const timestamp = B.Timestamp.fromBits(0xfffffffe | 0, 0x80000001 | 0);
    const bytes = encodeValue(timestamp);
    assert.equal(elementType(bytes), BSON.BSONType.timestamp);
    const stored = decodeDocument(bytes).value;
    assert.ok(stored instanceof BSON.Timestamp);
    assert.equal(stored.t, 0x80000001);
    assert.equal(stored.i, 0xfffffffe);
    assertStoredLikeTheDriver(foreign, timestamp);
  });

  test(`a ${foreign.label} Int32 is stored as an Int32`, () => {
    const bytes = encodeValue(new B.Int32(-42));
    assert.equal(elementType(bytes), BSON.BSONType.int);
    const stored = decodeRaw(bytes).value;
    assert.ok(stored instanceof BSON.Int32);
    assert.equal(stored.value, -42);
    assertStoredLikeTheDriver(foreign, new B.Int32(-42));
  });

  test(`a ${foreign.label} Double holding a whole number is stored as a Double`, () => {
    const bytes = encodeValue(new B.Double(4));
    assert.equal(elementType(bytes), BSON.BSONType.double);
    const stored = decodeRaw(bytes).value;
    assert.ok(stored instanceof BSON.Double);
    assert.equal(stored.value, 4);
    assertStoredLikeTheDriver(foreign, new B.Double(4));
  });

  test(`a ${foreign.label} Code with a scope is stored as code with scope, its scope converted too`, () => {
    const id = new foreign.ObjectId();
    const code = new B.Code('function () { return x; }', { x: 1, id });
    const bytes = encodeValue(code);
    assert.equal(elementType(bytes), BSON.BSONType.javascriptWithScope);
    const stored = decodeDocument(bytes).value;
    assert.ok(stored instanceof BSON.Code);
    assert.equal(stored.code, 'function () { return x; }');
    assert.deepEqual(stored.scope, { x: 1, id: BSON.ObjectId.createFromHexString(id.toHexString()) });
    assertStoredLikeTheDriver(foreign, code);
  });

  test(`a ${foreign.label} Code without a scope is stored as plain code`, () => {
    const code = new B.Code('emit(this._id)');
    const bytes = encodeValue(code);
    assert.equal(elementType(bytes), BSON.BSONType.javascript);
    const stored = decodeDocument(bytes).value;
    assert.equal(stored.code, 'emit(this._id)');
    assert.equal(stored.scope, null);
    assertStoredLikeTheDriver(foreign, code);
  });

  test(`a ${foreign.label} BSONRegExp is stored as a regular expression with its options`, () => {
    const regexp = new B.BSONRegExp('^a.c$', 'mi');
    // (By default bson 6 decodes it as a JavaScript RegExp.)
    const stored = BSON.deserialize(encodeValue(regexp), { bsonRegExp: true }).value;
    assert.ok(stored instanceof BSON.BSONRegExp);
    assert.equal(stored.pattern, '^a.c$');
    assert.equal(stored.options, 'im');
    assertStoredLikeTheDriver(foreign, regexp);
  });

  test(`a ${foreign.label} Symbol is stored as a BSON symbol`, () => {
    const symbol = new foreign.BSONSymbol('label');
    const bytes = encodeValue(symbol);
    assert.equal(elementType(bytes), BSON.BSONType.symbol);
    const stored = decodeRaw(bytes).value;
    assert.ok(stored instanceof BSON.BSONSymbol);
    assert.equal(stored.value, 'label');
    assertStoredLikeTheDriver(foreign, symbol);
  });

  test(`${foreign.label} MinKey and MaxKey are stored as MinKey and MaxKey`, () => {
    const stored = decodeDocument(encodeDocument({ min: new B.MinKey(), max: new B.MaxKey() }));
    assert.ok(stored.min instanceof BSON.MinKey);
    assert.ok(stored.max instanceof BSON.MaxKey);
    assert.deepEqual(encodeDocument({ min: new B.MinKey(), max: new B.MaxKey() }),
      Buffer.from(foreign.serialize({ min: new B.MinKey(), max: new B.MaxKey() })));
  });

  test(`a ${foreign.label} DBRef is stored as a DBRef with its collection, id and database`, () => {
    const id = new foreign.ObjectId();
    const ref = new B.DBRef('aposDocs', id, 'site');
    const stored = decodeDocument(encodeValue(ref)).value;
    assert.ok(stored instanceof BSON.DBRef);
    assert.equal(stored.collection, 'aposDocs');
    assert.equal(stored.oid.toHexString(), id.toHexString());
    assert.ok(stored.oid instanceof BSON.ObjectId);
    assert.equal(stored.db, 'site');
    assertStoredLikeTheDriver(foreign, ref);
  });

  test(`a ${foreign.label} DBRef named "db.collection" is stored as that driver stores it`, () => {
    // bson 1.x keeps the name whole; bson 4 splits it when the DBRef is made.
    assertStoredLikeTheDriver(foreign, new B.DBRef('site.aposDocs', new foreign.ObjectId()));
  });

  test(`${foreign.label} types nested in arrays and objects keep their order and types next to Dates and numbers`, () => {
    const when = new Date('2020-01-02T03:04:05Z');
    const id = new foreign.ObjectId();
    const document = {
      when,
      ids: [ id, 1, new B.Long.fromNumber(2), 'three', { at: when, n: new B.Int32(4) } ],
      nested: { z: 1.5, a: new B.Decimal128.fromString('2.5'), list: [ [ new B.Double(6) ] ] },
      count: 7,
      nothing: undefined
    };
    const bytes = encodeDocument(document);
    assert.deepEqual(bytes, Buffer.from(foreign.serialize(document)));
    const stored = decodeRaw(bytes);
    assert.deepEqual(Object.keys(stored), [ 'when', 'ids', 'nested', 'count', 'nothing' ]);
    assert.deepEqual(stored.when, when);
    assert.equal(stored.ids[0].toHexString(), id.toHexString());
    assert.ok(stored.ids[0] instanceof BSON.ObjectId);
    assert.ok(stored.ids[1] instanceof BSON.Int32);
    assert.ok(stored.ids[2] instanceof BSON.Long);
    assert.equal(stored.ids[3], 'three');
    assert.deepEqual(Object.keys(stored.ids[4]), [ 'at', 'n' ]);
    assert.deepEqual(stored.ids[4].at, when);
    assert.equal(stored.ids[4].n.value, 4);
    assert.deepEqual(Object.keys(stored.nested), [ 'z', 'a', 'list' ]);
    assert.ok(stored.nested.z instanceof BSON.Double);
    assert.equal(stored.nested.a.toString(), '2.5');
    assert.ok(stored.nested.list[0][0] instanceof BSON.Double);
    assert.equal(stored.count.value, 7);
    assert.equal(stored.nothing, null);
  });

  test(`a document with ${foreign.label} types is stored as the same document with bson 6 types`, () => {
    const id = new foreign.ObjectId();
    const same = BSON.ObjectId.createFromHexString(id.toHexString());
    const when = new Date(1000);
    assert.deepEqual(
      encodeDocument({ a: [ id, when ], b: { c: B.Long.fromNumber(3) }, d: 1 }),
      BSON.serialize({ a: [ same, when ], b: { c: BSON.Long.fromNumber(3) }, d: 1 })
    );
  });

  test(`bson 6 types next to ${foreign.label} types keep their values`, () => {
    const mine = new BSON.ObjectId();
    const stored = decodeDocument(encodeDocument({
      mine,
      theirs: new foreign.ObjectId(),
      decimal: BSON.Decimal128.fromString('9.99'),
      uuid: new BSON.UUID('0f8fad5b-d9cb-469f-a165-70867728950e')
    }));
    assert.equal(stored.mine.toHexString(), mine.toHexString());
    assert.equal(stored.decimal.toString(), '9.99');
    assert.equal(stored.uuid.sub_type, 4);
    assert.equal(stored.uuid.toUUID().toHexString(), '0f8fad5b-d9cb-469f-a165-70867728950e');
  });

  test(`a toBSON() value returning a ${foreign.label} type is stored as the bson 6 type`, () => {
    const id = new foreign.ObjectId();
    const stored = decodeDocument(encodeValue({ toBSON: () => id })).value;
    assert.ok(stored instanceof BSON.ObjectId);
    assert.equal(stored.toHexString(), id.toHexString());
  });

  test(`a Map holding ${foreign.label} types is stored as a document, in order`, () => {
    const id = new foreign.ObjectId();
    const stored = decodeDocument(encodeValue(new Map([ [ 'b', id ], [ 'a', 1 ] ]))).value;
    assert.deepEqual(Object.keys(stored), [ 'b', 'a' ]);
    assert.equal(stored.b.toHexString(), id.toHexString());
  });

  test(`a key named __proto__ next to a ${foreign.label} type stays an ordinary key`, () => {
    const document = JSON.parse('{ "__proto__": { "polluted": true }, "n": 1 }');
    document.id = new foreign.ObjectId();
    const stored = decodeDocument(encodeDocument(document));
    assert.deepEqual(Object.keys(stored), [ '__proto__', 'n', 'id' ]);
    assert.equal(({}).polluted, undefined);
  });
}

test('a bson 4.x UUID is stored as a Binary of subtype 4 with its bytes', () => {
  const { UUID, serialize } = require('bson-v4');
  const uuid = new UUID('0f8fad5b-d9cb-469f-a165-70867728950e');
  const stored = decodeDocument(encodeValue(uuid)).value;
  assert.equal(stored.sub_type, 4);
  assert.equal(stored.toUUID().toHexString(), '0f8fad5b-d9cb-469f-a165-70867728950e');
  assert.deepEqual(encodeValue(uuid), Buffer.from(serialize({ value: uuid })));
});

test('a bson 4.x DBRef keeps its extra fields, converted and in order', () => {
  const B = require('bson-v4');
  const ref = new B.DBRef('aposDocs', new B.ObjectId(), undefined, { by: new B.ObjectId(), n: new B.Int32(1) });
  const bytes = encodeValue(ref);
  assert.deepEqual(bytes, Buffer.from(B.serialize({ value: ref })));
  const stored = decodeDocument(bytes).value;
  assert.deepEqual(Object.keys(stored.fields), [ 'by', 'n' ]);
  assert.ok(stored.fields.by instanceof BSON.ObjectId);
});

test('an unknown _bsontype is an Error naming the type, where it is and what to do', () => {
  const id = new (require('bson-v1').ObjectID)();
  assert.throws(
    () => encodeDocument({ labels: { ok: 'Done' }, results: { a: [ id, { _bsontype: 'Widget' } ] } }),
    (error) => {
      assert.ok(error instanceof Error);
      assert.match(error.message, /_bsontype "Widget"/);
      assert.match(error.message, /results\.a\[1\]/);
      assert.match(error.message, /Convert it to a plain value/);
      return true;
    }
  );
});

test('an unknown _bsontype alone (no other foreign type) is the same clear Error', () => {
  assert.throws(() => encodeValue({ _bsontype: 'Widget' }), /cannot store value: its _bsontype "Widget"/);
});

test('a value that claims a known _bsontype but lacks its fields is a clear Error, not a crash', () => {
  assert.throws(
    () => encodeValue({ _bsontype: 'ObjectID', id: 'not twelve bytes' }),
    (error) => {
      assert.match(error.message, /cannot store value: it has _bsontype "ObjectID" but could not be rebuilt/);
      assert.ok(error.cause instanceof Error);
      return true;
    }
  );
});

test('a circular value holding a foreign type is a clear Error, not a stack overflow', () => {
  const document = { id: new (require('bson-v1').ObjectID)(), child: {} };
  document.child.parent = document;
  assert.throws(() => encodeDocument(document), /cannot store child\.parent: it contains itself/);
});

test('a value repeated (not circular) next to a foreign type is stored at each place', () => {
  const shared = { n: 1 };
  const stored = decodeDocument(encodeDocument({ a: shared, b: [ shared ], id: new (require('bson-v1').ObjectID)() }));
  assert.deepEqual(stored.a, { n: 1 });
  assert.deepEqual(stored.b, [ { n: 1 } ]);
});

test('errors of bson 6 other than a foreign type pass through unchanged', () => {
  const document = {};
  document.self = document;
  assert.throws(() => encodeDocument(document), (error) => error instanceof BSON.BSONError && /circular/i.test(error.message));
});
