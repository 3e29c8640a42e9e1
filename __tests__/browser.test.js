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

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { startServer } = require('../scripts/mongo-server');
const { bootSite, createAdmin, insertArticles, countDocuments } = require('./helpers/site');
const { spawnSite } = require('./helpers/site-process');
const { chromiumPath } = require('../scripts/system-deps');

const CHROMIUM = chromiumPath();
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
];
const MODULES = path.join(__dirname, 'fixtures', 'site-browser', 'lib', 'modules');
const SCREENSHOTS = path.join(__dirname, '..', 'artifacts', 'screenshots');
const ADMIN = { username: 'admin', password: 'browser-test-password' };
// The modal polls every second; a heading must show up within a few polls.
const POLLS = 5000;

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let server = null;
let uri = null;
// Everything a test opened, closed newest first by the test's own t.after() and, whatever
// happened, by the file's after().
const openResources = [];

before(async () => {
  uri = process.env.APOS_JOBS_TEST_URI;
  if (!uri) {
    server = await startServer({});
    uri = server.uri;
  }
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
});

after(async () => {
  await closeAll();
  if (server) await server.stop();
});

async function closeAll() {
  while (openResources.length) {
    const { name, close } = openResources.pop();
    try {
      await close();
    } catch (err) {
      process.stderr.write(`[browser.test] closing ${name} failed: ${err.stack || err}\n`);
    }
  }
}

function own(name, close) {
  openResources.push({ name, close });
}

// ---------------------------------------------------------------------------
// Sites

// Site options shared by every site of this file. Notifications long-poll for 10 s by
// default; a short poll lets a site drain its requests quickly when the test is over.
function siteModules({ slowUpdateMs = 0 } = {}) {
  return {
    'browser-jobs': {},
    'test-articles': { slowUpdateMs },
    'apostrophe-notifications': { longPollingTimeout: 1000 }
  };
}

// Counts requests whose handler has not ended yet, so that a site is only destroyed once
// the browser's last requests (the modal's refresh, a notifications poll) are answered;
// otherwise they hit a closed database connection and log errors.
function trackRequests(apos) {
  const httpServer = apos.modules['apostrophe-express'].server;
  let inFlight = 0;
  // Prepended, so this wrapper of res.end is the innermost one: it runs after the
  // session middleware's own wrapper has saved the session.
  httpServer.prependListener('request', (req, res) => {
    inFlight += 1;
    const end = res.end;
    let ended = false;
    res.end = function(...args) {
      if (!ended) {
        ended = true;
        inFlight -= 1;
      }
      return end.apply(this, args);
    };
  });
  return async function drain(timeoutMs = 15000) {
    const deadline = Date.now() + timeoutMs;
    while (inFlight > 0 && Date.now() < deadline) {
      await delay(50);
    }
    // Apostrophe finishes some work after a response (pruning old versions after each of a
    // batch's updates): give it a moment before the database connection closes.
    await delay(1500);
  };
}

// An in-process site running this package, with an admin. With `shortName` (also the
// database name) it shares that database with another site, which creates the admin; the
// database is then dropped only with `dropDatabase`.
async function openSite({ slowUpdateMs = 0, shortName, dropDatabase } = {}) {
  const site = await bootSite({
    uri,
    modulesDir: MODULES,
    shortName,
    modules: siteModules({ slowUpdateMs })
  });
  const drain = trackRequests(site.apos);
  own(`site ${site.shortName}`, async () => {
    await drain();
    await site.stop(dropDatabase === undefined ? {} : { dropDatabase });
  });
  if (!shortName) {
    await createAdmin(site.apos, ADMIN);
  }
  return site;
}

// `n` draft (unpublished) articles, inserted in bulk.
async function insertDrafts(site, n) {
  const docs = await insertArticles(site.apos, n, { published: false, bulkAbove: 0 });
  return docs.map((doc) => doc._id);
}

function readJob(site, jobId) {
  return site.apos.modules['apostrophe-jobs'].db.findOne({ _id: jobId });
}

function countArticles(site, ids, published) {
  return countDocuments(site.apos.docs.db, { _id: { $in: ids }, published });
}

// ---------------------------------------------------------------------------
// Browser

// A fresh headless Chromium profile. Dialogs (the manager's "Are you sure...?") are
// accepted and recorded; page errors are recorded so tests can assert there were none.
// Each test checks first, so that without Chromium every test fails at once, saying why.
function assertChromium() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium was not found at ${CHROMIUM}. The browser tests drive a real Chromium: ` +
      'run the suites with `npm test` (as root it installs Chromium), or install it ' +
      '(Debian/Ubuntu: sudo apt-get install -y chromium), or set AJN_CHROMIUM to its path.'
    );
  }
}

async function openBrowser() {
  assertChromium();
  const { chromium } = require('playwright-core');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ajn-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 800 }
    });
  } catch (err) {
    fs.rmSync(profile, { recursive: true, force: true });
    throw new Error(`Chromium at ${CHROMIUM} failed to start: ${err.message}`);
  }
  own('chromium', async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(20000);
  const dialogs = [];
  const pageErrors = [];
  page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    dialog.accept().catch(() => {});
  });
  page.on('pageerror', (err) => pageErrors.push(err.message));
  // The fixture sites have no favicon and no 404 template: don't log an error for it.
  await page.route('**/favicon.ico', (route) => route.fulfill({ status: 204, body: '' }));
  return { context, page, dialogs, pageErrors };
}

// Log in through the real login form, as a person would. (The form has its
// `data-apos-login-form` hook only in later 2.x releases; its action is the same in all.)
async function logIn(page, site, { username, password } = ADMIN) {
  await page.goto(`${site.baseUrl}/login`);
  const form = page.locator('form[action$="/login"]');
  await form.locator('input[name="username"]').fill(username);
  await form.locator('input[name="password"]').fill(password);
  await Promise.all([
    page.waitForURL((url) => url.pathname !== '/login'),
    form.locator('[type="submit"]').click()
  ]);
  // The logged-in scene loads the jobs module's browser code. The first logged-in page of a
  // site builds its assets (older 2.x releases take longest on a busy machine): a generous limit.
  const firstScene = { timeout: 60000 };
  await page.waitForFunction(() => window.apos && apos.modules && apos.modules['apostrophe-jobs'], null, firstScene);
  await page.locator('[data-apos-admin-bar]').waitFor(firstScene);
}

// Admin bar → Test Articles, list the drafts, tick "select all" on the page, then the
// "Select all N item(s) that match this search" box 2.x offers for the other pages.
async function selectAllDrafts(page, expected) {
  const item = page.locator('[data-apos-admin-bar-item="test-articles"]');
  if (!(await item.isVisible())) {
    await page.locator('[data-apos-admin-bar-logo]').click();
  }
  await item.click();
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

// The jobs modal and what it shows.
function jobModal(page) {
  const modal = page.locator('[data-modal].apos-job-modal');
  return {
    modal,
    title: modal.locator('[data-modal-title]'),
    container: modal.locator('[data-apos-job-progress-container]'),
    heading: modal.locator('[data-apos-job-progress-container] h3'),
    stop: modal.locator('[data-apos-job-stop]'),
    cancel: modal.locator('[data-apos-job-cancel]'),
    done: modal.locator('[data-apos-job-done]'),
    // Wait until the heading reads exactly `text`.
    async waitForHeading(text, timeout = POLLS) {
      await modal.locator('[data-apos-job-progress-container] h3', { hasText: new RegExp(`^\\s*${escapeRegExp(text)}\\s*$`) })
        .waitFor({ timeout });
    },
    // Heading, Successful/Errors counts and the bar, as displayed.
    async read() {
      return modal.locator('[data-apos-job-progress-container]').evaluate((el) => {
        const cell = (label) => {
          const th = [ ...el.querySelectorAll('table.apos-job-results th') ].find((h) => h.textContent.trim() === label);
          return th ? Number(th.nextElementSibling.textContent.trim()) : null;
        };
        const indicator = el.querySelector('[data-apos-progress-indicator]');
        const percentage = el.querySelector('.apos-job-progress-percentage');
        return {
          heading: el.querySelector('h3').textContent.trim(),
          good: cell('Successful'),
          bad: cell('Errors'),
          barWidth: indicator ? indicator.style.width : null,
          percentage: percentage ? percentage.textContent.trim() : null
        };
      });
    },
    // Poll what is displayed until `predicate` holds.
    async waitUntil(predicate, what, timeout = 30000) {
      const deadline = Date.now() + timeout;
      let shown;
      while (Date.now() < deadline) {
        shown = await this.read().catch(() => null);
        if (shown && predicate(shown)) return shown;
        await delay(100);
      }
      throw new Error(`the jobs modal never showed ${what}; last shown: ${JSON.stringify(shown)}`);
    }
  };
}

// Whether the progress fragment comes from a poll. The modal's first paint is rendered by
// the `modal` route, which (as in 2.x) does not compute the percentage: "%" alone is shown
// until the first poll answers, a moment later.
function polled(shown) {
  return /^\d+\.\d\d%$/.test(shown.percentage || '');
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function screenshot(page, name) {
  const file = path.join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

// Open the progress modal for a job from page code, as modules' browser code does.
function openProgress(page, jobId) {
  return page.evaluate((id) => {
    window.jobSuccessResults = undefined;
    apos.modules['apostrophe-jobs'].progress(id, {
      success: (results) => { window.jobSuccessResults = results; }
    });
  }, jobId);
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
  const shortName = `ajn-test-browser-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  // Site B, in this process, is the one the browser talks to. Opened first so it is
  // closed last: it drops the shared database once the owner process has exited.
  const viewer = await openSite({ shortName, dropDatabase: true });
  // Site A, a child process, owns the job; its saves are slow so the job is still running
  // when Stop is clicked. It creates the admin, in the shared database.
  const owner = await spawnSite({
    uri,
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
