// No job lost, stranded or readable by strangers: a process killed mid-batch, a database
// restarted mid-batch, a deploy-style SIGTERM, access by anonymous users and other users,
// retention, failed items, and random request bodies.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const { MongoClient } = require('mongodb');
const { bootSite, createAdmin, createUser, createClient, countDocuments } = require('./helpers/site.js');
const { spawnSite } = require('./helpers/site-process.js');
const { startServer } = require('../scripts/mongo-server.js');
const { testUri, waitUntil, waitForEnd, ids } = require('./helpers/jobs.js');

const FIXTURES = path.join(__dirname, 'fixtures', 'job-fixtures.js');

let site;
let jobs;
let admin;

before(async () => {
  site = await bootSite({
    uri: testUri(),
    native: true,
    modules: {
      'job-fixtures': require(FIXTURES),
      'apostrophe-jobs': { ownerOnly: true, orphanAfter: 3000 }
    }
  });
  jobs = site.apos.modules['apostrophe-jobs'];
  await createAdmin(site.apos, { username: 'admin', password: 'admin-password' });
  await createUser(site.apos, { username: 'editor1', password: 'editor1-password', permissions: [ 'edit' ] });
  await createUser(site.apos, { username: 'editor2', password: 'editor2-password', permissions: [ 'edit' ] });
  admin = await site.login('admin', 'admin-password');
});

after(async () => {
  await site.stop({ dropDatabase: true });
});

// A database client of the test's own, which survives what the site's connection may not.
async function withClient(uri, fn) {
  const client = await MongoClient.connect(uri);
  try {
    return await fn(client.db(site.shortName));
  } finally {
    await client.close();
  }
}

test('a job whose process is killed mid-batch is ended failed (interrupted) by another process within the bound', async () => {
  const owner = await spawnSite({
    uri: testUri(),
    native: true,
    shortName: site.shortName,
    moduleFiles: { 'job-fixtures': FIXTURES },
    modules: { 'apostrophe-jobs': { orphanAfter: 3000 } }
  });
  const ownerClient = await owner.login('admin', 'admin-password');
  const started = await ownerClient.post('/modules/job-fixtures/batch', { ids: ids(500), job: true, mode: 'slow', delay: 20 });
  const jobId = started.body.jobId;
  await waitUntil(async () => (await jobs.db.findOne({ _id: jobId })).processed > 0, 10000, 'the owner counted items');
  await owner.kill('SIGKILL');
  const killedAt = Date.now();
  await waitUntil(async () => (await jobs.db.findOne({ _id: jobId })).ended, 15000, 'another process ended the job');
  const took = Date.now() - killedAt;
  const job = await waitForEnd(jobs, jobId);
  assert.equal(job.status, 'failed');
  assert.equal(job.interrupted, true);
  assert.equal(job.canceling, false);
  assert.ok(job.endedAt instanceof Date);
  assert.ok(job.processed < 500);
  // Bound 3 s + one heartbeat period (0.5 s) + one sweep period (1.5 s) + a poll.
  assert.ok(took < 6000, `reconciled after ${took} ms`);
  const progress = await admin.post('/modules/apostrophe-jobs/progress', { _id: jobId });
  assert.equal(progress.body.job.ended, true);
  assert.match(progress.body.html, /Failed/);
});

test('a running job of a live process is never swept', async () => {
  // The job runs in a site process of its own, while this file's site, another live process
  // with the same bound (3 s; it sweeps every 1.5 s), is up the whole time: it would end the
  // job `interrupted` if the owner's heartbeats stopped for 3 s.
  assert.equal(jobs.options.orphanAfter, 3000);
  const owner = await spawnSite({
    uri: testUri(),
    native: true,
    shortName: site.shortName,
    moduleFiles: { 'job-fixtures': FIXTURES },
    modules: { 'apostrophe-jobs': { orphanAfter: 3000 } }
  });
  try {
    const ownerClient = await owner.login('admin', 'admin-password');
    // 250 items of 20 ms: at least 5 s of work, well past the bound.
    const count = 250;
    const started = await ownerClient.post('/modules/job-fixtures/batch', { ids: ids(count), job: true, mode: 'slow', delay: 20 });
    assert.equal(started.body.status, 'ok', JSON.stringify(started.body));
    const jobId = started.body.jobId;
    assert.equal(jobs.liveJobs.has(jobId), false, 'the job is not run by the sweeping process');

    // Heartbeats: while the job runs, its heartbeatAt moves forward, seconds apart.
    const first = await waitUntil(async () => {
      const running = await jobs.db.findOne({ _id: jobId });
      return running.processed > 0 && running;
    }, 10000, 'the owner counted items');
    assert.ok(first.heartbeatAt instanceof Date, 'the job has a heartbeat');
    const later = await waitUntil(async () => {
      const running = await jobs.db.findOne({ _id: jobId });
      assert.equal(running.ended, false, `the job ended before its heartbeat was seen to move (heartbeatAt ${first.heartbeatAt.toISOString()})`);
      return running.heartbeatAt - first.heartbeatAt >= 2000 && running;
    }, 15000, 'heartbeatAt moved 2 s forward while the job ran');
    assert.ok(later.processed > first.processed);

    const job = await waitForEnd(jobs, jobId, { timeout: 60000 });
    assert.equal(job.status, 'completed', 'work that outlives the 3 s bound is not swept, thanks to heartbeats');
    assert.equal(job.processed, count);
    assert.equal(job.good, count);
    assert.equal('interrupted' in job, false);
    // Server times: the job ran for longer than the bound plus a sweep period of the other process.
    const ran = job.endedAt - job.when;
    assert.ok(ran > 3000 + 1500, `the job ran ${ran} ms`);
  } finally {
    await owner.stop();
  }
});

test('a database restart mid-batch: the job goes on and ends with exact counts', async () => {
  const server = await startServer({});
  const local = await bootSite({ uri: server.uri, native: true, modules: { 'job-fixtures': require(FIXTURES) } });
  try {
    await createAdmin(local.apos, { username: 'admin', password: 'admin-password' });
    const client = await local.login('admin', 'admin-password');
    const fixtures = local.apos.modules['job-fixtures'];
    fixtures.calls = [];
    const started = await client.post('/modules/job-fixtures/batch', { ids: ids(200), job: true, mode: 'slow', delay: 20 });
    const jobId = started.body.jobId;
    // Mid-batch: some counts are written before the restart (200 items take 4 s).
    const localJobs = local.apos.modules['apostrophe-jobs'];
    await waitUntil(async () => (await localJobs.db.findOne({ _id: jobId })).processed > 0, 10000, 'counts were written');
    await server.restart();
    const uri = `${server.uri}/${local.shortName}`;
    const job = await waitUntil(async () => {
      const found = await withClientAt(uri, (db) => db.collection('aposJobs').findOne({ _id: jobId }));
      return found && found.ended && found;
    }, 90000, 'the job ended after the restart');
    assert.equal(job.status, 'completed');
    assert.equal(fixtures.calls.length, 200);
    assert.equal(job.good, 200, 'nothing lost');
    assert.equal(job.processed, 200, 'nothing counted twice');
    assert.equal(job.bad, 0);
    assert.equal(Object.keys(job.results).length, 200);
  } finally {
    await local.stop({ dropDatabase: false }).catch(() => {});
    await server.stop();
  }
});

async function withClientAt(uri, fn) {
  const client = await MongoClient.connect(uri, { serverSelectionTimeoutMS: 2000 });
  try {
    return await fn(client.db());
  } catch (error) {
    return null;
  } finally {
    await client.close();
  }
}

test('a deploy-style SIGTERM drains: in-flight items finish, counts are exact, the job gets a final status', async () => {
  const owner = await spawnSite({
    uri: testUri(),
    native: true,
    shortName: site.shortName,
    moduleFiles: { 'job-fixtures': FIXTURES },
    modules: { 'apostrophe-jobs': { drainOnSignal: true, drainTimeout: 5000 } }
  });
  const ownerClient = await owner.login('admin', 'admin-password');
  const markPrefix = `drain${Date.now()}`;
  const started = await ownerClient.post('/modules/job-fixtures/batch', { ids: ids(300), job: true, mode: 'marked', delay: 20, markPrefix });
  const jobId = started.body.jobId;
  // Mid-batch: items have run (300 items take over 6 s).
  await waitUntil(async () => (await jobs.db.findOne({ _id: jobId })).processed > 0, 10000, 'the owner counted items');
  const exit = await owner.stop();
  assert.equal(exit.code, 0);
  const job = await jobs.db.findOne({ _id: jobId });
  assert.equal(job.ended, true, 'the job has a final status once the process has exited');
  assert.equal(job.status, 'failed');
  assert.equal(job.interrupted, true);
  const marks = await countDocuments(site.apos.db.collection('jobFixtureMarks'), { _id: { $regex: `^${markPrefix}-` } });
  assert.ok(marks > 0 && marks < 300, `${marks} items ran`);
  assert.equal(job.processed, marks, 'every item that ran is counted, none twice');
  assert.equal(job.good, marks);
});

test('a drain refuses new jobs and resolves how many jobs it cut short', async () => {
  const local = await bootSite({ uri: testUri(), native: true, modules: { 'job-fixtures': require(FIXTURES) } });
  try {
    const localJobs = local.apos.modules['apostrophe-jobs'];
    await createAdmin(local.apos, { username: 'admin', password: 'admin-password' });
    const client = await local.login('admin', 'admin-password');
    const work = await client.post('/modules/job-fixtures/nonbatch', { mode: 'cancelable' });
    const batch = await client.post('/modules/job-fixtures/batch', { ids: ids(100), job: true, mode: 'slow', delay: 20 });
    // Both are running (the batch takes 2 s) when the drain starts.
    await waitUntil(async () => {
      const running = await localJobs.db.find({ _id: { $in: [ work.body.jobId, batch.body.jobId ] } }).toArray();
      return running.length === 2 && running.every((job) => job.processed > 0 && !job.ended);
    }, 10000, 'both jobs counted items');
    const drained = await localJobs.drain({ timeout: 300 });
    assert.deepEqual(drained, { interrupted: 1 }, 'the batch stops between items; the work function cannot and is cut short');
    for (const jobId of [ work.body.jobId, batch.body.jobId ]) {
      const job = await localJobs.db.findOne({ _id: jobId });
      assert.equal(job.ended, true);
      assert.equal(job.interrupted, true);
    }
    const refused = await client.post('/modules/job-fixtures/batch', { ids: ids(3), job: true });
    assert.deepEqual(refused.body, { status: 'error' });
  } finally {
    await local.stop();
  }
});

test('routes refuse anonymous users; with ownerOnly, other users see no job; the owner and admins do', async () => {
  const editor1 = await site.login('editor1', 'editor1-password');
  const editor2 = await site.login('editor2', 'editor2-password');
  const anonymous = createClient(site.baseUrl, { csrfCookieName: site.csrfCookieName });
  await anonymous.get('/');
  const started = await editor1.post('/modules/job-fixtures/nonbatch', { mode: 'cancelable', canStop: true });
  const _id = started.body.jobId;
  assert.equal((await jobs.db.findOne({ _id })).userId, (await site.apos.users.find(site.apos.tasks.getReq(), { username: 'editor1' }).toObject())._id);

  assert.deepEqual((await anonymous.post('/modules/apostrophe-jobs/progress', { _id })).body, { status: 'forbidden' });
  assert.deepEqual((await anonymous.post('/modules/apostrophe-jobs/cancel', { _id })).body, { status: 'forbidden' });
  assert.equal((await anonymous.post('/modules/apostrophe-jobs/modal', { _id })).status, 403);

  const seenByEditor2 = (await editor2.post('/modules/apostrophe-jobs/progress', { _id })).body;
  assert.deepEqual(seenByEditor2.job, { notfound: true, ended: true }, JSON.stringify(seenByEditor2));
  assert.deepEqual((await editor2.post('/modules/apostrophe-jobs/cancel', { _id })).body, { status: 'notfound' });
  assert.doesNotMatch((await editor2.post('/modules/apostrophe-jobs/modal', { _id })).body, /data-apos-job-stop/);
  assert.equal((await jobs.db.findOne({ _id })).canceling, false, 'another user cannot stop it');

  assert.equal((await editor1.post('/modules/apostrophe-jobs/progress', { _id })).body.job._id, _id);
  assert.equal((await admin.post('/modules/apostrophe-jobs/progress', { _id })).body.job._id, _id);
  assert.match((await editor1.post('/modules/apostrophe-jobs/modal', { _id })).body, /data-apos-job-stop/);
  assert.deepEqual((await editor1.post('/modules/apostrophe-jobs/cancel', { _id })).body, { status: 'ok' });
  assert.equal((await waitForEnd(jobs, _id)).status, 'stopped');

  jobs.options.requireLogin = false;
  try {
    assert.equal((await anonymous.post('/modules/apostrophe-jobs/progress', { _id: 'nosuchjob' })).body.status, 'ok', 'requireLogin: false restores 2.x openness');
  } finally {
    delete jobs.options.requireLogin;
  }
});

test('failed items are kept with their messages, and retryFailed runs a new job over them only', async () => {
  const started = await admin.post('/modules/job-fixtures/batch', { ids: ids(30), job: true, mode: 'fail5' });
  assert.equal(started.body.status, 'ok', JSON.stringify(started.body));
  const job = await waitForEnd(jobs, started.body.jobId);
  assert.deepEqual(job.failedItems, [
    { id: 'id5', message: 'ends in 5' },
    { id: 'id15', message: 'ends in 5' },
    { id: 'id25', message: 'ends in 5' }
  ]);
  const fixtures = site.apos.modules['job-fixtures'];
  fixtures.calls = [];
  const retry = await admin.post('/modules/job-fixtures/retry', { jobId: started.body.jobId });
  assert.equal(retry.body.status, 'ok');
  const retried = await waitForEnd(jobs, retry.body.jobId);
  assert.equal(retried.status, 'completed');
  assert.equal(retried.good, 3);
  assert.deepEqual(fixtures.calls.map((call) => call.id), [ 'id5', 'id15', 'id25' ]);
  assert.deepEqual(retried.labels, job.labels);
  assert.deepEqual((await admin.post('/modules/job-fixtures/retry', { jobId: 'nosuchjob' })).body, { status: 'notfound' });
});

test('retention: endedAt on every ending, purge by age, a TTL index set idempotently', async () => {
  const now = Date.now();
  const day = 24 * 60 * 60 * 1000;
  await jobs.db.insertMany([
    { _id: 'oldstock', ended: true, status: 'completed', when: new Date(now - 40 * day) },
    { _id: 'oldnative', ended: true, status: 'completed', when: new Date(now - 40 * day), endedAt: new Date(now - 35 * day) },
    { _id: 'recent', ended: true, status: 'completed', when: new Date(now - 40 * day), endedAt: new Date(now - day) },
    { _id: 'oldrunning', ended: false, status: 'running', when: new Date(now - 40 * day) }
  ]);
  const listed = await jobs.listJobs({ ended: true, olderThan: 30 * day });
  assert.deepEqual(listed.map((job) => job._id).filter((id) => [ 'oldstock', 'oldnative', 'recent' ].includes(id)).sort(), [ 'oldnative', 'oldstock', 'recent' ]);
  assert.equal(await jobs.purgeJobs({ olderThan: 30 * day }), 2);
  const left = (await jobs.db.find({ _id: { $in: [ 'oldstock', 'oldnative', 'recent', 'oldrunning' ] } }).toArray()).map((job) => job._id).sort();
  assert.deepEqual(left, [ 'oldrunning', 'recent' ]);
  await assert.rejects(jobs.purgeJobs({ olderThan: 'soon' }), /purgeJobs needs olderThan as a number of milliseconds/);

  for (const expireAfter of [ 3600, 7200, 7200 ]) {
    const local = await bootSite({ uri: testUri(), native: true, shortName: `${site.shortName}-ttl`, modules: { 'apostrophe-jobs': { expireAfter } } });
    const indexes = await local.apos.modules['apostrophe-jobs'].db.indexes();
    await local.stop();
    const ttl = indexes.find((index) => index.name === 'endedAt_ttl');
    assert.ok(ttl, 'the TTL index exists');
    assert.deepEqual(ttl.key, { endedAt: 1 });
    assert.equal(ttl.expireAfterSeconds, expireAfter);
  }
});

// A small seeded generator, so a failure can be replayed.
function random(seed) {
  let state = seed >>> 0;
  return function() {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 0x100000000;
  };
}

function randomValue(next, depth = 0) {
  const pick = Math.floor(next() * (depth > 4 ? 6 : 9));
  switch (pick) {
    case 0: return null;
    case 1: return next() < 0.5;
    case 2: return Math.floor(next() * 2e9) - 1e9;
    case 3: return next() * 1e6;
    case 4: return [ '', 'a', 'id1', 'x y', '$ne', '../etc', 'ç', 'a'.repeat(300) ][Math.floor(next() * 8)];
    case 5: return `id${Math.floor(next() * 50)}`;
    case 6: return Array.from({ length: Math.floor(next() * (next() < 0.1 && depth < 2 ? 1500 : 8)) }, () => randomValue(next, depth + 1));
    case 7: return { $ne: null, $gt: '', $where: 'sleep(1000)' };
    default: {
      const object = {};
      for (let i = Math.floor(next() * 5); i > 0; i--) {
        object[[ '_id', 'ids', 'job', '$set', 'a.b', '__proto__', 'x' ][Math.floor(next() * 7)]] = randomValue(next, depth + 1);
      }
      return object;
    }
  }
}

test('random request bodies get a documented reply from the run route and the three job routes, and the site stays up', async () => {
  const next = random(20261128);
  const allowed = new Set([ 'ok', 'invalid', 'error', 'forbidden', 'notfound' ]);
  const started = [];
  for (let i = 0; i < 240; i++) {
    const body = randomValue(next, 1);
    const payload = body && typeof body === 'object' && !Array.isArray(body) ? body : { _id: body, ids: body, job: next() < 0.5 };
    payload.mode = 'ok';
    const route = [ '/modules/job-fixtures/batch', '/modules/apostrophe-jobs/progress', '/modules/apostrophe-jobs/cancel', '/modules/apostrophe-jobs/modal' ][i % 4];
    const response = await admin.post(route, payload);
    const where = `${route} with ${JSON.stringify(payload).slice(0, 200)}`;
    if (route.endsWith('/modal')) {
      assert.ok([ 200, 404, 500 ].includes(response.status), `${where}: HTTP ${response.status}`);
      assert.equal(typeof response.body, 'string', where);
      continue;
    }
    assert.equal(response.status, 200, `${where}: HTTP ${response.status}`);
    assert.ok(allowed.has(response.body.status), `${where}: ${JSON.stringify(response.body).slice(0, 200)}`);
    if (response.body.jobId) {
      started.push(response.body.jobId);
    }
  }
  for (const jobId of started) {
    assert.equal((await waitForEnd(jobs, jobId)).ended, true);
  }
  assert.equal((await admin.post('/modules/apostrophe-jobs/progress', { _id: 'nosuchjob' })).body.status, 'ok', 'the site still answers');
});
