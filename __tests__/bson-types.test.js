// Values a site hands to the module keep the BSON types its own driver gives them, as the
// stock module stores them: ObjectId, Decimal128, Long and Binary in results, labels and
// failed item ids, made by the driver of the site's Apostrophe release (`npm test` runs this
// suite on the last and on the oldest supported release: bson 6 under
// `emulate-mongo-2-driver`, bson 1.0 in the MongoDB 2.2 driver) or by the bson 1.x of the
// MongoDB 3.x driver of other 2.x sites.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { siteDriver } = require('./helpers/apostrophe.js');
const { bootFixtureSite, rawJob, bsonShape, stockApi, waitForEnd, ids } = require('./helpers/jobs.js');

let site;
let jobs;
let client;

before(async () => {
  ({ site, jobs, client } = await bootFixtureSite());
});

after(async () => {
  await site.stop();
});

// The same values made by a given bson package.
function typedValues(bson) {
  const ObjectId = bson.ObjectId || bson.ObjectID;
  return {
    oid: new ObjectId('5f1d7c4e9b1e8a3d2c4b6a81'),
    decimal: bson.Decimal128.fromString('1234.5678'),
    long: bson.Long.fromNumber(9007199254740991),
    binary: new bson.Binary(Buffer.from([ 1, 2, 3, 250 ]), 0),
    nested: [ { at: new Date('2020-03-19T14:02:11.123Z'), n: 3, x: 1.5 } ]
  };
}

const start = (api, options) => new Promise((resolve, reject) => api.start(options, (err, job) => (err ? reject(err) : resolve(job))));
const end = (api, job, results) => new Promise((resolve, reject) => api.end(job, true, results, (err) => (err ? reject(err) : resolve())));

async function storedBy(api, bson) {
  const job = await start(api, { labels: { title: 'Typed', ...typedValues(bson) } });
  await end(api, job, { item: typedValues(bson) });
  return rawJob(jobs, job._id);
}

test('labels and results of the site\'s own driver keep their types, as stock stores them', async () => {
  const siteBson = siteDriver();
  const stock = await storedBy(stockApi(site), siteBson);
  const native = await storedBy(jobs, siteBson);
  assert.deepEqual(bsonShape(native.labels), bsonShape(stock.labels));
  assert.deepEqual(bsonShape(native.results), bsonShape(stock.results));
  assert.deepEqual(bsonShape(native.results.item), [
    [ 'oid', 'ObjectId' ], [ 'decimal', 'Decimal128' ], [ 'long', 'Long' ], [ 'binary', 'Binary' ],
    [ 'nested', [ [ [ 'at', 'Date' ], [ 'n', 'Int32' ], [ 'x', 'Double' ] ] ] ]
  ]);
});

test('values of the MongoDB 3.x driver\'s bson 1.x are stored with the same types and values', async () => {
  const siteBson = siteDriver();
  const stock = await storedBy(stockApi(site), siteBson);
  const native = await storedBy(jobs, require('bson-v1'));
  assert.deepEqual(bsonShape(native.labels), bsonShape(stock.labels));
  assert.deepEqual(bsonShape(native.results), bsonShape(stock.results));
  assert.equal(native.results.item.oid.toHexString(), '5f1d7c4e9b1e8a3d2c4b6a81');
  assert.equal(native.results.item.decimal.toString(), '1234.5678');
  assert.equal(native.results.item.long.toString(), '9007199254740991');
  assert.deepEqual([ ...native.results.item.binary.buffer ], [ 1, 2, 3, 250 ]);
});

test('results of run gathered in Rust keep bson 1.x types too', async () => {
  const reply = await client.post('/modules/job-fixtures/batch', { ids: ids(3), job: true, mode: 'typedV1' });
  const job = await waitForEnd(jobs, reply.body.jobId);
  assert.equal(job.status, 'completed');
  const raw = await rawJob(jobs, job._id);
  assert.deepEqual(bsonShape(raw.results.id1), [ [ 'oid', 'ObjectId' ], [ 'long', 'Long' ] ]);
});

test('failed item ids made by the site\'s own driver keep their types and values', async () => {
  const values = typedValues(siteDriver());
  const kinds = [ 'oid', 'decimal', 'long', 'binary' ];
  const job = await start(jobs, { labels: { title: 'Typed ids' } });
  for (const kind of kinds) {
    jobs.recordFailedItem(job, values[kind], new Error(`${kind} failed`));
  }
  await end(jobs, job, null);
  const raw = await rawJob(jobs, job._id);
  assert.deepEqual(raw.failedItems.map((item) => [ bsonShape(item.id), item.message ]), [
    [ 'ObjectId', 'oid failed' ], [ 'Decimal128', 'decimal failed' ], [ 'Long', 'long failed' ], [ 'Binary', 'binary failed' ]
  ]);
  assert.equal(raw.failedItems[0].id.toHexString(), '5f1d7c4e9b1e8a3d2c4b6a81');
  assert.equal(raw.failedItems[1].id.toString(), '1234.5678');
  assert.equal(raw.failedItems[2].id.toString(), '9007199254740991');
  assert.deepEqual([ ...raw.failedItems[3].id.buffer ], [ 1, 2, 3, 250 ]);
});
