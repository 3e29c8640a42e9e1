// `run` through a real route of a real site (CSRF, session, `apiResponder`): job mode, the
// legacy in-request mode, stop, and bad input.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootFixtureSite, waitUntil, waitForEnd, delay, ids, rawJob } = require('./helpers/jobs.js');
const { countDocuments } = require('./helpers/site.js');

let site;
let jobs;
let fixtures;
let client;

before(async () => {
  ({ site, jobs, fixtures, client } = await bootFixtureSite());
});

after(async () => {
  await site.stop();
});

async function batch(body) {
  fixtures.calls = [];
  const response = await client.post('/modules/job-fixtures/batch', body);
  assert.equal(response.status, 200);
  return response.body;
}

test('job mode answers { status: ok, jobId } and runs every item in order', async () => {
  const reply = await batch({ ids: ids(50), job: true });
  assert.deepEqual(Object.keys(reply), [ 'status', 'jobId' ]);
  assert.equal(reply.status, 'ok');
  const job = await waitForEnd(jobs, reply.jobId);
  assert.deepEqual(fixtures.calls.map((call) => call.id), ids(50));
  assert.equal(job.status, 'completed');
  assert.equal(job.good, 50);
  assert.equal(job.bad, 0);
  assert.equal(job.processed, 50);
  assert.equal(job.total, 50);
  assert.equal(job.canStop, true);
  assert.equal(job.canCancel, false);
  assert.deepEqual(job.labels, { title: 'Fixture batch' });
  assert.deepEqual(job.results.id7, { id: 'id7' });
});

test('failed items count as bad, keep the job going, and have no result', async () => {
  const reply = await batch({ ids: ids(20), job: true, mode: 'fail5' });
  const job = await waitForEnd(jobs, reply.jobId);
  assert.equal(job.status, 'completed');
  assert.equal(job.good, 18);
  assert.equal(job.bad, 2);
  assert.equal('id5' in job.results, false);
  assert.deepEqual(job.results.id6, { id: 'id6' });
});

test('change may return a promise: resolution is a result, rejection a bad item', async () => {
  const reply = await batch({ ids: ids(12), job: true, mode: 'promise' });
  const job = await waitForEnd(jobs, reply.jobId);
  assert.equal(job.good, 11);
  assert.equal(job.bad, 1);
  assert.deepEqual(job.results.id3, { id: 'id3', via: 'promise' });
});

test('a synchronous throw from change is a bad item, not a crash', async () => {
  const reply = await batch({ ids: ids(12), job: true, mode: 'throws' });
  const job = await waitForEnd(jobs, reply.jobId);
  assert.equal(job.status, 'completed');
  assert.equal(job.good, 11);
  assert.equal(job.bad, 1);
});

test('a second callback for the same item is ignored with a warning', async () => {
  const warnings = [];
  const original = site.apos.utils.warn;
  site.apos.utils.warn = (message) => warnings.push(String(message));
  try {
    const reply = await batch({ ids: ids(3), job: true, mode: 'twice' });
    const job = await waitForEnd(jobs, reply.jobId);
    assert.equal(job.good, 3);
    assert.equal(job.processed, 3);
    assert.deepEqual(job.results.id1, { id: 'id1' });
  } finally {
    site.apos.utils.warn = original;
  }
  assert.equal(warnings.length, 3);
  assert.match(warnings[0], /called back more than once/);
});

test('synchronous callbacks over 20,000 items neither overflow the stack nor lose counts', async () => {
  const reply = await batch({ ids: ids(20000), job: true, mode: 'sync' });
  const job = await waitForEnd(jobs, reply.jobId, { timeout: 60000 });
  assert.equal(job.good, 20000);
  assert.equal(job.processed, 20000);
});

test('with a timeout, an item that never calls back fails and the batch moves on', async () => {
  const reply = await batch({ ids: ids(8), job: true, mode: 'hang', timeout: 100 });
  const job = await waitForEnd(jobs, reply.jobId);
  assert.equal(job.status, 'completed');
  assert.equal(job.good, 7);
  assert.equal(job.bad, 1);
});

test('an exception in the batch loop fails the job rather than hang it or reach change\'s caller', async () => {
  const recordFailedItem = jobs.recordFailedItem;
  const error = site.apos.utils.error;
  const logged = [];
  jobs.recordFailedItem = () => {
    throw new Error('recording failed');
  };
  site.apos.utils.error = (...args) => logged.push(args.join(' '));
  try {
    // fail5 calls back from setImmediate (the loop resumes from the callback), throws at once.
    for (const mode of [ 'fail5', 'throws' ]) {
      const reply = await batch({ ids: ids(12), job: true, mode });
      const job = await waitForEnd(jobs, reply.jobId);
      assert.equal(job.status, 'failed', mode);
      assert.equal(fixtures.calls.length, 6, mode);
      assert.equal(job.good, 5, mode);
    }
  } finally {
    jobs.recordFailedItem = recordFailedItem;
    site.apos.utils.error = error;
  }
  assert.ok(logged.some((line) => /recording failed/.test(line)), logged.join('\n'));
});

test('concurrency runs that many items at once, started in order', async () => {
  fixtures.mostInFlight = 0;
  const reply = await batch({ ids: ids(40), job: true, mode: 'concurrent', concurrency: 4 });
  const job = await waitForEnd(jobs, reply.jobId);
  assert.equal(job.good, 40);
  assert.equal(fixtures.mostInFlight, 4);
  assert.deepEqual(fixtures.calls.map((call) => call.id), ids(40));
});

test('the default runs one item at a time', async () => {
  fixtures.mostInFlight = 0;
  const reply = await batch({ ids: ids(10), job: true, mode: 'concurrent' });
  await waitForEnd(jobs, reply.jobId);
  assert.equal(fixtures.mostInFlight, 1);
});

test('_id is preferred over ids', async () => {
  const reply = await batch({ _id: 'single', ids: ids(5), job: true });
  const job = await waitForEnd(jobs, reply.jobId);
  assert.deepEqual(fixtures.calls, [ { id: 'single' } ]);
  assert.equal(job.total, 1);
});

test('neither _id nor ids answers { status: invalid } and creates no job', async () => {
  const before = await countDocuments(jobs.db, {});
  assert.deepEqual(await batch({ job: true }), { status: 'invalid' });
  assert.equal(await countDocuments(jobs.db, {}), before);
});

test('ids are laundered as 2.x does: invalid ones dropped, duplicates kept, numbers passed through', async () => {
  const reply = await batch({ ids: [ 'a', 'a', 'b c', { $ne: null }, 7, '', 'z_9', [ 'x' ] ], job: true });
  const job = await waitForEnd(jobs, reply.jobId);
  assert.deepEqual(fixtures.calls.map((call) => call.id), [ 'a', 'a', 7, 'z_9' ]);
  assert.equal(job.total, 4);
  assert.equal(job.good, 4);
});

test('results keep the key order of 2.x\'s object, whether gathered in Rust or in an object', async () => {
  const rawKeys = async (jobId) => Object.keys((await rawJob(jobs, jobId)).results);
  const asObject = (list) => {
    const object = {};
    list.forEach((id) => { object[id] = { id }; });
    return object;
  };
  // Gathered range by range in Rust.
  const gathered = ids(3000).reverse();
  let job = await waitForEnd(jobs, (await batch({ ids: gathered, job: true, mode: 'sync' })).jobId);
  assert.deepEqual(await rawKeys(job._id), gathered);
  assert.deepEqual(job.results, asObject(gathered));
  // Repeated ids and array indexes: an object puts "3" and "7" first and keeps the first
  // place of "b"; these stay in an object.
  const tricky = [ 'b', 'a', 'b', '7', 'z', '3' ];
  job = await waitForEnd(jobs, (await batch({ ids: tricky, job: true, mode: 'sync' })).jobId);
  assert.deepEqual(await rawKeys(job._id), [ '3', '7', 'b', 'a', 'z' ]);
  assert.equal(job.good, 6);
});

test('a site that replaces good and bad still gets one call per item, as 2.x makes', async () => {
  const ownGood = jobs.good;
  const ownBad = jobs.bad;
  const calls = [];
  jobs.good = function(job, n) {
    calls.push([ 'good', n ]);
    return ownGood.apply(this, arguments);
  };
  jobs.bad = function(job, n) {
    calls.push([ 'bad', n ]);
    return ownBad.apply(this, arguments);
  };
  try {
    const reply = await batch({ ids: ids(40), job: true, mode: 'fail5' });
    const job = await waitForEnd(jobs, reply.jobId);
    assert.equal(calls.length, 40);
    assert.deepEqual(calls.filter(([ which ]) => which === 'bad'), [ [ 'bad', undefined ], [ 'bad', undefined ], [ 'bad', undefined ], [ 'bad', undefined ] ]);
    assert.ok(calls.every(([ , n ]) => n === undefined));
    assert.equal(job.good, 36);
    assert.equal(job.bad, 4);
  } finally {
    jobs.good = ownGood;
    jobs.bad = ownBad;
  }
});

test('a site that replaces end still gets the results object', async () => {
  const ownEnd = jobs.end;
  let seen;
  jobs.end = function(job, success, results, callback) {
    seen = results;
    return ownEnd.apply(this, arguments);
  };
  try {
    const reply = await batch({ ids: ids(30), job: true, mode: 'dated' });
    const job = await waitForEnd(jobs, reply.jobId);
    assert.equal(Object.keys(seen).length, 30);
    assert.deepEqual(seen.id4, { id: 'id4', at: new Date('2020-03-19T14:02:11.123Z'), n: 3, x: 1.5 });
    assert.deepEqual(job.results, seen);
  } finally {
    jobs.end = ownEnd;
  }
});

test('results that grow past 16 MB stop being kept: the job completes with results null, logged', async () => {
  const logged = [];
  const error = site.apos.utils.error;
  site.apos.utils.error = (...args) => logged.push(args.join(' '));
  try {
    const reply = await batch({ ids: ids(20), job: true, mode: 'big' });
    const job = await waitForEnd(jobs, reply.jobId, { timeout: 30000 });
    assert.equal(job.status, 'completed');
    assert.equal(job.good, 20);
    assert.equal(job.results, null);
    assert.ok(logged.some((line) => /results of job .* 16 MB/.test(line)), logged.join('\n'));
  } finally {
    site.apos.utils.error = error;
  }
});

test('ids that is not an array makes an empty job that completes at once', async () => {
  const reply = await batch({ ids: { $gt: '' }, job: true });
  const job = await waitForEnd(jobs, reply.jobId);
  assert.equal(job.status, 'completed');
  assert.equal(job.total, 0);
  assert.deepEqual(job.results, {});
  assert.deepEqual(fixtures.calls, []);
});

test('an operator object as _id calls change with undefined, as 2.x does', async () => {
  const reply = await batch({ _id: { $ne: null }, job: true });
  const job = await waitForEnd(jobs, reply.jobId);
  assert.deepEqual(fixtures.calls, [ { id: undefined } ]);
  assert.equal(job.processed, 1);
});

test('100,000 ids run to an exact finish', async () => {
  const reply = await batch({ ids: ids(100000), job: true });
  const job = await waitForEnd(jobs, reply.jobId, { timeout: 120000 });
  assert.equal(job.status, 'completed');
  assert.equal(job.processed, 100000);
  assert.equal(job.total, 100000);
  assert.equal(fixtures.calls.length, 100000);
});

test('stop mid-batch: the current item finishes, no further item starts, status stopped', async () => {
  const reply = await batch({ ids: ids(200), job: true, mode: 'slow', delay: 20 });
  // Mid-batch: some items are counted (200 items take 4 s).
  await waitUntil(async () => (await jobs.db.findOne({ _id: reply.jobId })).processed > 0, 10000, 'items were counted');
  const cancel = await client.post('/modules/apostrophe-jobs/cancel', { _id: reply.jobId });
  assert.deepEqual(cancel.body, { status: 'ok' });
  const job = await waitForEnd(jobs, reply.jobId);
  assert.equal(job.status, 'stopped');
  assert.equal(job.canceling, false);
  assert.equal('results' in job, false);
  assert.ok(job.processed > 0 && job.processed < 200, `processed ${job.processed}`);
  const calls = fixtures.calls.length;
  assert.equal(job.processed, calls, 'every started item finished and was counted');
  // Something that must not happen: watch for a while after the end, longer than an item.
  await delay(300);
  assert.equal(fixtures.calls.length, calls, 'no item starts after the stop');
  assert.equal((await jobs.db.findOne({ _id: reply.jobId })).processed, calls);
  assert.equal(jobs.liveJobs.has(reply.jobId), false);
});

test('legacy mode (no job flag) answers with every result once all succeed', async () => {
  const reply = await batch({ ids: [ 'a', 'b' ] });
  assert.deepEqual(reply, { status: 'ok', data: {}, results: { a: { id: 'a' }, b: { id: 'b' } } });
});

test('legacy mode with _id answers the first result as data', async () => {
  const reply = await batch({ _id: 'one' });
  assert.deepEqual(reply, { status: 'ok', data: { id: 'one' }, results: { one: { id: 'one' } } });
});

test('legacy mode stops at the first failure and answers an error (2.x hung)', async () => {
  const reply = await batch({ ids: ids(10), mode: 'fail5' });
  assert.deepEqual(reply, { status: 'error' });
  assert.equal(fixtures.calls.length, 6);
});
