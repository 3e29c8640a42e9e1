// Shared helpers of the suites: the test server's URI, reading job documents with their
// exact BSON types, polling for a condition, waiting for a job to end (and checking that it
// stays as it ended), and the stock 2.x API for comparisons.

const assert = require('node:assert/strict');
const { isDeepStrictEqual } = require('node:util');
const { MongoClient } = require('mongodb');

function testUri() {
  const uri = process.env.APOS_JOBS_TEST_URI;
  assert.ok(uri, 'APOS_JOBS_TEST_URI is not set: run the suites with `npm test`, which starts the test server');
  return uri;
}

// The document as stored: key order kept, numbers as Int32/Double/Long wrappers. Read with
// a driver client of its own, since the site's 2.x-emulating collection hides those options
// (and older releases' MongoDB 2.x driver has none of them).
async function rawJob(jobs, _id) {
  const client = await MongoClient.connect(jobs.apos.modules['apostrophe-db'].options.uri);
  try {
    return await client.db(jobs.apos.db.databaseName).collection(jobs.db.collectionName)
      .findOne({ _id }, { promoteValues: false });
  } finally {
    await client.close();
  }
}

// The BSON type tree of a value: what must match between a stock and a native document.
function bsonShape(value) {
  if (value === null) {
    return 'null';
  }
  if (value instanceof Date) {
    return 'Date';
  }
  if (Array.isArray(value)) {
    return value.map(bsonShape);
  }
  if (typeof value === 'object') {
    if (value._bsontype) {
      return value._bsontype;
    }
    return Object.keys(value).map((key) => [ key, bsonShape(value[key]) ]);
  }
  return typeof value;
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls `condition` (sync or async) every 50 ms until it returns something truthy, which it
// returns; fails saying what was awaited if that takes longer than `timeout` ms. Limits are
// generous on purpose: the suites run on small, loaded machines, and a poll costs nothing
// when the condition comes true early. A condition may throw to fail at once.
async function waitUntil(condition, timeout, what) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await condition();
    if (value) {
      return value;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeout} ms waiting until ${what}`);
    }
    await delay(50);
  }
}

// What may not change once a job document says `ended: true` (no count, status or results
// write lands after the end).
const FINAL_FIELDS = [ 'ended', 'status', 'good', 'bad', 'processed', 'results' ];
const SETTLE_READS = 3;
const SETTLE_MS = 300;

const describeValue = (value) => {
  const text = JSON.stringify(value);
  return text === undefined ? 'undefined' : (text.length > 80 ? `${text.slice(0, 80)}...` : text);
};

// Polls the job document until `ended`, then reads it a few more times over ~300 ms and
// fails if any of its final fields changed (a late write would show there); returns the
// document first seen ended.
async function waitForEnd(jobs, _id, { timeout = 60000 } = {}) {
  const deadline = Date.now() + timeout;
  let job;
  for (;;) {
    job = await jobs.db.findOne({ _id });
    if (job && job.ended) {
      break;
    }
    if (Date.now() >= deadline) {
      throw new Error(`job ${_id} did not end within ${timeout} ms`);
    }
    await delay(25);
  }
  for (let i = 0; i < SETTLE_READS; i++) {
    await delay(SETTLE_MS / SETTLE_READS);
    const later = await jobs.db.findOne({ _id });
    const changed = later
      ? FINAL_FIELDS.filter((key) => !isDeepStrictEqual(later[key], job[key]))
      : [ 'the whole document (it is gone)' ];
    if (changed.length) {
      throw new assert.AssertionError({
        message: `job ${_id} changed after ended: true: ` + changed.map((key) => (later
          ? `${key} ${describeValue(job[key])} -> ${describeValue(later[key])}`
          : key)).join(', ')
      });
    }
  }
  return job;
}

// The 2.x module's own API (from the Apostrophe release under test), bound to the same site and
// collection: writes documents exactly as stock 2.x does.
function stockApi(site) {
  const jobs = site.apos.modules['apostrophe-jobs'];
  const stock = {
    apos: site.apos,
    db: jobs.db,
    options: jobs.options,
    apiResponder: jobs.apiResponder,
    checkStop: () => {}
  };
  require('./apostrophe.js').requireFile('lib/modules/apostrophe-jobs/lib/api.js')(stock, stock.options);
  return stock;
}

// A site with this package and the job fixtures module, an admin, and a logged-in client:
// what most suites start from. Resolves `{ site, jobs, fixtures, client }`.
async function bootFixtureSite(modules = {}) {
  const { bootSite, createAdmin } = require('./site.js');
  const site = await bootSite({
    uri: testUri(),
    native: true,
    modules: { 'job-fixtures': require('../fixtures/job-fixtures.js'), ...modules }
  });
  await createAdmin(site.apos, { username: 'admin', password: 'admin-password' });
  return {
    site,
    jobs: site.apos.modules['apostrophe-jobs'],
    fixtures: site.apos.modules['job-fixtures'],
    client: await site.login('admin', 'admin-password')
  };
}

// Ids `id0`, `id1`, … as a browser would post them.
const ids = (n, prefix = 'id') => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

module.exports = { testUri, rawJob, bsonShape, waitUntil, waitForEnd, stockApi, delay, bootFixtureSite, ids };
