'use strict';

// The jobs dashboard, end to end in headless Chromium, as an admin or an editor would use it:
// the "Jobs" button of the admin bar, the list with its filters, a job's page, Stop, "Retry
// failed items" and "Resume unfinished items" (which reopen the unchanged 2.x progress modal
// on the new job), and who may see what. The jobs are real: batches of the fixture module
// `dashboard-batch` over `test-articles` pieces, run by in-process sites or by site processes
// of their own (one is killed with SIGKILL mid-batch and swept as interrupted), and the
// database says which articles each job touched, and how many times.
//
//   node --test __tests__/dashboard.test.js
// Same database, Chromium and screenshots as browser.test.js (helpers/browser.js).
//
// `dashboard-batch` (fixtures/site-browser) has one route, `POST /modules/dashboard-batch/touch
// { ids, job: true, concurrency, stepMs }`, whose `change` adds 1 to an article's
// `dashboardAttempts`, fails if the article has `dashboardFail: true`, else waits `stepMs` and
// adds 1 to its `dashboardRuns`.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { createUser, createClient, countDocuments } = require('./helpers/site');
const { spawnSite } = require('./helpers/site-process');
const { waitUntil, waitForEnd } = require('./helpers/jobs');
const {
  MODULES, ADMIN, delay, useBrowserSuite, closeAll, own, siteModules, openSite, sharedShortName,
  insertDrafts, readJob, assertChromium, openBrowser, logIn, clickAdminBarItem, jobModal, pollDisplay, screenshot
} = require('./helpers/browser');

const suite = useBrowserSuite();

const TOUCH = '/modules/dashboard-batch/touch';
const DASHBOARD_PAGE = '/modules/apostrophe-jobs/dashboard';
const ROUTES = '/modules/apostrophe-jobs';
// A site sweeps the jobs of dead processes after this long without a heartbeat; both
// processes sharing a database get it, since it also sets how often a process beats.
const ORPHAN_AFTER = 3000;
const EDITOR_PERMISSIONS = [ 'edit' ];

// ---------------------------------------------------------------------------
// Sites, jobs and articles

// The browser site's modules plus `dashboard-batch` and, if given, options of apostrophe-jobs.
function dashboardModules(jobsOptions) {
  return { 'dashboard-batch': {}, ...(jobsOptions ? { 'apostrophe-jobs': jobsOptions } : {}) };
}

function openDashboardSite({ jobs, shortName, dropDatabase } = {}) {
  return openSite({ shortName, dropDatabase, modules: dashboardModules(jobs) });
}

// A site in a process of its own on the database `shortName`; it creates the admin.
async function spawnDashboardSite(shortName, jobs) {
  const child = await spawnSite({
    uri: suite.uri,
    modulesDir: MODULES,
    shortName,
    modules: siteModules({ modules: dashboardModules(jobs) }),
    admin: ADMIN
  });
  own(`site process ${child.pid}`, () => child.stop());
  return child;
}

function countJobs(jobs) {
  return countDocuments(jobs.db, {});
}

function jobsModule(site) {
  return site.apos.modules['apostrophe-jobs'];
}

// An in-process site with `n` draft articles: `{ site, jobs, ids }`.
async function siteWithArticles(n, jobsOptions) {
  const site = await openDashboardSite({ jobs: jobsOptions });
  return { site, jobs: jobsModule(site), ids: await insertDrafts(site, n) };
}

// Two sites on one database, both sweeping the jobs of dead processes after ORPHAN_AFTER: one
// in this process, and the owner, a process of its own, which creates the admin; `ownerJobs`
// are more options of the owner's apostrophe-jobs. Resolves `{ site, jobs, ids, owner,
// ownerClient }` with `n` draft articles, and a client logged in to the owner as the admin.
async function sitesSharingDatabase(n, ownerJobs = {}) {
  const shortName = sharedShortName();
  // Opened first so it is closed last: it drops the shared database.
  const site = await openDashboardSite({ shortName, dropDatabase: true, jobs: { orphanAfter: ORPHAN_AFTER } });
  const owner = await spawnDashboardSite(shortName, { orphanAfter: ORPHAN_AFTER, ...ownerJobs });
  return {
    site,
    jobs: jobsModule(site),
    ids: await insertDrafts(site, n),
    owner,
    ownerClient: await owner.login(ADMIN.username, ADMIN.password)
  };
}

// `dashboardAttempts` and `dashboardRuns` of each article, by id (0 when never set).
async function traces(site, ids) {
  const docs = await site.apos.docs.db.find({ _id: { $in: ids } }).toArray();
  const byId = new Map(docs.map((doc) => [ doc._id, { attempts: doc.dashboardAttempts || 0, runs: doc.dashboardRuns || 0 } ]));
  return new Map(ids.map((id) => [ id, byId.get(id) || { attempts: 0, runs: 0 } ]));
}

function setFail(site, ids, fail) {
  const update = fail ? { $set: { dashboardFail: true } } : { $unset: { dashboardFail: '' } };
  return site.apos.docs.db.updateMany({ _id: { $in: ids } }, update);
}

// A job started through the module's API in this process, as code that is not a batch
// does (`start`, then `end` when it is over): resolves its handle.
function startJob(jobs, title, userId) {
  return new Promise((resolve, reject) => jobs.start({ labels: { title }, userId },
    (err, job) => (err ? reject(err) : resolve(job))));
}

// Starts a touch job over `ids` as the user of `client` (a helpers/site.js client).
async function touch(client, ids, body = {}) {
  const started = await client.post(TOUCH, { ids, job: true, ...body });
  assert.equal(started.body.status, 'ok', `${TOUCH} answered ${JSON.stringify(started.body)}`);
  assert.ok(started.body.jobId, 'the touch route answered with a job id');
  return started.body.jobId;
}

// The same, and resolves the job's document once it has ended.
async function touchToEnd(jobs, client, ids, body) {
  return waitForEnd(jobs, await touch(client, ids, body));
}

// Posts JSON from the page as the site's browser code does ($.jsonCall: session, CSRF).
function postFromPage(page, url, body) {
  return page.evaluate(({ url, body }) => new Promise((resolve, reject) => {
    $.jsonCall(url, body, resolve, () => reject(new Error(`POST ${url} failed`)));
  }), { url, body });
}

const sorted = (ids) => [ ...ids ].sort();

// ---------------------------------------------------------------------------
// The dashboard in the page

// The admin bar's Jobs button opens the dashboard modal.
async function openDashboard(page) {
  const item = page.locator('[data-apos-admin-bar-item="apostrophe-jobs"]');
  await clickAdminBarItem(page, 'apostrophe-jobs');
  assert.equal((await item.innerText()).trim(), 'Jobs');
  const modal = page.locator('[data-modal].apos-jobs-dashboard');
  await modal.waitFor();
  const board = dashboardView(page, modal.locator('[data-apos-jobs-dashboard]'));
  await board.list.waitFor();
  return board;
}

// The dashboard within `root` (the modal's or the page's `[data-apos-jobs-dashboard]`).
function dashboardView(page, root) {
  return {
    root,
    list: root.locator('[data-apos-jobs-list]'),
    row: (id) => root.locator(`[data-apos-jobs-row="${id}"]`),
    filter: (name) => root.locator(`[data-apos-jobs-filter="${name}"]`),
    // Every row as displayed, in order.
    readRows() {
      return root.locator('[data-apos-jobs-row]').evaluateAll((rows) => rows.map((row) => {
        const text = (selector) => {
          const el = row.querySelector(selector);
          return el ? el.textContent.trim() : null;
        };
        const number = (selector) => {
          const shown = text(selector);
          return shown === null || shown === '' ? null : Number(shown);
        };
        return {
          id: row.getAttribute('data-apos-jobs-row'),
          status: row.getAttribute('data-apos-jobs-status'),
          interrupted: row.hasAttribute('data-apos-jobs-interrupted'),
          title: text('[data-apos-jobs-title]'),
          statusLabel: text('[data-apos-jobs-status-label]'),
          user: text('[data-apos-jobs-user]'),
          when: text('[data-apos-jobs-when]'),
          duration: text('[data-apos-jobs-duration]'),
          good: number('[data-apos-jobs-counts] [data-apos-jobs-good]'),
          bad: number('[data-apos-jobs-counts] [data-apos-jobs-bad]'),
          total: number('[data-apos-jobs-counts] [data-apos-jobs-total]'),
          bar: !!row.querySelector('[data-apos-progress-indicator]'),
          open: !!row.querySelector('[data-apos-jobs-open]'),
          stop: !!row.querySelector('[data-apos-jobs-action="stop"]')
        };
      }));
    },
    // Polls the rows until `predicate(rows)` holds.
    waitForRows(predicate, what, timeout = 10000) {
      return pollDisplay(() => this.readRows(), predicate, `the dashboard never listed ${what}`, timeout);
    },
    // Clicks a filter; resolves the rows once the list the server answered for it is shown.
    async showFilter(name, expectedIds) {
      const [ response ] = await Promise.all([
        page.waitForResponse((r) => r.url().endsWith(`${ROUTES}/dashboard-list`) && (r.request().postDataJSON() || {}).filter === name),
        this.filter(name).click()
      ]);
      const answer = await response.json();
      assert.equal(answer.status, 'ok', `dashboard-list (${name}) answered ${JSON.stringify(answer)}`);
      assert.equal(answer.total, expectedIds.length, `dashboard-list (${name}) counts ${answer.total} job(s)`);
      await root.locator(`[data-apos-jobs-filter="${name}"].apos-active`).waitFor();
      const rows = await this.waitForRows((shown) => shown.map((row) => row.id).join() === expectedIds.join(),
        `the jobs ${JSON.stringify(expectedIds)} under the filter "${name}"`);
      const active = await root.locator('[data-apos-jobs-filter].apos-active').evaluateAll((els) => els.map((el) => el.getAttribute('data-apos-jobs-filter')));
      assert.deepEqual(active, [ name ], 'only the clicked filter is active');
      return rows;
    },
    // Opens a job's page from its row.
    async openJob(id) {
      await this.row(id).locator('[data-apos-jobs-open]').click();
      const job = jobView(root, id);
      await job.root.waitFor();
      return job;
    }
  };
}

// A job's page in the dashboard.
function jobView(root, id) {
  const job = root.locator(`[data-apos-jobs-job="${id}"]`);
  return {
    root: job,
    action: (name) => job.locator(`[data-apos-jobs-action="${name}"]`),
    // The `data-apos-jobs-field` cells, by name, as displayed.
    readFields() {
      return job.locator('[data-apos-jobs-field]').evaluateAll((els) => Object.fromEntries(
        els.map((el) => [ el.getAttribute('data-apos-jobs-field'), el.textContent.trim() ])));
    },
    readFailedItems() {
      return job.locator('[data-apos-jobs-failed-item]').evaluateAll((els) => els.map((el) => ({
        id: el.getAttribute('data-apos-jobs-failed-item'),
        title: el.querySelector('[data-apos-jobs-failed-title]').textContent.trim(),
        message: el.querySelector('[data-apos-jobs-failed-message]').textContent.trim()
      })));
    }
  };
}

// Clicks a retry action (`retry-failed` or `resume`) of a job's page and follows what the
// browser asks: `rerun`, then the job's own route with the ids; resolves
// `{ rerun, request, jobId }` (the rerun answer, the route's request, the new job's id) once
// the progress modal has opened and asked for the new job.
async function clickRerun(page, job, action) {
  const isRoute = (r, url) => new URL(r.url()).pathname === url && r.method() === 'POST';
  const rerunAnswer = page.waitForResponse((r) => isRoute(r.request(), `${ROUTES}/rerun`));
  const routeRequest = page.waitForRequest((r) => isRoute(r, TOUCH));
  const routeAnswer = page.waitForResponse((r) => isRoute(r.request(), TOUCH));
  // The jobs the progress modal asks for (its `modal` and `progress` routes), from the click on.
  const asked = [];
  const onRequest = (r) => {
    if (isRoute(r, `${ROUTES}/modal`) || isRoute(r, `${ROUTES}/progress`)) {
      asked.push((r.postDataJSON() || {})._id);
    }
  };
  page.on('request', onRequest);
  try {
    await job.action(action).click();
    const rerun = await (await rerunAnswer).json();
    assert.equal(rerun.status, 'ok', `rerun answered ${JSON.stringify(rerun)}`);
    const request = await routeRequest;
    const started = await (await routeAnswer).json();
    assert.equal(started.status, 'ok', `${TOUCH} answered ${JSON.stringify(started)}`);
    await jobModal(page).modal.waitFor();
    await waitUntil(() => asked.includes(started.jobId), 10000,
      `the progress modal asked for the new job ${started.jobId} (it asked for ${JSON.stringify(asked)})`);
    return { rerun, request, jobId: started.jobId };
  } finally {
    page.off('request', onRequest);
  }
}

// ---------------------------------------------------------------------------
// Tests

test('an admin opens the dashboard from the admin bar: completed, stopped, failed and interrupted jobs, and filters that narrow the list', async (t) => {
  assertChromium();
  t.after(closeAll);
  const { site, jobs, ids, owner, ownerClient } = await sitesSharingDatabase(20);
  const client = await site.login(ADMIN.username, ADMIN.password);

  // Completed: four articles.
  const completed = await touchToEnd(jobs, client, ids.slice(0, 4));
  const completedId = completed._id;
  assert.equal(completed.status, 'completed');

  // Stopped: a slow batch, stopped at once through the cancel route.
  const stoppedId = await touch(client, ids.slice(4, 12), { stepMs: 300 });
  assert.equal((await client.post(`${ROUTES}/cancel`, { _id: stoppedId })).body.status, 'ok');
  const stopped = await waitForEnd(jobs, stoppedId);
  assert.equal(stopped.status, 'stopped');

  // Failed: a job of this process that its code ends unsuccessfully.
  const failedJob = await startJob(jobs, 'Import feed', owner.adminId);
  jobs.setTotal(failedJob, 5);
  jobs.good(failedJob, 2);
  jobs.bad(failedJob, 1);
  await jobs.end(failedJob, false);
  const failed = await waitForEnd(jobs, failedJob._id);
  assert.equal(failed.status, 'failed');

  // Interrupted: the process running it is killed; this site sweeps it.
  const interruptedId = await touch(ownerClient, ids.slice(12), { stepMs: 300 });
  await waitUntil(async () => (await readJob(site, interruptedId)).processed >= 1, 10000, 'the owner process counted an item');
  await owner.kill('SIGKILL');
  const interrupted = await waitForEnd(jobs, interruptedId, { timeout: 20000 });
  assert.equal(interrupted.status, 'failed');
  assert.equal(interrupted.interrupted, true);

  const { page, pageErrors } = await openBrowser();
  await logIn(page, site);
  const board = await openDashboard(page);
  const newestFirst = [ interruptedId, failedJob._id, stoppedId, completedId ];
  const rows = await board.waitForRows((shown) => shown.length === 4, 'four jobs');
  assert.deepEqual(rows.map((row) => row.id), newestFirst, 'newest first');
  assert.ok(await board.filter('all').evaluate((el) => el.classList.contains('apos-active')), 'the default filter is all');
  const byId = new Map(rows.map((row) => [ row.id, row ]));
  const expectRow = (doc, status, statusLabel, title) => {
    const row = byId.get(doc._id);
    assert.equal(row.status, status, `status of ${doc._id}`);
    assert.equal(row.interrupted, doc.interrupted === true, `interrupted of ${doc._id}`);
    assert.equal(row.statusLabel, statusLabel, `status label of ${doc._id}`);
    assert.equal(row.title, title, `title of ${doc._id}`);
    assert.match(row.user, /admin/, `who started ${doc._id}`);
    assert.ok(row.when && row.duration, `when and duration of ${doc._id}: ${JSON.stringify(row)}`);
    assert.deepEqual([ row.good, row.bad, row.total ], [ doc.good, doc.bad, doc.total ], `counts of ${doc._id}`);
    assert.ok(row.bar, `a progress bar for ${doc._id}`);
    assert.ok(row.open, `a link to the page of ${doc._id}`);
    assert.equal(row.stop, false, `no Stop for the ended job ${doc._id}`);
  };
  expectRow(completed, 'completed', 'Completed', 'Touch articles');
  expectRow(stopped, 'stopped', 'Stopped', 'Touch articles');
  expectRow(failed, 'failed', 'Failed', 'Import feed');
  expectRow(interrupted, 'failed', 'Failed', 'Touch articles');
  assert.deepEqual([ completed.good, completed.total ], [ 4, 4 ]);
  assert.deepEqual([ failed.good, failed.bad, failed.total ], [ 2, 1, 5 ]);
  await screenshot(page, 'dashboard-list');

  await board.showFilter('running', []);
  await board.showFilter('failed', [ interruptedId, failedJob._id ]);
  await board.showFilter('stopped', [ stoppedId ]);
  await board.showFilter('completed', [ completedId ]);
  await board.showFilter('all', newestFirst);

  // A job that run() did not start from a route cannot be run again: the page says why.
  const failedPage = await board.openJob(failedJob._id);
  assert.match((await failedPage.readFields()).status, /failed/i);
  await failedPage.root.locator('[data-apos-jobs-unavailable]').waitFor();
  assert.equal(await failedPage.action('retry-failed').count(), 0, 'no Retry for a job without a recorded route');
  assert.equal(await failedPage.action('resume').count(), 0, 'no Resume for a job without a recorded route');
  const refused = await postFromPage(page, `${ROUTES}/rerun`, { _id: failedJob._id, items: 'failed' });
  assert.equal(refused.status, 'unavailable', JSON.stringify(refused));
  assert.ok(refused.message && (await failedPage.root.locator('[data-apos-jobs-unavailable]').innerText()).includes(refused.message),
    `the page gives the reason the rerun route gives: ${refused.message}`);
  await failedPage.root.locator('[data-apos-jobs-back]').click();
  await board.waitForRows((shown) => shown.length === 4, 'the four jobs again, after Back');

  // The same dashboard as a page of its own.
  await page.goto(`${site.baseUrl}${DASHBOARD_PAGE}`);
  const fullPage = dashboardView(page, page.locator('[data-apos-jobs-dashboard]'));
  await fullPage.waitForRows((shown) => shown.map((row) => row.id).join() === newestFirst.join(), 'the four jobs on the page');
  assert.deepEqual(pageErrors, []);
});

test('Retry failed items: only the failed articles run again, in the unchanged progress modal', async (t) => {
  assertChromium();
  t.after(closeAll);
  const { site, jobs, ids } = await siteWithArticles(10);
  const failing = [ ids[1], ids[4], ids[7] ];
  await setFail(site, failing, true);
  const { page, pageErrors } = await openBrowser();
  await logIn(page, site);

  // The batch, started from the page as a module's browser code would.
  const started = await postFromPage(page, TOUCH, { ids, job: true });
  assert.equal(started.status, 'ok', JSON.stringify(started));
  const firstId = started.jobId;
  const first = await waitForEnd(jobs, firstId);
  assert.equal(first.status, 'completed', 'a batch whose items fail still completes');
  assert.deepEqual([ first.good, first.bad, first.total ], [ 7, 3, 10 ]);
  // The cause is fixed before the retry.
  await setFail(site, failing, false);

  const board = await openDashboard(page);
  const [ row ] = await board.waitForRows((shown) => shown.length === 1, 'the batch');
  assert.deepEqual([ row.id, row.status, row.statusLabel, row.good, row.bad, row.total ], [ firstId, 'completed', 'Completed', 7, 3, 10 ]);
  const job = await board.openJob(firstId);
  const fields = await job.readFields();
  assert.deepEqual([ fields.good, fields.bad, fields.total, fields.processed ], [ '7', '3', '10', '10' ]);
  const failedItems = await job.readFailedItems();
  assert.deepEqual(sorted(failedItems.map((item) => item.id)), sorted(failing));
  const titles = new Map((await site.apos.docs.db.find({ _id: { $in: failing } }).toArray()).map((doc) => [ doc._id, doc.title ]));
  for (const item of failedItems) {
    assert.equal(item.title, titles.get(item.id), `the failed item ${item.id} is named by its article's title`);
    assert.match(item.message, /marked to fail/, `the failed item ${item.id} shows its error`);
  }
  assert.equal(await job.root.locator('[data-apos-jobs-unavailable]').count(), 0, 'retrying is available');
  await screenshot(page, 'dashboard-job-failed-items');

  const { rerun, request, jobId: retryId } = await clickRerun(page, job, 'retry-failed');
  assert.equal(rerun.route, TOUCH);
  assert.deepEqual(sorted(rerun.ids), sorted(failing));
  assert.equal(request.headers()['x-apos-jobs-retry-of'], `${firstId}:failed`);
  const posted = request.postDataJSON();
  assert.deepEqual(sorted(posted.ids), sorted(failing), 'the route is posted the failed ids only');
  assert.ok(posted.job, 'as a job');

  const modal = jobModal(page);
  assert.equal((await modal.title.innerText()).trim(), 'Touch articles');
  await modal.waitForHeading('Completed', 30000);
  const shown = await modal.read();
  assert.deepEqual([ shown.good, shown.bad ], [ 3, 0 ]);
  await screenshot(page, 'dashboard-retry-completed');
  await modal.done.click();
  await modal.modal.waitFor({ state: 'detached' });

  const retry = await waitForEnd(jobs, retryId);
  assert.equal(retry.status, 'completed');
  assert.deepEqual([ retry.good, retry.bad, retry.total ], [ 3, 0, 3 ]);
  assert.deepEqual(retry.retryOf, { jobId: firstId, items: 'failed' });
  const after = await traces(site, ids);
  for (const id of ids) {
    const again = failing.includes(id);
    assert.deepEqual(after.get(id), { attempts: again ? 2 : 1, runs: 1 }, `article ${id} (${again ? 'failed, retried' : 'done the first time'})`);
  }

  // The new job's page says what it retries.
  await page.goto(`${site.baseUrl}${DASHBOARD_PAGE}`);
  const fullPage = dashboardView(page, page.locator('[data-apos-jobs-dashboard]'));
  await fullPage.waitForRows((rows) => rows.length === 2 && rows[0].id === retryId, 'the retry above the first job');
  const retryPage = await fullPage.openJob(retryId);
  await retryPage.root.locator('[data-apos-jobs-retry-of]').waitFor();
  assert.deepEqual(pageErrors, []);
});

test('Stop in the dashboard halts a slow batch: it ends stopped and the articles after it stay untouched', async (t) => {
  assertChromium();
  t.after(closeAll);
  const { site, jobs, ids } = await siteWithArticles(30);
  const { page, dialogs, pageErrors } = await openBrowser();
  await logIn(page, site);

  const started = await postFromPage(page, TOUCH, { ids, job: true, stepMs: 300 });
  assert.equal(started.status, 'ok', JSON.stringify(started));
  const jobId = started.jobId;

  const board = await openDashboard(page);
  const [ seen ] = await board.waitForRows((rows) => rows.length === 1 && rows[0].status === 'running', 'the running batch');
  assert.equal(seen.id, jobId);
  assert.equal(seen.statusLabel, 'In Progress...');
  assert.ok(seen.stop, 'a running batch offers Stop in its row');
  // The list refreshes itself while a job runs, and so does the job's page.
  await board.waitForRows((rows) => rows[0].good >= seen.good + 2, 'the count growing without a reload');
  await screenshot(page, 'dashboard-running');
  const job = await board.openJob(jobId);
  const { processed } = await job.readFields();
  assert.ok(await job.action('stop').isVisible(), 'a running batch offers Stop on its page');
  await pollDisplay(() => job.readFields(), (fields) => Number(fields.processed) >= Number(processed) + 2,
    'the job page never showed the processed count growing', 10000);
  await job.root.locator('[data-apos-jobs-back]').click();
  await board.row(jobId).waitFor();

  await board.row(jobId).locator('[data-apos-jobs-action="stop"]').click();
  const [ ended ] = await board.waitForRows((rows) => rows[0].status === 'stopped', 'the batch stopped');
  assert.equal(ended.statusLabel, 'Stopped');
  assert.equal(ended.stop, false, 'no Stop once it has stopped');

  const doc = await waitForEnd(jobs, jobId);
  assert.equal(doc.status, 'stopped');
  assert.ok(doc.processed > 0 && doc.processed < 30, `processed ${doc.processed} of 30`);
  assert.equal(doc.good, doc.processed);
  assert.deepEqual([ ended.good, ended.bad, ended.total ], [ doc.good, 0, 30 ], 'the row shows the final counts');
  // Concurrency 1 runs the ids in order: the first `processed` ran once, the rest never.
  const check = async () => {
    const now = await traces(site, ids);
    ids.forEach((id, i) => {
      const expected = i < doc.processed ? { attempts: 1, runs: 1 } : { attempts: 0, runs: 0 };
      assert.deepEqual(now.get(id), expected, `article ${i} of 30 (${doc.processed} processed)`);
    });
  };
  await check();
  // Something that must not happen: the job has ended (read above); watch for a while,
  // several items long.
  await delay(1500);
  await check();
  assert.deepEqual(dialogs.filter((message) => !/stop/i.test(message)), [], 'no other dialog');
  assert.deepEqual(pageErrors, []);
});

test('Resume after kill -9: the unfinished articles run once more, and every article has run exactly once', async (t) => {
  assertChromium();
  t.after(closeAll);
  // The owner writes its counts (and which items finished) every 100 ms rather than every
  // 250 ms, so that they are on record well before the next items finish.
  const { site, jobs, ids, owner, ownerClient } = await sitesSharingDatabase(20, { watchInterval: 100 });

  const firstId = await touch(ownerClient, ids, { stepMs: 400, concurrency: 2 });
  // Two items every 400 ms: killed right after the fourth is counted, while the next two
  // are still waiting (they write their run only after the wait).
  const deadline = Date.now() + 20000;
  for (;;) {
    const running = await readJob(site, firstId);
    if (running && running.processed >= 4) break;
    assert.ok(Date.now() < deadline, `the owner never counted 4 items: ${JSON.stringify(running)}`);
    await delay(10);
  }
  await owner.kill('SIGKILL');
  const first = await waitForEnd(jobs, firstId, { timeout: 20000 });
  assert.equal(first.status, 'failed');
  assert.equal(first.interrupted, true);
  assert.ok(first.processed >= 4 && first.processed < 20, `processed ${first.processed} of 20`);
  const before = await traces(site, ids);
  const ran = ids.filter((id) => before.get(id).runs === 1);
  assert.equal(ran.length, first.processed, 'the articles that ran are those the job counted');
  const unfinished = ids.filter((id) => before.get(id).runs === 0);

  const { page, pageErrors } = await openBrowser();
  await logIn(page, site);
  const board = await openDashboard(page);
  const [ row ] = await board.waitForRows((rows) => rows.length === 1, 'the interrupted batch');
  assert.deepEqual([ row.id, row.status, row.interrupted ], [ firstId, 'failed', true ]);
  const job = await board.openJob(firstId);
  const fields = await job.readFields();
  assert.match(fields.status, /failed/i);
  assert.deepEqual([ fields.processed, fields.total ], [ String(first.processed), '20' ]);
  assert.ok(fields.process, 'the page names the process that ran the job');
  await job.action('resume').waitFor();
  assert.equal(await job.action('retry-failed').count(), 0, 'no Retry: no item failed');
  await screenshot(page, 'dashboard-job-interrupted');

  const { rerun, request, jobId: resumeId } = await clickRerun(page, job, 'resume');
  assert.deepEqual(sorted(rerun.ids), sorted(unfinished));
  assert.equal(request.headers()['x-apos-jobs-retry-of'], `${firstId}:unfinished`);
  const posted = request.postDataJSON();
  assert.deepEqual(sorted(posted.ids), sorted(unfinished), 'the route is posted the unfinished ids only');
  assert.equal(Number(posted.stepMs), 400, 'with the rest of the first request');
  assert.equal(Number(posted.concurrency), 2, 'with the rest of the first request');

  const modal = jobModal(page);
  await modal.waitForHeading('Completed', 60000);
  await modal.done.click();
  await modal.modal.waitFor({ state: 'detached' });

  const resumed = await waitForEnd(jobs, resumeId);
  assert.equal(resumed.status, 'completed');
  assert.equal(resumed.total, first.total - first.processed, 'the new job runs what the first did not finish');
  assert.deepEqual([ resumed.good, resumed.bad ], [ resumed.total, 0 ]);
  assert.deepEqual(resumed.retryOf, { jobId: firstId, items: 'unfinished' });
  const after = await traces(site, ids);
  ids.forEach((id, i) => assert.equal(after.get(id).runs, 1, `article ${i} ran exactly once`));
  assert.deepEqual(pageErrors, []);
});

test('an editor who is not an admin has no Jobs button, the page answers 403 and the routes forbidden; so do they for anonymous users', async (t) => {
  assertChromium();
  t.after(closeAll);
  const { site, jobs, ids } = await siteWithArticles(2);
  const editor = { username: 'editor', password: 'editor-password' };
  await createUser(site.apos, { ...editor, permissions: EDITOR_PERMISSIONS });
  const admin = await site.login(ADMIN.username, ADMIN.password);
  const { _id: jobId } = await touchToEnd(jobs, admin, ids);
  // What the editor is refused, an admin gets.
  assert.equal((await admin.get(DASHBOARD_PAGE)).status, 200);
  assert.equal((await admin.post(`${ROUTES}/dashboard-list`, { filter: 'all', page: 1 })).body.status, 'ok');

  const { page, pageErrors } = await openBrowser();
  await logIn(page, site, editor);
  await page.locator('[data-apos-admin-bar-item]').first().waitFor({ state: 'attached' });
  assert.equal(await page.locator('[data-apos-admin-bar-item="apostrophe-jobs"]').count(), 0, 'no Jobs button');
  const response = await page.request.get(`${site.baseUrl}${DASHBOARD_PAGE}`);
  assert.equal(response.status(), 403);
  for (const [ route, body ] of [
    [ 'dashboard-list', { filter: 'all', page: 1 } ],
    [ 'dashboard-job', { _id: jobId } ],
    [ 'rerun', { _id: jobId, items: 'unfinished' } ],
    [ 'delete', { _id: jobId } ],
    [ 'delete', { olderThanDays: 0 } ]
  ]) {
    const answer = await postFromPage(page, `${ROUTES}/${route}`, body);
    assert.deepEqual(answer, { status: 'forbidden' }, `${route} ${JSON.stringify(body)}`);
  }
  assert.ok(await readJob(site, jobId), 'the job is still there');

  // Anonymous: no session at all, then a session with its CSRF token.
  const anonymousGet = await fetch(`${site.baseUrl}${DASHBOARD_PAGE}`, { redirect: 'manual' });
  assert.equal(anonymousGet.status, 403);
  const anonymous = createClient(site.baseUrl, { csrfCookieName: site.csrfCookieName });
  await anonymous.get('/');
  const list = await anonymous.post(`${ROUTES}/dashboard-list`, { filter: 'all', page: 1 });
  assert.equal(list.status, 200);
  assert.equal(list.body.status, 'forbidden');
  assert.deepEqual(pageErrors, []);
});

test('ownerOnly: each editor sees the Jobs button and only their own jobs; the admin sees them all', async (t) => {
  assertChromium();
  t.after(closeAll);
  const { site, jobs, ids } = await siteWithArticles(4, { ownerOnly: true });
  const editorA = { username: 'editor-a', password: 'editor-a-password' };
  const editorB = { username: 'editor-b', password: 'editor-b-password' };
  await createUser(site.apos, { ...editorA, permissions: EDITOR_PERMISSIONS });
  await createUser(site.apos, { ...editorB, permissions: EDITOR_PERMISSIONS });
  const { _id: jobA } = await touchToEnd(jobs, await site.login(editorA.username, editorA.password), ids.slice(0, 2));
  const { _id: jobB } = await touchToEnd(jobs, await site.login(editorB.username, editorB.password), ids.slice(2));

  const { page, pageErrors } = await openBrowser();
  await logIn(page, site, editorA);
  const board = await openDashboard(page);
  const rows = await board.waitForRows((shown) => shown.length > 0, 'editor A\'s jobs');
  assert.deepEqual(rows.map((row) => row.id), [ jobA ], 'editor A sees their own job only');
  assert.match(rows[0].user, /editor-a/);
  await board.showFilter('completed', [ jobA ]);
  const other = await postFromPage(page, `${ROUTES}/dashboard-job`, { _id: jobB });
  assert.notEqual(other.status, 'ok', `editor A cannot read editor B's job: ${JSON.stringify(other).slice(0, 200)}`);
  assert.equal(other.html, undefined);
  await screenshot(page, 'dashboard-owner-only');

  const admin = await openBrowser();
  await logIn(admin.page, site);
  const adminBoard = await openDashboard(admin.page);
  const all = await adminBoard.waitForRows((shown) => shown.length === 2, 'both editors\' jobs');
  assert.deepEqual(all.map((row) => row.id), [ jobB, jobA ], 'the admin sees both, newest first');
  assert.match(all[0].user, /editor-b/);
  assert.match(all[1].user, /editor-a/);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(admin.pageErrors, []);
});

test('20 jobs a page, Delete on a job\'s page, and Delete ended jobs by age from the list', async (t) => {
  assertChromium();
  t.after(closeAll);
  const site = await openDashboardSite();
  const jobs = jobsModule(site);
  // 22 ended jobs, a few ms apart (the list is by start time), then one that runs.
  const ended = [];
  for (let i = 1; i <= 22; i++) {
    const job = await startJob(jobs, `Job ${i}`);
    await jobs.end(job, i % 2 === 0);
    ended.unshift(job._id);
    await delay(5);
  }
  const running = await startJob(jobs, 'Still running');
  let newestFirst = [ running._id, ...ended ];

  const { page, dialogs, pageErrors } = await openBrowser();
  await logIn(page, site);
  const board = await openDashboard(page);
  const listed = (ids) => (rows) => rows.map((row) => row.id).join() === ids.join();
  await board.waitForRows(listed(newestFirst.slice(0, 20)), 'the 20 newest jobs on page 1');
  await board.root.locator('[data-apos-jobs-page="2"]').click();
  await board.waitForRows(listed(newestFirst.slice(20)), 'the 3 oldest jobs on page 2');
  await board.root.locator('[data-apos-jobs-page="1"]').click();
  await board.waitForRows(listed(newestFirst.slice(0, 20)), 'page 1 again');

  // Delete on the page of the newest ended job, after a confirm().
  const doomed = ended[0];
  const job = await board.openJob(doomed);
  const dialogsBefore = dialogs.length;
  const [ deletedOne ] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith(`${ROUTES}/delete`)),
    job.action('delete').click()
  ]);
  assert.deepEqual(await deletedOne.json(), { status: 'ok', deleted: 1 });
  assert.equal(dialogs.length, dialogsBefore + 1, 'Delete asked for a confirmation');
  assert.ok(!(await readJob(site, doomed)), 'the job is deleted');
  newestFirst = newestFirst.filter((id) => id !== doomed);
  // Back to the list, unless the dashboard went there by itself.
  await board.list.waitFor({ timeout: 3000 }).catch(() => job.root.locator('[data-apos-jobs-back]').click());
  await board.waitForRows(listed(newestFirst.slice(0, 20)), 'the list without the deleted job');

  // Delete ended jobs older than a day: none is. Then every ended job; the running one stays.
  const purge = async (days) => {
    await board.root.locator('select[data-apos-jobs-purge-age]').selectOption(String(days));
    const before = dialogs.length;
    const [ response ] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith(`${ROUTES}/delete`)),
      board.root.locator('[data-apos-jobs-action="purge"]').click()
    ]);
    assert.equal(dialogs.length, before + 1, 'Delete ended jobs asked for a confirmation');
    return response.json();
  };
  assert.deepEqual(await purge(1), { status: 'ok', deleted: 0 });
  assert.equal(await countJobs(jobs), 22);
  assert.deepEqual(await purge(0), { status: 'ok', deleted: 21 });
  assert.equal(await countJobs(jobs), 1);
  assert.ok(await readJob(site, running._id), 'the running job is kept');
  await board.waitForRows(listed([ running._id ]), 'the running job alone');
  await jobs.end(running, true);
  assert.deepEqual(pageErrors, []);
});
