'use strict';

// `npm run demo` as a newcomer meets it: the console says where the site is, the login and
// how to stop, and nothing else; the home page leads to the Articles manager, which lists
// articles and runs a batch operation in the progress modal; Ctrl-C stops the demo and says
// it has. The demo runs as `npm run demo` runs it (scripts/demo.js, in a process of its own)
// on a fresh database of the test server, and is driven in headless Chromium.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const childProcess = require('child_process');
const fs = require('fs');
const path = require('path');
const { MongoClient } = require('mongodb');
const { getFreePort } = require('../scripts/mongo-server');
const { testUri, waitUntil } = require('./helpers/jobs');
const { uriWithDb } = require('./helpers/site');
const { openBrowser, closeAll, clickAdminBarItem } = require('./helpers/browser');

const DEMO = path.join(__dirname, '..', 'scripts', 'demo.js');
const SCREENSHOTS = path.join(__dirname, '..', 'artifacts', 'screenshots');
// A new database runs Apostrophe's migrations and gets 1,000 articles; asset bundling
// comes on top on a cold machine.
const START_DEADLINE_MS = 180000;
const READY_LINE = 'Press Ctrl-C to stop the demo.';

const dbName = `ajn-test-demo-${process.pid}`;
let demo = null;
let stdout = '';
let stderr = '';
let exited = null;
let url = null;

const output = () => `--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`;

before(async () => {
  const port = await getFreePort();
  demo = childProcess.spawn(process.execPath, [ DEMO ], {
    env: { ...process.env, PORT: String(port), APOS_MONGODB_URI: uriWithDb(testUri(), dbName) },
    stdio: [ 'ignore', 'pipe', 'pipe' ]
  });
  demo.stdout.on('data', (chunk) => { stdout += chunk; });
  demo.stderr.on('data', (chunk) => { stderr += chunk; });
  demo.on('exit', (code, signal) => { exited = { code, signal }; });
  url = `http://127.0.0.1:${port}/`;
  await waitUntil(() => {
    if (exited) {
      throw new Error(`the demo exited (${JSON.stringify(exited)}) before it said it was running`);
    }
    return stdout.includes(READY_LINE);
  }, START_DEADLINE_MS, 'the demo said it was running').catch((error) => {
    error.message += `\n${output()}`;
    throw error;
  });
});

after(async () => {
  if (demo && !exited) {
    demo.kill('SIGKILL');
  }
  const client = await MongoClient.connect(testUri());
  try {
    await client.db(dbName).dropDatabase();
  } finally {
    await client.close();
  }
});

test('the start-up console holds what a newcomer needs: where the site is, the login, how to stop', () => {
  const lines = stdout.split('\n').map((line) => line.trim()).filter(Boolean);
  assert.ok(lines.includes(`The demo is running: ${url}`), stdout);
  assert.ok(lines.includes(`Log in at ${url}login as admin / demo.`), stdout);
  assert.ok(lines.includes(READY_LINE), stdout);
  assert.doesNotMatch(stdout, /migration/i);
  assert.doesNotMatch(stdout + stderr, /WARNINGS ABOVE ARE OK/);
  // Database, site, seeded articles, the banner: a screenful at most.
  assert.ok(lines.length <= 10, `the demo printed ${lines.length} lines:\n${stdout}`);
  assert.equal(stderr, '', 'nothing went to stderr');
});

test('logged in, the home page opens the Articles manager, which lists articles and runs "Publish Selected" as a job; the jobs dashboard lists it with the seeded failed and stopped jobs', async (t) => {
  const { page, pageErrors } = await openBrowser();
  t.after(closeAll);
  page.setDefaultTimeout(30000);
  fs.mkdirSync(SCREENSHOTS, { recursive: true });

  await page.goto(`${url}login`);
  await page.locator('[data-apos-login-form] input[name="username"]').fill('admin');
  await page.locator('[data-apos-login-form] input[name="password"]').fill('demo');
  await Promise.all([
    page.waitForURL((address) => address.pathname === '/'),
    page.locator('[data-apos-login-form] [type="submit"]').click()
  ]);

  await page.getByRole('button', { name: 'Open the Articles manager' }).click();
  const manager = page.locator('[data-modal].apos-manager');
  await manager.waitFor();
  const rows = manager.locator('[data-piece]');
  await rows.first().waitFor();
  const listed = await rows.count();
  assert.ok(listed > 0, 'the manager lists articles');
  const operations = manager.locator('select[name="batch-operation"]');
  assert.ok(await operations.isVisible(), 'the batch operations are visible');
  const choices = (await operations.locator('option').allInnerTexts()).map((text) => text.trim());
  assert.ok(choices.includes('Publish Selected (0)'), `batch operations offered: ${choices.join(', ')}`);
  await page.screenshot({ path: path.join(SCREENSHOTS, 'demo-manager.png') });

  await manager.locator('.apos-modal-filters input[name="select-all"] + .apos-field-input-checkbox-indicator').click();
  await operations.selectOption('publish');
  assert.equal((await operations.locator('option:checked').innerText()).trim(), `Publish Selected (${listed})`);
  const [ response ] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/modules/articles/publish') && r.request().method() === 'POST'),
    manager.locator('[data-apos-batch-operation="publish"]').click()
  ]);
  const body = await response.json();
  assert.equal(body.status, 'ok', JSON.stringify(body));
  const progress = page.locator('[data-modal].apos-job-modal');
  await progress.locator('[data-apos-job-progress-container] h3', { hasText: /^\s*Completed\s*$/ }).waitFor({ timeout: 60000 });
  const good = await progress.locator('table.apos-job-results td').first().innerText();
  assert.equal(Number(good), listed, 'the modal counts every selected article');
  const client = await MongoClient.connect(testUri());
  try {
    const published = await client.db(dbName).collection('aposDocs').countDocuments({ type: 'article', published: true });
    assert.equal(published, listed, 'every selected article is published');
  } finally {
    await client.close();
  }
  await page.screenshot({ path: path.join(SCREENSHOTS, 'demo-batch-completed.png') });

  // The jobs dashboard starts with the jobs the demo seeded, and the batch just run.
  await page.goto(url);
  await clickAdminBarItem(page, 'apostrophe-jobs');
  const dashboard = page.locator('[data-modal].apos-jobs-dashboard');
  await dashboard.locator('[data-apos-jobs-row]').first().waitFor();
  const statuses = await dashboard.locator('[data-apos-jobs-row]').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-apos-jobs-status')));
  assert.deepEqual([ ...statuses ].sort(), [ 'completed', 'completed', 'failed', 'stopped' ], `rows: ${statuses}`);
  await dashboard.locator('[data-apos-jobs-row][data-apos-jobs-status="stopped"] [data-apos-jobs-open]').click();
  await dashboard.locator('[data-apos-jobs-action="resume"]').waitFor();
  await page.screenshot({ path: path.join(SCREENSHOTS, 'demo-dashboard-stopped.png') });
  assert.deepEqual(pageErrors, []);
});

test('Ctrl-C stops the demo and says it has stopped', async () => {
  demo.kill('SIGINT');
  await new Promise((resolve) => (exited ? resolve() : demo.once('exit', resolve)));
  assert.deepEqual(exited, { code: 0, signal: null }, `stdout:\n${stdout}\nstderr:\n${stderr}`);
  const lines = stdout.trim().split('\n');
  assert.match(stdout, /Stopping the demo \(SIGINT\)\.\.\./);
  assert.equal(lines[lines.length - 1], 'The demo has stopped.');
});
