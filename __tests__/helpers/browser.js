'use strict';

// What the real-browser suites share: the test database and the fixture sites they boot
// (`fixtures/site-browser`, which enables this package), headless Chromium driven with
// playwright-core, logging in through the login form, the admin bar, the unchanged 2.x
// progress modal, screenshots, and closing everything a test opened.
//
//   const browser = require('./helpers/browser');
//   const suite = browser.useBrowserSuite();   // at the top of the file: before() and after()
//   test('...', async (t) => {
//     browser.assertChromium();
//     t.after(browser.closeAll);
//     const site = await browser.openSite();
//     const { page } = await browser.openBrowser();
//     await browser.logIn(page, site);
//     ...
//   });
//
// Uses APOS_JOBS_TEST_URI when `npm test` provides it, else starts its own SecantusDB server.
// Needs Chromium at /usr/bin/chromium (Debian package `chromium`, which `npm test` installs
// when it runs as root), or AJN_CHROMIUM naming another Chromium binary; without it every
// test fails saying so. Screenshots go to artifacts/screenshots/.

const { before, after } = require('node:test');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { startServer } = require('../../scripts/mongo-server');
const { chromiumPath } = require('../../scripts/system-deps');
const { bootSite, createAdmin, insertArticles } = require('./site');

const CHROMIUM = chromiumPath();
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
];
const MODULES = path.join(__dirname, '..', 'fixtures', 'site-browser', 'lib', 'modules');
const SCREENSHOTS = path.join(__dirname, '..', '..', 'artifacts', 'screenshots');
const ADMIN = { username: 'admin', password: 'browser-test-password' };
// The modal polls every second; a heading must show up within a few polls.
const POLLS = 5000;

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let server = null;
let uri = null;
// Everything a test opened, closed newest first by the test's own t.after() and, whatever
// happened, by the file's after().
const openResources = [];

// The file's before() and after(): the database server (the one `npm test` started, else one
// of the file's own) and the screenshots folder; at the end, whatever is still open. Returns
// `{ uri }` (set once before() has run), for sites a test starts itself.
function useBrowserSuite() {
  const suite = {};
  before(async () => {
    uri = process.env.APOS_JOBS_TEST_URI;
    if (!uri) {
      server = await startServer({});
      uri = server.uri;
    }
    suite.uri = uri;
    fs.mkdirSync(SCREENSHOTS, { recursive: true });
  });
  after(async () => {
    await closeAll();
    if (server) await server.stop();
  });
  return suite;
}

async function closeAll() {
  while (openResources.length) {
    const { name, close } = openResources.pop();
    try {
      await close();
    } catch (err) {
      process.stderr.write(`[browser helpers] closing ${name} failed: ${err.stack || err}\n`);
    }
  }
}

function own(name, close) {
  openResources.push({ name, close });
}

// ---------------------------------------------------------------------------
// Sites

function isPlainObject(value) {
  return value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype;
}

// Module options shared by every browser site, with `modules` (more modules, or options of
// these) merged over them, one level deep. Notifications long-poll for 10 s by default; a
// short poll lets a site drain its requests quickly when the test is over.
function siteModules({ slowUpdateMs = 0, modules = {} } = {}) {
  const base = {
    'browser-jobs': {},
    'test-articles': { slowUpdateMs },
    'apostrophe-notifications': { longPollingTimeout: 1000 }
  };
  for (const [ name, options ] of Object.entries(modules)) {
    base[name] = isPlainObject(base[name]) && isPlainObject(options) ? { ...base[name], ...options } : options;
  }
  return base;
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

// An in-process site running this package, with an admin (ADMIN). With `shortName` (also the
// database name) it shares that database with another site, which creates the admin; the
// database is then dropped only with `dropDatabase`. `modules` as for siteModules.
async function openSite({ slowUpdateMs = 0, shortName, dropDatabase, modules } = {}) {
  const site = await bootSite({
    uri,
    modulesDir: MODULES,
    shortName,
    modules: siteModules({ slowUpdateMs, modules })
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

// A database name for sites of several processes that share one database.
function sharedShortName() {
  return `ajn-test-browser-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

// `n` draft (unpublished) articles, inserted in bulk; resolves their ids.
async function insertDrafts(site, n) {
  const docs = await insertArticles(site.apos, n, { published: false, bulkAbove: 0 });
  return docs.map((doc) => doc._id);
}

function readJob(site, jobId) {
  return site.apos.modules['apostrophe-jobs'].db.findOne({ _id: jobId });
}

// ---------------------------------------------------------------------------
// Browser

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

// A fresh headless Chromium profile. Dialogs (the manager's "Are you sure...?") are
// accepted and recorded; page errors are recorded so tests can assert there were none.
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

// Clicks the admin bar's item for `name` (a module name), opening the bar first when its
// items are folded away behind the logo.
async function clickAdminBarItem(page, name) {
  const item = page.locator(`[data-apos-admin-bar-item="${name}"]`);
  if (!(await item.isVisible())) {
    await page.locator('[data-apos-admin-bar-logo]').click();
  }
  await item.click();
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
    waitUntil(predicate, what, timeout = 30000) {
      return pollDisplay(() => this.read(), predicate, `the jobs modal never showed ${what}`, timeout);
    }
  };
}

// Reads what a page displays (`read()`, which may fail while the page redraws) every 100 ms
// until `predicate` holds of it, and resolves it; after `timeout` ms, fails with `failure`
// and the last thing read.
async function pollDisplay(read, predicate, failure, timeout) {
  const deadline = Date.now() + timeout;
  let shown;
  while (Date.now() < deadline) {
    shown = await read().catch(() => null);
    if (shown && predicate(shown)) return shown;
    await delay(100);
  }
  throw new Error(`${failure}; last shown: ${JSON.stringify(shown)}`);
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

module.exports = {
  CHROMIUM,
  CHROMIUM_ARGS,
  MODULES,
  SCREENSHOTS,
  ADMIN,
  POLLS,
  delay,
  useBrowserSuite,
  closeAll,
  own,
  siteModules,
  trackRequests,
  openSite,
  sharedShortName,
  insertDrafts,
  readJob,
  assertChromium,
  openBrowser,
  logIn,
  clickAdminBarItem,
  jobModal,
  pollDisplay,
  polled,
  escapeRegExp,
  screenshot,
  openProgress
};
