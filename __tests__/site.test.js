'use strict';

// Smoke test of the test fixture itself: a real Apostrophe 2 site with the
// STOCK apostrophe-jobs, driven over HTTP as a logged-in admin through one
// batch publish job. If this fails, the fixture is broken, not the module.
//
//   node --test __tests__/site.test.js
// Uses APOS_JOBS_TEST_URI when `npm test` provides it, else starts its own
// SecantusDB server.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer } = require('../scripts/mongo-server');
const fs = require('fs');
const path = require('path');
const { bootSite, createAdmin, insertArticles, countDocuments } = require('./helpers/site');
const apostrophe = require('./helpers/apostrophe');

let server = null;
let site = null;
const stockJobs = [];

before(async () => {
  let uri = process.env.APOS_JOBS_TEST_URI;
  if (!uri) {
    server = await startServer({});
    uri = server.uri;
  }
  site = await bootSite({ uri, native: false });
  // Stock 2.x before 2.97.1 never clears a job's 250 ms stop-check timer once the job ended
  // (apostrophecms/apostrophe#2042, the leak this package has no room for), which would keep
  // this test file's process alive on the oldest release: keep the handles to clear it.
  const jobs = site.apos.modules['apostrophe-jobs'];
  const start = jobs.start;
  jobs.start = (options, callback) => start(options, (err, job) => {
    if (job) stockJobs.push(job);
    return callback(err, job);
  });
});

after(async () => {
  for (const job of stockJobs) clearInterval(job.interval);
  // Stop the site before the server so its connection closes cleanly.
  if (site) await site.stop();
  if (server) await server.stop();
});

// `npm test` runs the site suites on two releases; this is what makes that true.
test('the site runs the core modules and the MongoDB driver of the Apostrophe release under test', () => {
  const release = fs.realpathSync(apostrophe.packageDir());
  const core = site.apos.modules['apostrophe-jobs'].__meta.chain.find((entry) => !entry.dirname.includes('__tests__'));
  assert.equal(path.relative(release, fs.realpathSync(core.dirname)), path.join('lib', 'modules', 'apostrophe-module'));
  assert.ok(site.apos.db instanceof apostrophe.siteDriver().Db, `apos.db is a Db of ${apostrophe.packageName}'s driver`);
  console.log(`Apostrophe ${apostrophe.version()} (${apostrophe.packageName})`);
});

test('stock apostrophe-jobs: batch publish of 5 articles over HTTP completes', async () => {
  await createAdmin(site.apos, { username: 'admin', password: 'smoke-password' });
  const client = await site.login('admin', 'smoke-password');
  const articles = await insertArticles(site.apos, 5);
  const ids = articles.map((a) => a._id);

  const started = await client.post('/modules/test-articles/publish', { ids, job: true });
  assert.equal(started.status, 200, `publish route: ${JSON.stringify(started.body)}`);
  assert.equal(started.body.status, 'ok');
  assert.ok(started.body.jobId, 'a job id is returned');

  let job = null;
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    const res = await client.post('/modules/apostrophe-jobs/progress', { _id: started.body.jobId });
    assert.equal(res.status, 200);
    assert.equal(res.body.status, 'ok');
    job = res.body.job;
    // Stock 2.x counts items with fire-and-forget writes that can land after its `end`
    // (the race this package fixes): wait for them too, not just for `ended`.
    if (job && job.ended && job.processed >= 5) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.ok(job && job.ended, `job ended within 15 s: ${JSON.stringify(job)}`);
  assert.equal(job.status, 'completed');
  assert.equal(job.good, 5);
  assert.equal(job.bad, 0);
  assert.equal(job.total, 5);

  const published = await countDocuments(site.apos.docs.db, { _id: { $in: ids }, published: true });
  assert.equal(published, 5, 'all five articles are published in the database');
});

test('unsafe requests without the CSRF header are refused', async () => {
  const client = await site.login('admin', 'smoke-password');
  const res = await client.post('/modules/apostrophe-jobs/progress', { _id: 'x' }, {
    headers: { 'x-xsrf-token': 'wrong' }
  });
  assert.equal(res.status, 403);
});
