// The server API (`start`, `good`, `bad`, `setTotal`, `end`) on a real Apostrophe 2 site with
// this package enabled, compared with the stock 2.x module writing to the same collection.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { MongoClient } = require('mongodb');
const { bootSite } = require('./helpers/site.js');
const { testUri, rawJob, bsonShape, waitUntil, waitForEnd, stockApi } = require('./helpers/jobs.js');

let site;
let jobs;
let stock;

// The fields of a 2.x job document, in their order; this package adds its own after them.
const STOCK_FIELDS = [ '_id', 'good', 'bad', 'processed', 'status', 'ended', 'canceling', 'labels', 'when', 'canCancel', 'canStop' ];
const pick = (document, keys) => Object.fromEntries(keys.filter((key) => key in document).map((key) => [ key, document[key] ]));

const startJob = (api, options) => new Promise((resolve, reject) => {
  api.start(options, (err, job) => (err ? reject(err) : resolve(job)));
});
const endJob = (api, ...args) => new Promise((resolve, reject) => {
  api.end(...args, (err) => (err ? reject(err) : resolve()));
});

before(async () => {
  site = await bootSite({ uri: testUri(), native: true });
  jobs = site.apos.modules['apostrophe-jobs'];
  stock = stockApi(site);
});

after(async () => {
  await site.stop();
});

test('the package replaced the core methods and self.db is the site driver collection', () => {
  assert.equal(typeof jobs.engine, 'object');
  assert.equal(jobs.db.collectionName, 'aposJobs');
  assert.equal(typeof jobs.db.findOne, 'function');
});

test('start inserts the 2.x document: same keys, order and BSON types as stock', async () => {
  const labels = { title: 'Publish', when: new Date('2020-03-19T14:02:11.123Z'), n: 3, x: 1.5 };
  const mine = await startJob(jobs, { labels });
  const theirs = await startJob(stock, { labels });
  const [ myDoc, theirDoc ] = [ await rawJob(jobs, mine._id), await rawJob(jobs, theirs._id) ];
  assert.deepEqual(bsonShape(pick(myDoc, STOCK_FIELDS)), bsonShape(theirDoc));
  assert.deepEqual(Object.keys(myDoc), [ ...STOCK_FIELDS, 'workerId', 'heartbeatAt', 'process' ]);
  assert.ok(myDoc.heartbeatAt instanceof Date);
  assert.equal(myDoc.process.hostname, require('os').hostname());
  assert.equal(Number(myDoc.process.pid), process.pid);
  assert.match(mine._id, /^[0-9a-f]{32}$/);
  assert.equal(site.apos.launder.id(mine._id), mine._id);
  assert.ok(myDoc.labels.when instanceof Date, 'a Date inside labels stays a Date');
  assert.deepEqual([ myDoc.canStop, myDoc.canCancel ], [ theirDoc.canStop, theirDoc.canCancel ]);
  assert.ok(Math.abs(myDoc.when - Date.now()) < 60000);
  await endJob(jobs, mine, true);
});

test('the handle holds the id and the exact options object', async () => {
  const options = { labels: { title: 'x' } };
  const job = await startJob(jobs, options);
  assert.equal(job.options, options);
  assert.equal(typeof job._id, 'string');
  await endJob(jobs, job, true);
});

test('good, bad and setTotal end up as the stock module writes them, exact at end', async () => {
  const mine = await startJob(jobs, { labels: { title: 'Counts' } });
  const theirs = await startJob(stock, { labels: { title: 'Counts' } });
  for (const api of [ jobs, stock ]) {
    const job = api === jobs ? mine : theirs;
    api.setTotal(job, 10);
    api.good(job);
    api.good(job, 3);
    api.good(job, 0);
    api.bad(job);
    api.bad(job, 2);
  }
  // Stock writes are fire-and-forget: wait until they have all landed; ours are exact as soon
  // as end returns.
  await waitUntil(async () => {
    const theirCounts = await jobs.db.findOne({ _id: theirs._id });
    return theirCounts.good === 4 && theirCounts.bad === 3 && theirCounts.processed === 7 && theirCounts.total === 10;
  }, 10000, 'the stock module\'s counts landed');
  await endJob(jobs, mine, true, { a: { at: new Date(0), n: 1 } });
  await endJob(stock, theirs, true, { a: { at: new Date(0), n: 1 } });
  const [ myDoc, theirDoc ] = [ await rawJob(jobs, mine._id), await rawJob(jobs, theirs._id) ];
  assert.deepEqual(bsonShape(pick(myDoc, [ ...STOCK_FIELDS, 'total', 'results' ])), bsonShape(theirDoc));
  assert.deepEqual(Object.keys(myDoc).slice(-6), [ 'workerId', 'heartbeatAt', 'process', 'total', 'results', 'endedAt' ]);
  assert.ok(myDoc.endedAt instanceof Date);
  const plain = await jobs.db.findOne({ _id: mine._id });
  assert.equal(plain.good, 4);
  assert.equal(plain.bad, 3);
  assert.equal(plain.processed, 7);
  assert.equal(plain.total, 10);
  assert.ok(plain.results.a.at instanceof Date);
});

test('counts are exact the moment ended is true, with far fewer writes than items', async () => {
  // The Rust engine writes through a driver of its own, which no client of the test can
  // monitor: count the writes with the server's own counters instead. Updates, plus commands
  // (MongoDB counts findAndModify, which the counts of stoppable jobs use, as a command), plus
  // inserts. They also see other clients' traffic (driver monitoring, the site's sessions);
  // suites run one at a time (`npm test`), and a job of 5,005 items leaves plenty of margin.
  const client = await MongoClient.connect(testUri());
  try {
    const counters = async () => {
      const { opcounters } = await client.db().admin().command({ serverStatus: 1 });
      assert.ok(opcounters && [ 'insert', 'update', 'command' ].every((key) => Number.isFinite(Number(opcounters[key]))),
        `the server reports opcounters: ${JSON.stringify(opcounters)}`);
      return {
        documentWrites: Number(opcounters.insert) + Number(opcounters.update),
        writes: Number(opcounters.insert) + Number(opcounters.update) + Number(opcounters.command)
      };
    };
    const before = await counters();
    const job = await startJob(jobs, { labels: {} });
    for (let i = 0; i < 5000; i++) {
      jobs.good(job);
    }
    jobs.bad(job, 5);
    await endJob(jobs, job, true);
    const doc = await jobs.db.findOne({ _id: job._id });
    const after = await counters();
    assert.equal(doc.good, 5000);
    assert.equal(doc.bad, 5);
    assert.equal(doc.processed, 5005);
    // The counters see this engine's writes: at least the start and the end.
    assert.ok(after.documentWrites - before.documentWrites >= 2, `insert+update counters moved by ${after.documentWrites - before.documentWrites}`);
    const writes = after.writes - before.writes;
    assert.ok(writes < 5005 / 10, `${writes} writes (and commands) for 5,005 items`);
  } finally {
    await client.close();
  }
});

test('setTotal stores any value verbatim', async () => {
  const job = await startJob(jobs, {});
  jobs.setTotal(job, '12');
  await endJob(jobs, job, true);
  assert.equal((await jobs.db.findOne({ _id: job._id })).total, '12');
});

test('a count that is not a number is logged and ignored', async () => {
  const job = await startJob(jobs, {});
  const logged = [];
  const original = site.apos.utils.error;
  site.apos.utils.error = (message) => logged.push(String(message));
  try {
    jobs.good(job, 'three');
    jobs.bad(job, null);
  } finally {
    site.apos.utils.error = original;
  }
  await endJob(jobs, job, true);
  const doc = await jobs.db.findOne({ _id: job._id });
  assert.equal(doc.processed, 0);
  assert.equal(logged.length, 2);
  assert.match(logged[0], /good\(job, n\) needs a finite number for n, not string; nothing was counted/);
});

test('end(job, true, results, cb) stores results and marks the handle ended', async () => {
  const job = await startJob(jobs, { stop: () => {} });
  await endJob(jobs, job, true, { x: 1 });
  assert.equal(job.ended, true);
  const doc = await jobs.db.findOne({ _id: job._id });
  assert.equal(doc.status, 'completed');
  assert.equal(doc.ended, true);
  assert.equal(doc.canceling, false);
  assert.deepEqual(doc.results, { x: 1 });
  assert.equal(jobs.liveJobs.has(job._id), false);
});

test('end(job, false, cb) fails the job with results null', async () => {
  const job = await startJob(jobs, {});
  await endJob(jobs, job, false);
  const doc = await jobs.db.findOne({ _id: job._id });
  assert.equal(doc.status, 'failed');
  assert.equal(doc.results, null);
  assert.ok('results' in doc);
});

test('undefined values in results are stored as null, as the stock module stores them', async () => {
  const job = await startJob(jobs, {});
  await jobs.end(job, true, { a1: undefined, a2: { b: undefined } });
  assert.deepEqual((await jobs.db.findOne({ _id: job._id })).results, { a1: null, a2: { b: null } });
});

test('end(job, true) without a callback returns a promise', async () => {
  const job = await startJob(jobs, {});
  const returned = jobs.end(job, true);
  assert.equal(typeof returned.then, 'function');
  await returned;
  assert.equal((await jobs.db.findOne({ _id: job._id })).status, 'completed');
});

test('end(job, true, results) without a callback keeps the results (2.x dropped them)', async () => {
  const job = await startJob(jobs, {});
  await jobs.end(job, true, { kept: true });
  assert.deepEqual((await jobs.db.findOne({ _id: job._id })).results, { kept: true });
});

test('results that cannot be stored are logged and the job still completes', async () => {
  const job = await startJob(jobs, {});
  const circular = {};
  circular.self = circular;
  const logged = [];
  const original = site.apos.utils.error;
  site.apos.utils.error = (message) => logged.push(String(message));
  try {
    await jobs.end(job, true, circular);
  } finally {
    site.apos.utils.error = original;
  }
  const doc = await waitForEnd(jobs, job._id);
  assert.equal(doc.status, 'completed');
  assert.equal(doc.results, null);
  assert.match(logged.join('\n'), /cannot be stored/);
});

test('a stop request written by the cancel route reaches the stop hook, and its acknowledgement writes stopped', async () => {
  let hookJob;
  const job = await startJob(jobs, {
    stop: (jobDoc, acknowledge) => {
      hookJob = jobDoc;
      setTimeout(acknowledge, 10);
    }
  });
  jobs.good(job, 2);
  await jobs.engine.requestCancel(job._id);
  const doc = await waitForEnd(jobs, job._id);
  assert.equal(doc.status, 'stopped');
  assert.equal(doc.canceling, false);
  assert.equal(doc.good, 2);
  assert.equal('results' in doc, false);
  assert.equal(hookJob._id, job._id);
  assert.ok(hookJob.when instanceof Date, 'the hook receives the document with its types');
  assert.equal(job.ended, true);
  assert.equal(jobs.liveJobs.has(job._id), false);
});

test('a hook that throws fails the job instead of crashing', async () => {
  const job = await startJob(jobs, {
    cancel: () => {
      throw new Error('hook broke');
    }
  });
  const logged = [];
  const original = site.apos.utils.error;
  site.apos.utils.error = (message) => logged.push(String(message));
  try {
    await jobs.engine.requestCancel(job._id);
    const doc = await waitForEnd(jobs, job._id);
    assert.equal(doc.status, 'failed');
  } finally {
    site.apos.utils.error = original;
  }
  assert.match(logged.join('\n'), /hook broke/);
});

test('percentage follows JavaScript toFixed(2), ties rounded up', () => {
  assert.equal(jobs.percentage(1, 800), '0.13');
  assert.equal(jobs.percentage(3, 10), '30.00');
  assert.equal(jobs.percentage(2, 3), '66.67');
  assert.equal(jobs.percentage(11, 10), '110.00');
  assert.equal(jobs.percentage(1, 'abc'), 'NaN');
  for (let processed = 0; processed <= 1000; processed += 7) {
    for (const total of [ 3, 7, 800, 999, 1000, 1024 ]) {
      assert.equal(jobs.percentage(processed, total), (processed / total * 100).toFixed(2), `${processed}/${total}`);
    }
  }
});
