'use strict';

// End to end through the admin UI in headless Chromium, as a person would use it: log in
// through the login form, run batch jobs from the pieces manager and a one-shot job from a
// module's route, and watch, stop and cancel them in the unchanged 2.x progress modal
// (`apostrophe-jobs/public/js/modal.js` of core), against sites running this package.
//
//   node --test __tests__/browser.test.js
// Uses APOS_JOBS_TEST_URI when `npm test` provides it, else starts its own SecantusDB
// server. Needs Chromium at /usr/bin/chromium (Debian package `chromium`, which `npm test`
// installs when it runs as root), or set AJN_CHROMIUM to another Chromium binary; without it
// every test fails saying so.
// Screenshots of each state go to artifacts/screenshots/.
//
// The sites use the fixture project `fixtures/site-browser`: the package enabled in
// `lib/modules/apostrophe-jobs`, the `test-articles` piece type with test-only controls over
// how long a save takes, and `browser-jobs`, a module whose route runs a cancelable
// `runNonBatch` job.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { countDocuments } = require('./helpers/site');
const { spawnSite } = require('./helpers/site-process');
const {
  MODULES, ADMIN, delay, useBrowserSuite, closeAll, own, siteModules, openSite, sharedShortName,
  insertDrafts, readJob, assertChromium, openBrowser, logIn, clickAdminBarItem, jobModal, polled,
  screenshot, openProgress
} = require('./helpers/browser');

const suite = useBrowserSuite();

function countArticles(site, ids, published) {
  return countDocuments(site.apos.docs.db, { _id: { $in: ids }, published });
}

// ---------------------------------------------------------------------------
// Browser

// Admin bar → Test Articles, list the drafts, tick "select all" on the page, then the
// "Select all N item(s) that match this search" box 2.x offers for the other pages.
async function selectAllDrafts(page, expected) {
  await clickAdminBarItem(page, 'test-articles');
  const manager = page.locator('[data-modal].apos-manager');
  await manager.waitFor();
  // Pieces are listed published-only by default; ours are drafts.
  await manager.locator('select[name="published"]').selectOption('0');
  await manager.locator('[data-piece]').first().waitFor();
  await manager.locator('.apos-modal-filters input[name="select-all"] + .apos-field-input-checkbox-indicator').click();
  const everything = manager.locator('[data-result-select-everything].apos-active');
  await everything.waitFor();
  assert.equal((await everything.locator('[data-label]').innerText()).trim(),
    `Select all ${expected} item(s) that match this search`);
  await everything.locator('.apos-field-input-checkbox-indicator').click();
  return manager;
}

// Pick a batch operation, check the selection count it shows, apply it, and return the
// job id the route answered with (what the manager hands to the progress modal).
async function applyBatch(page, manager, operation, label, count) {
  await manager.locator('select[name="batch-operation"]').selectOption(operation);
  const option = (await manager.locator('select[name="batch-operation"] option:checked').innerText()).trim();
  assert.equal(option, `${label} Selected (${count})`);
  const [ response ] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith(`/modules/test-articles/${operation}`) && r.request().method() === 'POST'),
    manager.locator(`[data-apos-batch-operation="${operation}"]`).click()
  ]);
  const body = await response.json();
  assert.equal(body.status, 'ok', `${operation} route answered ${JSON.stringify(body)}`);
  assert.ok(body.jobId, 'the batch route answered with a job id');
  return body.jobId;
}

// ---------------------------------------------------------------------------
// Tests

test('an admin publishes 200 draft articles from the manager and watches the job complete', async (t) => {
  assertChromium();
  t.after(closeAll);
  const site = await openSite();
  const ids = await insertDrafts(site, 200);
  const { page, dialogs, pageErrors } = await openBrowser();

  await logIn(page, site);
  const manager = await selectAllDrafts(page, 200);
  const jobId = await applyBatch(page, manager, 'publish', 'Publish', 200);
  assert.deepEqual(dialogs, [ 'Are you sure you want to publish 200 items?' ]);

  const job = jobModal(page);
  await job.modal.waitFor();
  assert.equal((await job.title.innerText()).trim(), 'Publish');
  const running = await job.waitUntil((s) => polled(s) && s.heading === 'In Progress...' && s.good > 0 && s.good < 200,
    'In Progress... with some items done');
  assert.equal(running.bad, 0);
  assert.match(running.percentage, /^\d+\.\d\d%$/);
  assert.equal(parseFloat(running.barWidth), parseFloat(running.percentage), 'the bar is as wide as the percentage says');
  assert.ok(await job.stop.isVisible(), 'Stop is offered while the job runs');
  assert.equal((await job.stop.innerText()).trim(), 'Stop');
  assert.equal(await job.modal.locator('button', { hasText: /^\s*Cancel\s*$/ }).count(), 0,
    'a batch job offers Stop, not Cancel');
  assert.ok(!(await job.done.isVisible()), 'Done is hidden while the job runs');
  await screenshot(page, 'publish-in-progress');

  // Escape does not close the modal of a running job. Something that must not happen: the
  // job is running (seen above); watch the modal for a while after the key.
  await page.keyboard.press('Escape');
  await delay(300);
  assert.ok(await job.modal.isVisible(), 'the modal stays open while the job runs');

  await job.waitForHeading('Completed', 120000);
  const completed = await job.read();
  assert.deepEqual(completed, {
    heading: 'Completed', good: 200, bad: 0, barWidth: '100%', percentage: '100.00%'
  });
  await job.done.waitFor();
  assert.ok(!(await job.stop.isVisible()), 'Stop is hidden once the job has ended');
  await screenshot(page, 'publish-completed');

  await job.done.click();
  await job.modal.waitFor({ state: 'detached' });
  // The manager refreshes on the change event: no drafts are left to list.
  await manager.locator('.apos-manage-view', { hasText: 'No results for current filters.' }).waitFor();

  assert.equal(await countArticles(site, ids, true), 200, 'every article is published in the database');
  const doc = await readJob(site, jobId);
  assert.equal(doc.status, 'completed');
  assert.equal(doc.ended, true);
  assert.equal(doc.good, 200);
  assert.equal(doc.processed, 200);
  assert.equal(doc.total, 200);
  assert.deepEqual(pageErrors, []);
});

test('Stop halts a slow batch: Stopping..., then Stopped, and the remaining articles stay unchanged', async (t) => {
  assertChromium();
  t.after(closeAll);
  // Every save waits 50 ms, so the batch is still running when Stop is clicked.
  const site = await openSite({ slowUpdateMs: 50 });
  const articles = site.apos.modules['test-articles'];
  const ids = await insertDrafts(site, 200);
  const { page, pageErrors } = await openBrowser();

  await logIn(page, site);
  const manager = await selectAllDrafts(page, 200);
  const jobId = await applyBatch(page, manager, 'publish', 'Publish', 200);

  const job = jobModal(page);
  await job.modal.waitFor();
  await job.waitUntil((s) => polled(s) && s.heading === 'In Progress...' && s.good >= 5, 'In Progress... with 5 items done');
  await screenshot(page, 'stop-in-progress');

  // Keep the item in flight unfinished (as a slow item would be) while we look at the
  // "Stopping..." heading: a batch job finishes its current item before it stops.
  const hold = articles.holdSaves();
  try {
    await hold.firstHeld;
    await job.stop.click();
    await job.waitForHeading('Stopping...');
    assert.ok(!(await job.done.isVisible()), 'Done stays hidden until the job has stopped');
    await screenshot(page, 'stop-stopping');
  } finally {
    hold.release();
  }

  await job.waitForHeading('Stopped');
  await job.done.waitFor();
  assert.ok(!(await job.stop.isVisible()), 'Stop is hidden once the job has stopped');
  const stopped = await job.read();
  await screenshot(page, 'stop-stopped');

  await job.done.click();
  await job.modal.waitFor({ state: 'detached' });

  const doc = await readJob(site, jobId);
  assert.equal(doc.status, 'stopped');
  assert.equal(doc.ended, true);
  assert.equal(doc.canceling, false);
  assert.ok(doc.processed > 0 && doc.processed < 200, `processed ${doc.processed} of 200`);
  assert.equal(doc.good, doc.processed);
  assert.equal(stopped.good, doc.good, 'the modal shows the final count');
  assert.equal(doc.results, undefined, 'a stopped job has no results');
  const published = await countArticles(site, ids, true);
  assert.equal(published, doc.good, 'exactly the processed articles are published');
  assert.equal(await countArticles(site, ids, false), 200 - doc.good, 'the rest are still drafts');

  // Nothing carries on behind the scenes. Something that must not happen: the job has ended
  // (read above); watch for a while, many saves long.
  await delay(1500);
  assert.equal(await countArticles(site, ids, true), published, 'no article is published after the stop');
  assert.equal((await readJob(site, jobId)).processed, doc.processed);
  assert.deepEqual(pageErrors, []);
});

test('Cancel on a runNonBatch job opened from page code undoes its work: Canceled', async (t) => {
  assertChromium();
  t.after(closeAll);
  const site = await openSite();
  const records = site.apos.db.collection('browserJobsRecords');
  const { page, pageErrors } = await openBrowser();
  await logIn(page, site);

  // What a module's browser code does: call its route, then open the progress modal.
  const runId = `run${Date.now()}`;
  const jobId = await page.evaluate((body) => new Promise((resolve, reject) => {
    $.jsonCall('/modules/browser-jobs/generate', body, (result) => {
      if (result.status !== 'ok') return reject(new Error(`generate: ${result.status}`));
      window.jobSuccessResults = undefined;
      apos.modules['apostrophe-jobs'].progress(result.jobId, {
        success: (results) => { window.jobSuccessResults = results; },
        change: 'browser-jobs'
      });
      return resolve(result.jobId);
    }, () => reject(new Error('generate: request failed')));
  }), { runId, count: 400, stepMs: 50 });

  const job = jobModal(page);
  await job.modal.waitFor();
  assert.equal((await job.title.innerText()).trim(), 'Generate records');
  const running = await job.waitUntil((s) => polled(s) && s.heading === 'In Progress...' && s.good >= 5, 'In Progress... with 5 records');
  assert.ok(await job.cancel.isVisible(), 'a cancelable job offers Cancel');
  assert.equal(await job.stop.count(), 0, 'and no Stop');
  assert.match(running.percentage, /^\d+\.\d\d%$/);
  assert.ok(await countDocuments(records, { runId }) >= 5, 'records are being written');
  await screenshot(page, 'cancel-in-progress');

  await job.cancel.click();
  await job.waitForHeading('Canceled');
  await job.done.waitFor();
  assert.ok(!(await job.cancel.isVisible()), 'Cancel is hidden once the job has ended');
  await screenshot(page, 'cancel-canceled');

  await job.done.click();
  await job.modal.waitFor({ state: 'detached' });
  assert.equal(await page.evaluate(() => window.jobSuccessResults), undefined,
    'success is not called for a canceled job');

  assert.equal(await countDocuments(records, { runId }), 0, 'the canceled work was undone');
  const doc = await readJob(site, jobId);
  assert.equal(doc.status, 'canceled');
  assert.equal(doc.ended, true);
  assert.equal(doc.canCancel, true);
  assert.ok(doc.good > 0 && doc.good < 400, `good ${doc.good}`);
  assert.equal(doc.results, undefined, 'a canceled job has no results');
  // Something that must not happen: the job has ended (read above); watch for a while, many
  // steps of the work long.
  await delay(1000);
  assert.equal(await countDocuments(records, { runId }), 0, 'and nothing is written afterwards');
  assert.deepEqual(pageErrors, []);
});

test('Stop clicked on one site process halts the job running in another process', async (t) => {
  assertChromium();
  t.after(closeAll);
  // One database for both processes: same shortName, so same sessions and users too.
  const shortName = sharedShortName();
  // Site B, in this process, is the one the browser talks to. Opened first so it is
  // closed last: it drops the shared database once the owner process has exited.
  const viewer = await openSite({ shortName, dropDatabase: true });
  // Site A, a child process, owns the job; its saves are slow so the job is still running
  // when Stop is clicked. It creates the admin, in the shared database.
  const owner = await spawnSite({
    uri: suite.uri,
    modulesDir: MODULES,
    shortName,
    modules: siteModules({ slowUpdateMs: 50 }),
    admin: ADMIN
  });
  own(`site process ${owner.pid}`, () => owner.stop());

  const ids = await insertDrafts(viewer, 200);
  const ownerClient = await owner.login(ADMIN.username, ADMIN.password);
  const started = await ownerClient.post('/modules/test-articles/publish', { ids, job: true });
  assert.equal(started.body.status, 'ok', JSON.stringify(started.body));
  const jobId = started.body.jobId;

  const { page, pageErrors } = await openBrowser();
  await logIn(page, viewer);
  await openProgress(page, jobId);
  const job = jobModal(page);
  await job.modal.waitFor();
  assert.equal((await job.title.innerText()).trim(), 'Publish');
  const first = await job.waitUntil((s) => polled(s) && s.heading === 'In Progress...' && s.good >= 3, 'In Progress...');
  await job.waitUntil((s) => s.good > first.good, 'the count growing (the owner process is working)');
  await screenshot(page, 'cross-process-in-progress');
  assert.equal(viewer.apos.modules['apostrophe-jobs'].liveJobs.has(jobId), false,
    'the job does not belong to the site the browser talks to');

  await job.stop.click();
  await job.waitForHeading('Stopped', 10000);
  await job.done.waitFor();
  await screenshot(page, 'cross-process-stopped');
  await job.done.click();
  await job.modal.waitFor({ state: 'detached' });

  const doc = await readJob(viewer, jobId);
  assert.equal(doc.status, 'stopped');
  assert.equal(doc.ended, true);
  assert.ok(doc.processed > 0 && doc.processed < 200, `processed ${doc.processed} of 200`);
  const published = await countArticles(viewer, ids, true);
  assert.equal(published, doc.good, 'exactly the processed articles are published');
  // Something that must not happen: the job has ended (read above); watch for a while, many
  // saves long.
  await delay(1500);
  assert.equal(await countArticles(viewer, ids, true), published, 'the owner published nothing more');
  assert.equal((await readJob(viewer, jobId)).processed, doc.processed);
  assert.deepEqual(pageErrors, []);

  const exit = await owner.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, 'the owner process stops cleanly');
});
