'use strict';

// The jobs dashboard's server side over real HTTP (the browser side is dashboard.test.js):
// what `run` records for a retry, the exact items a retry or resume runs, who may use the
// dashboard, deleting, and that the 2.x replies carry none of the dashboard's bulky fields.
//
//   node --test __tests__/dashboard-routes.test.js   (APOS_JOBS_TEST_URI: a MongoDB server)

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { createUser } = require('./helpers/site');
const { bootFixtureSite, waitForEnd, waitUntil, ids } = require('./helpers/jobs');

let site;
let jobs;
let admin;
let editor;

before(async () => {
  ({ site, jobs, client: admin } = await bootFixtureSite());
  await createUser(site.apos, { username: 'editor', password: 'editor-password', permissions: [ 'edit' ] });
  editor = await site.login('editor', 'editor-password');
});

after(async () => {
  if (site) await site.stop();
});

async function startBatch(client, body, headers) {
  const res = await client.post('/modules/job-fixtures/batch', Object.assign({ job: true }, body), headers ? { headers } : undefined);
  assert.equal(res.body.status, 'ok', JSON.stringify(res.body));
  return res.body.jobId;
}

function readJob(_id) {
  return jobs.db.findOne({ _id });
}

// Bit `index` of a bitmap the site's driver read (a BSON Binary).
function bit(binary, index) {
  const bytes = Buffer.from(binary.buffer);
  return (bytes[index >> 3] & (1 << (index & 7))) !== 0;
}

test('run() from a route records the route, the body without ids and the ids, and the items that finished and failed', async () => {
  const batchIds = ids(20);
  const jobId = await startBatch(admin, { ids: batchIds, mode: 'fail5', concurrency: 3, note: 'kept' });
  await waitForEnd(jobs, jobId);
  const job = await readJob(jobId);
  assert.deepEqual(job.rerun, {
    route: '/modules/job-fixtures/batch',
    body: JSON.stringify({ mode: 'fail5', concurrency: 3, note: 'kept' }),
    ids: batchIds
  });
  assert.equal(job.process.pid, process.pid);
  batchIds.forEach((id, index) => {
    assert.equal(bit(job.itemsFinished, index), true, `${id} finished`);
    assert.equal(bit(job.itemsFailed, index), id.endsWith('5'), `${id} failed or not`);
  });
});

test('the 2.x progress reply leaves the dashboard\'s large fields out (the stop hook\'s document: the Rust tests)', async () => {
  const jobId = await startBatch(admin, { ids: ids(3), mode: 'ok' });
  await waitForEnd(jobs, jobId);
  const res = await admin.post('/modules/apostrophe-jobs/progress', { _id: jobId });
  assert.equal(res.body.status, 'ok');
  for (const field of [ 'rerun', 'itemsFinished', 'itemsFailed' ]) {
    assert.equal(field in res.body.job, false, `progress has no ${field}`);
  }
  assert.equal(res.body.job.processed, 3);
});

test('retry failed items: the rerun route answers exactly the failed ids and the same route and body', async () => {
  const jobId = await startBatch(admin, { ids: ids(30), mode: 'fail5', concurrency: 4 });
  await waitForEnd(jobs, jobId);
  const res = await admin.post('/modules/apostrophe-jobs/rerun', { _id: jobId, items: 'failed' });
  assert.equal(res.body.status, 'ok', JSON.stringify(res.body));
  assert.equal(res.body.route, '/modules/job-fixtures/batch');
  assert.deepEqual(res.body.body, { mode: 'fail5', concurrency: 4 });
  assert.deepEqual(res.body.ids, [ 'id5', 'id15', 'id25' ]);
  // Posting it back as the browser does records which job it retries.
  const retryId = await startBatch(admin, Object.assign({}, res.body.body, { ids: res.body.ids, mode: 'ok' }), { [res.body.header]: res.body.retryOf });
  await waitForEnd(jobs, retryId);
  const retry = await readJob(retryId);
  assert.deepEqual(retry.retryOf, { jobId, items: 'failed' });
  assert.equal(retry.good, 3);
  const unfinished = await admin.post('/modules/apostrophe-jobs/rerun', { _id: jobId, items: 'unfinished' });
  assert.equal(unfinished.body.status, 'unavailable');
  assert.match(unfinished.body.message, /Every item of this job finished/);
});

test('resume after a stop: the unfinished items are exactly those without a finished bit, at concurrency 3', async () => {
  const batchIds = ids(60, 'slow');
  const jobId = await startBatch(admin, { ids: batchIds, mode: 'slow', delay: 50, concurrency: 3 });
  await waitUntil(async () => ((await readJob(jobId)).processed || 0) >= 9, 20000, 'nine items processed');
  await admin.post('/modules/apostrophe-jobs/cancel', { _id: jobId });
  await waitForEnd(jobs, jobId);
  const job = await readJob(jobId);
  assert.equal(job.status, 'stopped');
  const finished = batchIds.filter((id, index) => bit(job.itemsFinished, index));
  assert.equal(finished.length, job.processed, 'as many finished bits as processed items');
  const res = await admin.post('/modules/apostrophe-jobs/rerun', { _id: jobId, items: 'unfinished' });
  assert.equal(res.body.status, 'ok');
  assert.deepEqual(res.body.ids, batchIds.filter((id) => !finished.includes(id)));
  assert.equal(res.body.ids.length + job.processed, 60);
});

test('a request too large to record makes retry unavailable, saying why', async () => {
  const jobId = await startBatch(admin, { ids: ids(2), mode: 'fail5', padding: 'x'.repeat(5000) });
  await waitForEnd(jobs, jobId);
  const job = await readJob(jobId);
  assert.equal(job.rerun.route, '/modules/job-fixtures/batch');
  assert.match(job.rerun.unavailable, /at most 4 KB/);
  assert.equal(job.itemsFinished, undefined, 'no bitmaps without the ids');
  const res = await admin.post('/modules/apostrophe-jobs/rerun', { _id: jobId, items: 'failed' });
  assert.equal(res.body.status, 'unavailable');
  assert.match(res.body.message, /at most 4 KB/);
  // Ids past 1 MB are not recorded either (checked on the method: such a batch takes long).
  const many = Array.from({ length: 50000 }, (_, i) => `a-rather-long-item-id-${i}`);
  const described = jobs.describeRerun({ method: 'POST', originalUrl: '/x', body: {} }, many);
  assert.match(described.unavailable, /at most 1.0 MB of ids/);
  // A job not started from an HTTP route records nothing.
  assert.equal(jobs.describeRerun({ body: {} }, [ 'a' ]), undefined);
});

test('the list: newest first, filters, the user who started each job', async () => {
  const res = await admin.post('/modules/apostrophe-jobs/dashboard-list', { filter: 'completed' });
  assert.equal(res.body.status, 'ok');
  assert.ok(res.body.total >= 4);
  assert.match(res.body.html, /data-apos-jobs-status="completed"/);
  assert.doesNotMatch(res.body.html, /data-apos-jobs-status="stopped"/);
  assert.match(res.body.html, /data-apos-jobs-user>admin</);
  const stopped = await admin.post('/modules/apostrophe-jobs/dashboard-list', { filter: 'stopped' });
  assert.equal(stopped.body.total, 1);
  const all = await admin.post('/modules/apostrophe-jobs/dashboard-list', { filter: 'nonsense', page: 'x' });
  assert.equal(all.body.status, 'ok');
  assert.equal(all.body.page, 1);
  const times = [ ...all.body.html.matchAll(/data-apos-jobs-when>([^<]+)</g) ].map((m) => Date.parse(m[1]));
  assert.deepEqual(times, [ ...times ].sort((a, b) => b - a), 'newest first');
});

test('a job\'s page shows its failed items with their messages', async () => {
  const jobId = await startBatch(admin, { ids: ids(6), mode: 'fail5' });
  await waitForEnd(jobs, jobId);
  const res = await admin.post('/modules/apostrophe-jobs/dashboard-job', { _id: jobId });
  assert.equal(res.body.status, 'ok');
  assert.equal(res.body.ended, true);
  assert.match(res.body.html, /data-apos-jobs-failed-item="id5"/);
  assert.match(res.body.html, /ends in 5/);
  assert.match(res.body.html, /data-apos-jobs-action="retry-failed"/);
  const missing = await admin.post('/modules/apostrophe-jobs/dashboard-job', { _id: 'nope' });
  assert.equal(missing.body.status, 'notfound');
});

test('an editor without ownerOnly may not use the dashboard; anonymous visitors neither', async () => {
  for (const route of [ 'dashboard-list', 'dashboard-job', 'rerun', 'delete' ]) {
    const res = await editor.post(`/modules/apostrophe-jobs/${route}`, {});
    assert.equal(res.body.status, 'forbidden', route);
  }
  assert.equal((await editor.get('/modules/apostrophe-jobs/dashboard')).status, 403);
  const anonymous = await fetch(`${site.baseUrl}/modules/apostrophe-jobs/dashboard`);
  assert.equal(anonymous.status, 403);
  assert.match(await anonymous.text(), /for administrators/);
  assert.equal((await admin.get('/modules/apostrophe-jobs/dashboard')).status, 200);
});

test('delete: one ended job, never a running one; by age for admins', async () => {
  const ended = await startBatch(admin, { ids: ids(2), mode: 'ok' });
  await waitForEnd(jobs, ended);
  const running = await startBatch(admin, { ids: ids(40), mode: 'slow', delay: 100 });
  const refused = await admin.post('/modules/apostrophe-jobs/delete', { _id: running });
  assert.equal(refused.body.status, 'invalid');
  assert.match(refused.body.message, /stop it first/);
  assert.ok(await readJob(running));
  const deleted = await admin.post('/modules/apostrophe-jobs/delete', { _id: ended });
  assert.deepEqual(deleted.body, { status: 'ok', deleted: 1 });
  assert.ok(!(await readJob(ended)), "the ended job is gone");
  await admin.post('/modules/apostrophe-jobs/cancel', { _id: running });
  await waitForEnd(jobs, running);
  const bad = await admin.post('/modules/apostrophe-jobs/delete', { olderThanDays: 'soon' });
  assert.equal(bad.body.status, 'invalid');
  const none = await admin.post('/modules/apostrophe-jobs/delete', { olderThanDays: 30 });
  assert.deepEqual(none.body, { status: 'ok', deleted: 0 });
});

test('with ownerOnly, a user sees and deletes only their own jobs; only admins delete by age', async () => {
  jobs.options.ownerOnly = true;
  try {
    const theirs = await startBatch(editor, { ids: ids(2), mode: 'ok' });
    await waitForEnd(jobs, theirs);
    const list = await editor.post('/modules/apostrophe-jobs/dashboard-list', { filter: 'all' });
    assert.equal(list.body.status, 'ok');
    assert.equal(list.body.total, 1);
    assert.match(list.body.html, new RegExp(`data-apos-jobs-row="${theirs}"`));
    const adminJob = (await jobs.db.find({ userId: { $ne: (await readJob(theirs)).userId } }).limit(1).toArray())[0];
    assert.equal((await editor.post('/modules/apostrophe-jobs/dashboard-job', { _id: adminJob._id })).body.status, 'notfound');
    assert.equal((await editor.post('/modules/apostrophe-jobs/rerun', { _id: adminJob._id, items: 'failed' })).body.status, 'notfound');
    assert.equal((await editor.post('/modules/apostrophe-jobs/delete', { olderThanDays: 0 })).body.status, 'forbidden');
    const adminList = await admin.post('/modules/apostrophe-jobs/dashboard-list', { filter: 'all' });
    assert.ok(adminList.body.total > 1, 'admins see every job');
    assert.deepEqual((await editor.post('/modules/apostrophe-jobs/delete', { _id: theirs })).body, { status: 'ok', deleted: 1 });
  } finally {
    jobs.options.ownerOnly = false;
  }
});
