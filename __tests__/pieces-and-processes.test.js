// The package in a real Apostrophe 2 site as its users meet it: a pieces batch operation
// over 200 pieces through the real route (CSRF, session), polled through `progress` like the
// browser modal; and a stop requested through one site process while the job runs in
// another, both on one database.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootSite, createAdmin, insertArticles, countDocuments } = require('./helpers/site.js');
const { spawnSite } = require('./helpers/site-process.js');
const { testUri, waitUntil, waitForEnd, delay } = require('./helpers/jobs.js');

const shortName = `ajn-test-shared-${process.pid}`;
let owner;
let other;
let client;

before(async () => {
  owner = await bootSite({
    uri: testUri(),
    native: true,
    shortName,
    modules: { 'job-fixtures': require('./fixtures/job-fixtures.js') }
  });
  await createAdmin(owner.apos, { username: 'admin', password: 'admin-password' });
  client = await owner.login('admin', 'admin-password');
  other = await spawnSite({ uri: testUri(), native: true, shortName });
});

after(async () => {
  await other.stop();
  await owner.stop({ dropDatabase: true });
});

async function pollProgress(httpClient, jobId, timeout = 120000) {
  const deadline = Date.now() + timeout;
  const seen = [];
  while (Date.now() < deadline) {
    const reply = await httpClient.post('/modules/apostrophe-jobs/progress', { _id: jobId });
    assert.equal(reply.body.status, 'ok');
    seen.push(reply.body.job);
    if (reply.body.job.ended) {
      return { job: reply.body.job, html: reply.body.html, seen };
    }
    await delay(100);
  }
  throw new Error(`job ${jobId} did not end within ${timeout} ms`);
}

test('a pieces batch publish over 200 pieces completes with exact counts through the real route', async () => {
  const articles = await insertArticles(owner.apos, 200);
  const ids = articles.map((article) => article._id);
  const started = await client.post('/modules/test-articles/publish', { ids, job: true });
  assert.deepEqual(Object.keys(started.body), [ 'status', 'jobId' ]);
  assert.equal(started.body.status, 'ok');
  const { job, html } = await pollProgress(client, started.body.jobId);
  assert.equal(job.status, 'completed');
  assert.equal(job.good, 200);
  assert.equal(job.bad, 0);
  assert.equal(job.processed, 200);
  assert.equal(job.total, 200);
  assert.equal(job.percentage, '100.00');
  assert.equal(job.labels.title, 'Publish');
  assert.equal(Object.keys(job.results).length, 200);
  assert.equal(job.results[ids[0]]._id, ids[0], 'results hold the updated pieces, as in 2.x');
  assert.match(html, /Completed/);
  const published = await countDocuments(owner.apos.docs.db, { _id: { $in: ids }, published: true });
  assert.equal(published, 200);
});

test('a batch over missing pieces counts them as errors', async () => {
  const started = await client.post('/modules/test-articles/publish', { ids: [ 'nosuchpiece1', 'nosuchpiece2' ], job: true });
  const { job } = await pollProgress(client, started.body.jobId);
  assert.equal(job.status, 'completed');
  assert.equal(job.bad, 2);
  assert.deepEqual(job.results, {});
});

test('a stop requested through another site process stops the job in its owner', async () => {
  const otherClient = await other.login('admin', 'admin-password');
  const started = await client.post('/modules/job-fixtures/batch', { ids: Array.from({ length: 300 }, (_, i) => `x${i}`), job: true, mode: 'slow', delay: 20 });
  const jobId = started.body.jobId;
  const jobs = owner.apos.modules['apostrophe-jobs'];
  // Mid-batch: the owner has counted items (300 items take 6 s).
  await waitUntil(async () => (await jobs.db.findOne({ _id: jobId })).processed > 0, 10000, 'the owner counted items');
  const cancel = await otherClient.post('/modules/apostrophe-jobs/cancel', { _id: jobId });
  assert.deepEqual(cancel.body, { status: 'ok' });
  const { job, html, seen } = await pollProgress(otherClient, jobId);
  assert.equal(job.status, 'stopped');
  assert.equal(job.canceling, false);
  assert.ok(job.processed > 0 && job.processed < 300, `processed ${job.processed}`);
  assert.match(html, /Stopped/);
  assert.ok(seen.every((state) => state.processed <= job.processed));
  const calls = owner.apos.modules['job-fixtures'].calls.length;
  // Something that must not happen: the job has ended (seen above); watch for a while,
  // longer than an item.
  await delay(300);
  assert.equal(owner.apos.modules['job-fixtures'].calls.length, calls, 'the owner starts no item after the stop');
  assert.equal((await waitForEnd(jobs, jobId)).processed, calls);
});
