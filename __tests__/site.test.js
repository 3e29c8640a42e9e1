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
const { bootSite, createAdmin, insertArticles } = require('./helpers/site');

let server = null;
let site = null;

before(async () => {
  let uri = process.env.APOS_JOBS_TEST_URI;
  if (!uri) {
    server = await startServer({});
    uri = server.uri;
  }
  site = await bootSite({ uri, native: false });
});

after(async () => {
  // Stop the site before the server so its connection closes cleanly.
  if (site) await site.stop();
  if (server) await server.stop();
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

  const published = await site.apos.docs.db.countDocuments({ _id: { $in: ids }, published: true });
  assert.equal(published, 5, 'all five articles are published in the database');
});

test('unsafe requests without the CSRF header are refused', async () => {
  const client = await site.login('admin', 'smoke-password');
  const res = await client.post('/modules/apostrophe-jobs/progress', { _id: 'x' }, {
    headers: { 'x-xsrf-token': 'wrong' }
  });
  assert.equal(res.status, 403);
});
