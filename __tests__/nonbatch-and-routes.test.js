// `runNonBatch` and the three routes (`progress`, `cancel`, `modal`) through real HTTP
// requests to a real site.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootFixtureSite, waitUntil, waitForEnd, delay } = require('./helpers/jobs.js');
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

async function work(body) {
  const response = await client.post('/modules/job-fixtures/nonbatch', body);
  assert.equal(response.body.status, 'ok');
  return response.body.jobId;
}

// The work function has done (and counted) some work.
function counted(jobId) {
  return waitUntil(async () => (await jobs.db.findOne({ _id: jobId })).processed > 0, 10000, `job ${jobId} counted work`);
}

async function progress(_id) {
  const response = await client.post('/modules/apostrophe-jobs/progress', { _id });
  assert.equal(response.status, 200);
  return response.body;
}

test('runNonBatch with a callback: counts (0 counts as 1), total, results, completed', async () => {
  const job = await waitForEnd(jobs, await work({ mode: 'callback' }));
  assert.equal(job.status, 'completed');
  assert.equal(job.good, 3);
  assert.equal(job.bad, 1);
  assert.equal(job.total, 4);
  assert.deepEqual(job.results, { url: '/download/1' });
  assert.equal(job.canStop, false);
  assert.equal(job.canCancel, false);
});

test('runNonBatch with a promise: resolution completes the job', async () => {
  const job = await waitForEnd(jobs, await work({ mode: 'promise' }));
  assert.equal(job.status, 'completed');
  assert.equal(job.good, 2);
  assert.deepEqual(job.results, { via: 'promise' });
});

test('runNonBatch with a promise: rejection fails the job with results null', async () => {
  const job = await waitForEnd(jobs, await work({ mode: 'rejects' }));
  assert.equal(job.status, 'failed');
  assert.equal(job.good, 1);
  assert.equal(job.results, null);
});

test('runNonBatch: a synchronous throw fails the job instead of crashing', async () => {
  const job = await waitForEnd(jobs, await work({ mode: 'throws' }));
  assert.equal(job.status, 'failed');
});

test('runNonBatch with canCancel: Cancel undoes the work and ends canceled, even for a promise-returning work function', async () => {
  fixtures.undone = [];
  const jobId = await work({ mode: 'cancelable', canCancel: true });
  await counted(jobId);
  assert.deepEqual((await client.post('/modules/apostrophe-jobs/cancel', { _id: jobId })).body, { status: 'ok' });
  const job = await waitForEnd(jobs, jobId);
  assert.equal(job.status, 'canceled');
  assert.equal(job.canCancel, true);
  assert.equal(job.canceling, false);
  assert.ok(fixtures.undone.length > 0);
  assert.equal(fixtures.undone.length, job.good, 'everything done was undone');
  // The work function's promise resolved after the acknowledgement: it must not overwrite.
  // Something that must not happen: watch the ended job for a while.
  await delay(300);
  assert.equal((await jobs.db.findOne({ _id: jobId })).status, 'canceled');
});

test('runNonBatch with canStop: Stop ends stopped', async () => {
  const jobId = await work({ mode: 'cancelable', canStop: true });
  await counted(jobId);
  await client.post('/modules/apostrophe-jobs/cancel', { _id: jobId });
  const job = await waitForEnd(jobs, jobId);
  assert.equal(job.status, 'stopped');
  assert.equal(job.canStop, true);
});

test('runNonBatch: an acknowledgement with an error fails the job', async () => {
  const jobId = await work({ mode: 'cancelable', canCancel: true, failUndo: true });
  await counted(jobId);
  await client.post('/modules/apostrophe-jobs/cancel', { _id: jobId });
  const job = await waitForEnd(jobs, jobId);
  assert.equal(job.status, 'failed');
});

test('isCanceling is always false for a job that can neither stop nor cancel', async () => {
  const jobId = await work({ mode: 'cancelable' });
  await client.post('/modules/apostrophe-jobs/cancel', { _id: jobId });
  assert.equal((await jobs.db.findOne({ _id: jobId })).canceling, true);
  // The work function calls what isCanceling returns as soon as it is truthy: had it been,
  // the job would have stopped early (or thrown calling `false`).
  const job = await waitForEnd(jobs, jobId);
  assert.equal(job.status, 'completed');
  assert.equal(job.good, 300);
});

test('progress answers the stored document, a percentage and the rendered fragment', async () => {
  const jobId = await work({ mode: 'callback' });
  await waitForEnd(jobs, jobId);
  const reply = await progress(jobId);
  assert.deepEqual(Object.keys(reply), [ 'status', 'job', 'html' ]);
  assert.equal(reply.status, 'ok');
  assert.deepEqual(Object.keys(reply.job), [
    '_id', 'good', 'bad', 'processed', 'status', 'ended', 'canceling', 'labels', 'when', 'canCancel', 'canStop',
    'userId', 'workerId', 'heartbeatAt', 'process', 'total', 'results', 'endedAt', 'percentage'
  ]);
  assert.equal(reply.job.percentage, '100.00');
  assert.match(reply.job.when, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.match(reply.html, /<h3[^>]*>\s*Completed\s*<\/h3>/);
  assert.match(reply.html, /data-apos-progress-indicator\s+style="width: 100.00%"/);
  assert.match(reply.html, /class="apos-job-results"/);
});

test('progress of 1 of 800 shows 0.13 %, as JavaScript rounds it', async () => {
  const job = await new Promise((resolve, reject) => jobs.start({}, (err, job) => (err ? reject(err) : resolve(job))));
  jobs.setTotal(job, 800);
  jobs.good(job);
  // The total is read from the document (the count, live, from the engine).
  await waitUntil(async () => (await jobs.db.findOne({ _id: job._id })).total === 800, 10000, 'the total was written');
  const reply = await progress(job._id);
  assert.equal(reply.job.percentage, '0.13');
  assert.match(reply.html, /In Progress\.\.\./);
  await jobs.end(job, true);
});

test('progress shows the counts not written yet, in the process that runs the job', async () => {
  // The watcher's tick (which writes counts of slow items) is a minute away here.
  const other = await bootFixtureSite({ 'apostrophe-jobs': { watchInterval: 60000 } });
  try {
    const job = await new Promise((resolve, reject) => other.jobs.start({}, (err, job) => (err ? reject(err) : resolve(job))));
    other.jobs.setTotal(job, 20);
    await waitUntil(async () => (await other.jobs.db.findOne({ _id: job._id })).total === 20, 10000, 'the total was written');
    for (let i = 0; i < 5; i++) {
      other.jobs.good(job);
    }
    // Something that must not happen: watch for a while (several flush intervals of 100 ms)
    // that the five counts are not written.
    await delay(400);
    const stored = await other.jobs.db.findOne({ _id: job._id });
    assert.equal(stored.total, 20);
    assert.equal(stored.good, 0, 'five items are not worth a write before the tick');
    const response = await other.client.post('/modules/apostrophe-jobs/progress', { _id: job._id });
    assert.equal(response.body.job.good, 5);
    assert.equal(response.body.job.processed, 5);
    assert.equal(response.body.job.percentage, '25.00');
    await other.jobs.end(job, true);
    assert.equal((await other.jobs.db.findOne({ _id: job._id })).good, 5);
  } finally {
    await other.site.stop();
  }
});

test('progress without a total has percentage 0 (a number) and no bar', async () => {
  const job = await new Promise((resolve, reject) => jobs.start({}, (err, job) => (err ? reject(err) : resolve(job))));
  const reply = await progress(job._id);
  assert.strictEqual(reply.job.percentage, 0);
  assert.doesNotMatch(reply.html, /apos-job-progress-indicator/);
  await jobs.end(job, true);
});

test('progress of a missing job answers notfound and ended, so the modal can close', async () => {
  const reply = await progress('nosuchjob');
  assert.deepEqual(reply.job, { notfound: true, ended: true });
  assert.match(reply.html, /The job no longer exists/);
});

test('an operator object as _id on the routes is laundered away', async () => {
  const reply = await progress({ $ne: null });
  assert.deepEqual(reply.job, { notfound: true, ended: true });
  const cancel = await client.post('/modules/apostrophe-jobs/cancel', { _id: { $ne: null } });
  assert.deepEqual(cancel.body, { status: 'ok' });
  assert.equal(await countDocuments(jobs.db, { canceling: true, ended: true }), 0);
  const modal = await client.post('/modules/apostrophe-jobs/modal', { _id: { $gt: '' } });
  assert.equal(modal.status, 200);
  assert.match(modal.body, /Progress/);
});

test('cancel on an ended job leaves it alone (no Stopping... afterwards)', async () => {
  const jobId = await work({ mode: 'callback' });
  await waitForEnd(jobs, jobId);
  assert.deepEqual((await client.post('/modules/apostrophe-jobs/cancel', { _id: jobId })).body, { status: 'ok' });
  const reply = await progress(jobId);
  assert.equal(reply.job.canceling, false);
  assert.match(reply.html, /Completed/);
});

test('cancel of an unknown id answers ok, as 2.x does', async () => {
  assert.deepEqual((await client.post('/modules/apostrophe-jobs/cancel', { _id: 'nosuchjob' })).body, { status: 'ok' });
});

test('modal renders the core shell with the button hooks for the job', async () => {
  const stoppable = await new Promise((resolve, reject) => jobs.start({ labels: { title: 'My Title' }, stop: () => {} }, (err, job) => (err ? reject(err) : resolve(job))));
  const html = (await client.post('/modules/apostrophe-jobs/modal', { _id: stoppable._id })).body;
  assert.match(html, /apos-job-modal/);
  assert.match(html, /My Title/);
  assert.match(html, /data-apos-job-stop/);
  assert.match(html, /data-apos-job-cancel/);
  assert.match(html, /data-apos-job-done/);
  assert.match(html, /data-apos-job-progress-container/);
  await jobs.end(stoppable, true);
  const cancelable = await new Promise((resolve, reject) => jobs.start({ cancel: () => {} }, (err, job) => (err ? reject(err) : resolve(job))));
  const cancelHtml = (await client.post('/modules/apostrophe-jobs/modal', { _id: cancelable._id })).body;
  assert.match(cancelHtml, />\s*Progress\s*</);
  assert.doesNotMatch(cancelHtml, /data-apos-job-stop/);
  assert.match(cancelHtml, /data-apos-job-cancel/);
  await jobs.end(cancelable, true);
});
