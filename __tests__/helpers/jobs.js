// Shared helpers of the suites: the test server's URI, reading job documents with their
// exact BSON types, waiting for a job to end, and the stock 2.x API for comparisons.

const assert = require('node:assert/strict');
const { MongoClient } = require('mongodb');

function testUri() {
  const uri = process.env.APOS_JOBS_TEST_URI;
  assert.ok(uri, 'APOS_JOBS_TEST_URI is not set: run the suites with `npm test`, which starts the test server');
  return uri;
}

// The document as stored: key order kept, numbers as Int32/Double/Long wrappers. Read with
// a driver client of its own, since the site's 2.x-emulating collection hides those options.
async function rawJob(jobs, _id) {
  const client = await MongoClient.connect(jobs.db.s.db.client.s.url);
  try {
    return await client.db(jobs.db.dbName).collection(jobs.db.collectionName)
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

// Polls the job document until `ended`, then waits a little more so any late write would
// show; returns the final document.
async function waitForEnd(jobs, _id, { timeout = 60000 } = {}) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const job = await jobs.db.findOne({ _id });
    if (job && job.ended) {
      return job;
    }
    await delay(25);
  }
  throw new Error(`job ${_id} did not end within ${timeout} ms`);
}

// The 2.x module's own API (from node_modules/apostrophe), bound to the same site and
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
  require('apostrophe/lib/modules/apostrophe-jobs/lib/api.js')(stock, stock.options);
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

module.exports = { testUri, rawJob, bsonShape, waitForEnd, stockApi, delay, bootFixtureSite, ids };
