// A job's outcome is decided once, whatever the owning process's clock, freezes or hung
// work: real site processes on the real database server. One site runs in this process the
// whole time (it sweeps orphans every 1.5 s, like any other live process of the site); the
// owners run in child processes where a fault needs it (SIGSTOP, a skewed clock, kill -9,
// forced garbage collection).

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const { bootSite, createAdmin, countDocuments } = require('./helpers/site.js');
const { spawnSite } = require('./helpers/site-process.js');
const { testUri, waitForEnd, waitUntil, delay, ids } = require('./helpers/jobs.js');
const { faketimeLibrary } = require('../scripts/system-deps.js');

const FIXTURES = path.join(__dirname, 'fixtures', 'job-fixtures.js');
const ORPHAN_AFTER = 3000;
const STOP_GRACE = 2000;
// The sweeper looks every half bound.
const SWEEP_EVERY = ORPHAN_AFTER / 2;

let site;
let jobs;
let fixtures;
let admin;

before(async () => {
  site = await bootSite({
    uri: testUri(),
    native: true,
    modules: {
      'job-fixtures': require(FIXTURES),
      'apostrophe-jobs': { orphanAfter: ORPHAN_AFTER, stopGrace: STOP_GRACE }
    }
  });
  jobs = site.apos.modules['apostrophe-jobs'];
  fixtures = site.apos.modules['job-fixtures'];
  await createAdmin(site.apos, { username: 'admin', password: 'admin-password' });
  admin = await site.login('admin', 'admin-password');
});

after(async () => {
  await site.stop({ dropDatabase: true });
});

const readJob = (_id) => jobs.db.findOne({ _id });
const marks = () => site.apos.db.collection('jobFixtureMarks');

// A site process sharing this site's database, logging everything to its stderr (kept).
async function spawnOwner({ env = {}, execArgv = [] } = {}) {
  const owner = await spawnSite({
    uri: testUri(),
    native: true,
    verbose: true,
    shortName: site.shortName,
    moduleFiles: { 'job-fixtures': FIXTURES },
    modules: { 'apostrophe-jobs': { orphanAfter: ORPHAN_AFTER, stopGrace: STOP_GRACE } }
  }, { env: { ...process.env, ...env }, execArgv, captureStderr: true });
  owner.client = await owner.login('admin', 'admin-password');
  return owner;
}

function skewedClock(offset) {
  const library = faketimeLibrary();
  assert.ok(library, 'libfaketime is not installed: run the suites with `npm test` (as root it installs it), or install it (Debian/Ubuntu: sudo apt-get install -y faketime)');
  return { LD_PRELOAD: library, FAKETIME: offset, FAKETIME_DONT_FAKE_MONOTONIC: '1' };
}

async function startBatch(client, body) {
  const response = await client.post('/modules/job-fixtures/batch', { job: true, ...body });
  assert.equal(response.body.status, 'ok', JSON.stringify(response.body));
  return response.body.jobId;
}

test('an owner frozen past the bound loses its job: the swept job never changes again and no item starts after it wakes', async () => {
  const owner = await spawnOwner();
  try {
    const markPrefix = `frozen${Date.now()}`;
    const jobId = await startBatch(owner.client, { ids: ids(200), mode: 'timed', delay: 50, markPrefix });
    await waitUntil(async () => (await readJob(jobId)).processed >= 10, 15000, 'the owner counted items');
    process.kill(owner.pid, 'SIGSTOP');
    const frozenAt = Date.now();
    const swept = await waitUntil(async () => {
      const job = await readJob(jobId);
      return job.ended && job;
    }, 15000, 'another process ended the frozen job');
    const sweptAfter = Date.now() - frozenAt;
    assert.equal(swept.status, 'failed');
    assert.equal(swept.interrupted, true);
    await delay(Math.max(0, 9000 - (Date.now() - frozenAt)));
    process.kill(owner.pid, 'SIGCONT');
    const wokeAt = new Date();
    // Watch the document for 3 s after the owner woke: its late writes must all be refused.
    for (const until = Date.now() + 3000; Date.now() < until; await delay(100)) {
      assert.deepEqual(await readJob(jobId), swept, 'the document changed after ended: true');
    }
    const startedAfterWaking = await countDocuments(marks(), { _id: { $regex: `^${markPrefix}-` }, startedAt: { $gte: wokeAt } });
    assert.equal(startedAfterWaking, 0, 'no item started after the owner woke');
    const warnings = owner.stderrLines.filter((line) => line.includes(`job ${jobId} is no longer this process's`));
    assert.equal(warnings.length, 1, owner.stderrLines.slice(-20).join('\n'));
    console.log(`frozen owner: swept ${sweptAfter} ms after the freeze at ${swept.processed} of 200 items; ${startedAfterWaking} items started after waking`);
  } finally {
    process.kill(owner.pid, 'SIGCONT');
    await owner.stop();
  }
});

test('an owner whose clock is 2 minutes behind keeps its job: never swept, completed exactly, times from the server', async () => {
  const owner = await spawnOwner({ env: skewedClock('-120s') });
  try {
    const childNow = await owner.client.post('/modules/job-fixtures/now', {});
    assert.ok(Date.now() - childNow.body.now > 100000, 'the owner\'s clock is behind');
    const jobId = await startBatch(owner.client, { ids: ids(200), mode: 'slow', delay: 25 });
    const job = await waitForEnd(jobs, jobId, { timeout: 30000 });
    assert.equal(job.status, 'completed');
    assert.equal(job.processed, 200);
    assert.equal(job.good, 200);
    assert.equal('interrupted' in job, false);
    assert.ok(job.endedAt - job.when >= 5000, 'it ran longer than the bound');
    assert.ok(Math.abs(job.when - Date.now()) < 60000, `when ${job.when.toISOString()} is the server's time, not the owner's`);
  } finally {
    await owner.stop();
  }
});

test('an owner whose clock is 2 minutes ahead and is killed is reconciled within the bound and one sweep', async () => {
  const owner = await spawnOwner({ env: skewedClock('+120s') });
  let jobId;
  try {
    jobId = await startBatch(owner.client, { ids: ids(500), mode: 'slow', delay: 20 });
    await waitUntil(async () => (await readJob(jobId)).processed > 0, 10000, 'the owner counted items');
  } finally {
    await owner.kill('SIGKILL');
  }
  const killedAt = Date.now();
  const job = await waitForEnd(jobs, jobId, { timeout: 20000 });
  const took = Date.now() - killedAt;
  assert.equal(job.status, 'failed');
  assert.equal(job.interrupted, true);
  // The last heartbeat is at most a watch interval old at the kill; then the bound, then
  // at most one sweep period, then this test's poll.
  assert.ok(took < ORPHAN_AFTER + SWEEP_EVERY + 1000, `reconciled after ${took} ms`);
  console.log(`clock 2 min ahead, killed: reconciled after ${took} ms`);
});

test('Stop on a batch whose item never calls back: stopped within the stop grace, that item uncounted, its signal aborted', async () => {
  fixtures.abortSeen = [];
  const markPrefix = `hung${Date.now()}`;
  const jobId = await startBatch(admin, { ids: ids(20), mode: 'hangWatchingSignal', delay: 10, markPrefix });
  await waitUntil(async () => (await readJob(jobId)).processed === 5, 10000, 'items 0-4 finished and id5 hangs');
  const stoppedAt = Date.now();
  assert.deepEqual((await admin.post('/modules/apostrophe-jobs/cancel', { _id: jobId })).body, { status: 'ok' });
  const job = await waitForEnd(jobs, jobId, { timeout: STOP_GRACE + 5000 });
  const took = Date.now() - stoppedAt;
  assert.equal(job.status, 'stopped');
  assert.equal(job.processed, 5, 'the hung item is not counted');
  assert.equal(job.good, 5);
  assert.ok(took < STOP_GRACE + 1000, `stopped after ${took} ms`);
  assert.deepEqual(fixtures.abortSeen, [ 'id5' ], 'the hung item saw its signal abort');
  console.log(`hung item + Stop: stopped after ${took} ms`);
});

test('an item that calls back after the stop grace is ignored with a warning', async () => {
  const warnings = [];
  const warn = site.apos.utils.warn;
  site.apos.utils.warn = (...args) => warnings.push(args.join(' '));
  try {
    const jobId = await startBatch(admin, { ids: ids(20), mode: 'late', delay: 10, lateDelay: STOP_GRACE + 1500 });
    await waitUntil(async () => (await readJob(jobId)).processed === 5, 10000, 'id5 is in flight');
    await admin.post('/modules/apostrophe-jobs/cancel', { _id: jobId });
    const job = await waitForEnd(jobs, jobId, { timeout: STOP_GRACE + 5000 });
    assert.equal(job.status, 'stopped');
    await waitUntil(() => warnings.some((line) => line.includes(`finished id id5 of job ${jobId} after the job was stopped`)), 5000, 'the late callback was warned about');
    assert.deepEqual(await readJob(jobId), job, 'the late outcome changed nothing');
  } finally {
    site.apos.utils.warn = warn;
  }
});

test('Stop on runNonBatch work that never acknowledges: failed and interrupted after the stop grace, said in the log', async () => {
  fixtures.abortSeen = [];
  const errors = [];
  const error = site.apos.utils.error;
  site.apos.utils.error = (...args) => errors.push(args.join(' '));
  try {
    const started = await admin.post('/modules/job-fixtures/nonbatch', { mode: 'deaf', canStop: true, seconds: 8 });
    const jobId = started.body.jobId;
    await waitUntil(async () => (await readJob(jobId)).processed > 0, 10000, 'the work counted');
    const stoppedAt = Date.now();
    await admin.post('/modules/apostrophe-jobs/cancel', { _id: jobId });
    const job = await waitForEnd(jobs, jobId, { timeout: STOP_GRACE + 5000 });
    const took = Date.now() - stoppedAt;
    assert.equal(job.status, 'failed');
    assert.equal(job.interrupted, true);
    assert.ok(took < STOP_GRACE + 1000, `ended after ${took} ms`);
    assert.deepEqual(fixtures.abortSeen, [ 'deaf' ], 'the work function\'s signal aborted at the stop');
    const explained = errors.filter((line) => line.includes(`work function of job ${jobId} did not acknowledge`));
    assert.equal(explained.length, 1, errors.join('\n'));
    assert.match(explained[0], /may still be running/);
    console.log(`deaf runNonBatch + Stop: ended after ${took} ms`);
  } finally {
    site.apos.utils.error = error;
  }
});

test('a hung item without Stop keeps its job running and heart-beating, whatever the garbage collector does', async () => {
  const owner = await spawnOwner({ execArgv: [ '--expose-gc' ] });
  try {
    const jobId = await startBatch(owner.client, { ids: ids(20), mode: 'hangWatchingSignal', delay: 10, markPrefix: `gc${Date.now()}` });
    await waitUntil(async () => (await readJob(jobId)).processed === 5, 10000, 'id5 hangs');
    const before = (await readJob(jobId)).heartbeatAt;
    // Twice the bound of forced collections: the hung range's JavaScript state is garbage.
    for (const until = Date.now() + 2 * ORPHAN_AFTER; Date.now() < until; await delay(200)) {
      assert.equal((await owner.client.post('/modules/job-fixtures/gc', { times: 5 })).body.status, 'ok');
    }
    const job = await readJob(jobId);
    assert.equal(job.ended, false);
    assert.equal(job.status, 'running');
    assert.equal(job.processed, 5);
    assert.ok(job.heartbeatAt - before >= ORPHAN_AFTER, `heartbeats went on (${before.toISOString()} → ${job.heartbeatAt.toISOString()})`);
    // A Stop still ends it, after the grace.
    await owner.client.post('/modules/apostrophe-jobs/cancel', { _id: jobId });
    assert.equal((await waitForEnd(jobs, jobId, { timeout: STOP_GRACE + 5000 })).status, 'stopped');
  } finally {
    await owner.stop();
  }
});
