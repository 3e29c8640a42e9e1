#!/usr/bin/env node
// `npm run bench`: the stock ApostropheCMS 2.227.12 `apostrophe-jobs` against this package,
// on the same fixture site (bench/fixture.js) and the same database server, in alternating
// rounds (stock first in odd rounds, native first in even ones), each run in a fresh child
// process (bench/child.js) so that peak RSS is comparable. Prints medians and the ratio
// stock/native next to the goals, and writes BENCHMARKS.md (the generated part between the
// bench markers; anything outside them is kept).
//
// Database: APOS_MONGODB_URI if set (databases `ajn-test-*` are created and dropped),
// else a SecantusDB started for the run (scripts/mongo-server.js), used without retryable
// writes (see main()).
//
// Environment (all optional; defaults give the full run, ~10 minutes on 2 cores for figures
// 1-7, plus ~20 minutes for figure 8):
//   BENCH_ROUNDS=3            rounds per figure (>= 1; >= 3 for the published figures)
//   BENCH_FIGURES=1,2,3,4,5,6,7,8
//   BENCH_N1=2000,10000       figure 1 sizes
//   BENCH_N2=2000             figure 2 size
//   BENCH_N3=5000             figure 3 size
//   BENCH_JOBS4=50            figure 4 live jobs
//   BENCH_STOPS5=5            figure 5 stops per round
//   BENCH_N6=400              figure 6 items (of BENCH_DELAY6=5 ms)
//   BENCH_N7=100000           figure 7 size
//   BENCH_STOCK7=0            1: also run figure 7 on stock (minutes on SecantusDB)
//   BENCH_N8=2000             figure 8: ids of the findOne+updateOne case (0: leave it out)
//   BENCH_ITEMS8=0.1:20000,1:5000,10:2000,100:200
//                             figure 8: synthetic item times in ms and N for each (items
//                             under 1 ms busy-wait, then call back on setImmediate; the
//                             others are a setTimeout). The N make runs of seconds at
//                             concurrency 1: the kernel counts a thread's CPU in 10 ms ticks,
//                             so a 4 s run of 40 items could not tell 50 µs per item apart.
//   BENCH_CONC8=1,4           figure 8: concurrencies (`run`'s option; the bare loop's pool)
//   BENCH_PAIRS8=3            figure 8: bare/job pairs per case and round (one fresh site
//                             process per round), after a warm-up pair
//   BENCH_OUT=BENCHMARKS.md   '' to write nothing
//   BENCH_JSON=               a path to also write the raw samples as JSON
//   BENCH_QUIET_CORES=0.25    before each timed run, wait until other processes use less
//   BENCH_QUIET_WAIT=60       than this many cores, for at most this many seconds
//   BENCH_QUIET_BUDGET=240    (and at most this many seconds of waiting in the whole run)

'use strict';

const childProcess = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { performance } = require('perf_hooks');
const { MongoClient } = require('mongodb');
const { startServer } = require('../scripts/mongo-server.js');
const { renderChart } = require('./chart.js');
const { createClient, login } = require('../__tests__/helpers/site.js');

const ROOT = path.resolve(__dirname, '..');
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------
// Configuration

function envInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name} must be a non-negative integer, not ${raw}`);
  return value;
}

function envList(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  return raw.split(',').map((s) => s.trim()).filter(Boolean);
}

const CONFIG = {
  rounds: Math.max(1, envInt('BENCH_ROUNDS', 3)),
  figures: new Set(envList('BENCH_FIGURES', [ '1', '2', '3', '4', '5', '6', '7', '8' ]).map(Number)),
  n1: envList('BENCH_N1', [ '2000', '10000' ]).map(Number),
  n2: envInt('BENCH_N2', 2000),
  n3: envInt('BENCH_N3', 5000),
  jobs4: envInt('BENCH_JOBS4', 50),
  stops5: Math.max(1, envInt('BENCH_STOPS5', 5)),
  n6: envInt('BENCH_N6', 400),
  delay6: envInt('BENCH_DELAY6', 5),
  n7: envInt('BENCH_N7', 100000),
  stock7: envInt('BENCH_STOCK7', 0) === 1,
  n8: envInt('BENCH_N8', 2000),
  items8: envList('BENCH_ITEMS8', [ '0.1:20000', '1:5000', '10:2000', '100:200' ]).map((spec) => {
    const [ ms, n ] = spec.split(':').map(Number);
    if (!(ms > 0) || !Number.isInteger(n) || n < 1) throw new Error(`BENCH_ITEMS8: expected ms:N, not ${spec}`);
    return { ms, n };
  }),
  conc8: envList('BENCH_CONC8', [ '1', '4' ]).map(Number),
  pairs8: Math.max(1, envInt('BENCH_PAIRS8', 3)),
  out: process.env.BENCH_OUT === undefined ? path.join(ROOT, 'BENCHMARKS.md') : process.env.BENCH_OUT,
  json: process.env.BENCH_JSON || '',
  quietCores: Number(process.env.BENCH_QUIET_CORES || 0.25),
  quietWaitS: envInt('BENCH_QUIET_WAIT', 60),
  quietBudgetS: envInt('BENCH_QUIET_BUDGET', 240)
};

const VARIANTS = [ 'stock', 'native' ];
const ADMIN = { username: 'bench', password: 'bench-password' };

function log(message) {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

// ---------------------------------------------------------------------------
// The database server and the observer (the parent's own client)

let server = null;
let uri;
let observer;
// Commands this process sent, so they can be taken out of the server's counters.
let ownCommands = 0;

async function connectObserver() {
  observer = new MongoClient(uri, { monitorCommands: true, appName: 'ajn-bench-observer' });
  observer.on('commandStarted', () => { ownCommands++; });
  await observer.connect();
}

const OPS = [ 'insert', 'query', 'update', 'delete', 'getmore', 'command' ];

// The server's operation counters, with how many of them were ours.
async function opcounters() {
  const status = await observer.db('admin').command({ serverStatus: 1 });
  const counters = status.opcounters;
  if (!counters) {
    throw new Error('serverStatus has no opcounters: this server cannot count commands server-side');
  }
  const out = { own: ownCommands };
  for (const op of OPS) out[op] = Number(counters[op] || 0);
  return out;
}

// Server-side deltas: writes, queries, and all commands less the observer's own.
function opDelta(before, after) {
  const d = {};
  for (const op of OPS) d[op] = after[op] - before[op];
  d.own = after.own - before.own;
  d.writes = d.insert + d.update + d.delete;
  d.all = OPS.reduce((sum, op) => sum + d[op], 0) - d.own;
  // The observer only reads (find) and runs serverStatus.
  return d;
}

// CPU seconds used so far by a local process (utime + stime), or null when it is not ours
// to read (a remote database).
const CLOCK_TICKS = Number(tryExec('getconf CLK_TCK')) || 100;
function cpuSeconds(pid) {
  if (!pid) return null;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch (e) {
    return null;
  }
}

// CPU seconds the whole machine has been busy (all cores), from /proc/stat.
function machineBusySeconds() {
  try {
    const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
    return (total - fields[3] - fields[4]) / CLOCK_TICKS;
  } catch (e) {
    return null;
  }
}

const ownCpuSeconds = () => {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
};

// CPU shares (in cores) over a measurement: the database server, the site process, and
// everything else on the machine (other processes than the benchmark's: noise).
function cpuMeter(site) {
  const serverPid = server && server.pid;
  const sitePid = site && site.pid;
  const start = {
    at: now(),
    server: cpuSeconds(serverPid),
    site: cpuSeconds(sitePid),
    machine: machineBusySeconds(),
    own: ownCpuSeconds()
  };
  return function() {
    const seconds = (now() - start.at) / 1000;
    const delta = (after, before) => (after === null || before === null ? null : after - before);
    const serverD = delta(cpuSeconds(serverPid), start.server);
    const siteD = delta(cpuSeconds(sitePid), start.site);
    const machineD = delta(machineBusySeconds(), start.machine);
    const ownD = ownCpuSeconds() - start.own;
    const others = machineD === null ? null : machineD - ownD - (serverD || 0) - (siteD || 0);
    return {
      serverCpu: serverD === null ? null : serverD / seconds,
      siteCpu: siteD === null ? null : siteD / seconds,
      otherCpu: others === null ? null : Math.max(0, others / seconds)
    };
  };
}

// Waits (at most BENCH_QUIET_WAIT seconds) until other processes use less than
// BENCH_QUIET_CORES cores, measured over half a second, so that timed runs are not shared
// with someone else's build or test run. Returns what was seen last.
let quietBudgetMs = null;
async function waitForQuiet() {
  if (quietBudgetMs === null) quietBudgetMs = CONFIG.quietBudgetS * 1000;
  const began = Date.now();
  const deadline = began + Math.min(CONFIG.quietWaitS * 1000, quietBudgetMs);
  let seen;
  for (;;) {
    const meter = cpuMeter(null);
    await sleep(500);
    seen = meter().otherCpu;
    if (seen === null || seen < CONFIG.quietCores || Date.now() > deadline) break;
  }
  quietBudgetMs = Math.max(0, quietBudgetMs - (Date.now() - began - 500));
  if (seen !== null && seen >= CONFIG.quietCores) {
    log(`other processes still use ${seen.toFixed(2)} cores; measuring anyway`);
  }
  return seen;
}

function jobsCollection(site) {
  return observer.db(site.shortName).collection('aposJobs');
}

// ---------------------------------------------------------------------------
// Child sites

async function spawnSite(variant) {
  const env = { ...process.env, AJN_BENCH_CHILD: JSON.stringify({ uri, native: variant === 'native', admin: ADMIN }) };
  // apostrophe-db would prefer it over the site's own database name.
  delete env.APOS_MONGODB_URI;
  const child = childProcess.fork(path.join(__dirname, 'child.js'), [], {
    env,
    cwd: ROOT,
    execArgv: [ '--expose-gc' ],
    stdio: [ 'ignore', 'inherit', 'inherit', 'ipc' ]
  });
  let sequence = 0;
  const pending = new Map();
  let readyResolve;
  let readyReject;
  const ready = new Promise((resolve, reject) => { readyResolve = resolve; readyReject = reject; });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  exited.then(({ code, signal }) => {
    readyReject(new Error(`${variant} site exited before it was ready (${code}, ${signal})`));
    for (const { reject } of pending.values()) reject(new Error(`${variant} site exited (${code}, ${signal})`));
    pending.clear();
  });
  child.on('message', (message) => {
    if (message && 'ready' in message) {
      return message.ready ? readyResolve(message) : readyReject(new Error(message.error));
    }
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    return message.error ? waiter.reject(new Error(message.error)) : waiter.resolve(message.result);
  });
  const ask = (cmd, extra = {}) => new Promise((resolve, reject) => {
    const id = ++sequence;
    pending.set(id, { resolve, reject });
    child.send({ id, cmd, ...extra });
  });
  const info = await ready;
  // A logged-in browser session (session and CSRF cookies) through the real login form.
  const loggedIn = await login(info.baseUrl, ADMIN.username, ADMIN.password, { csrfCookieName: info.csrfCookieName });
  // The same session, without the helper's 30 s request timeout (stock's progress route can
  // wait that long behind its own writes).
  const client = createClient(info.baseUrl, { csrfCookieName: info.csrfCookieName, jar: loggedIn.jar, timeoutMs: 600000 });
  async function stop() {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
    try {
      await ask('stop');
    } catch (e) { /* exiting */ }
    await exited;
    clearTimeout(timer);
  }
  return { variant, ...info, ask, client, stop };
}

async function withSite(variant, fn) {
  const site = await spawnSite(variant);
  try {
    return await fn(site);
  } finally {
    await site.stop();
  }
}

// Synthetic ids in cuid shape (25 lowercase alphanumerics starting with `c`).
function syntheticIds(n, tag = 'b') {
  return Array.from({ length: n }, (_, i) => `c${tag}${i.toString(36).padStart(23, '0')}`);
}

async function postRun(site, body) {
  const response = await site.client.post('/modules/bench-fixture/run', { job: true, ...body });
  if (response.status !== 200 || !response.body || response.body.status !== 'ok' || !response.body.jobId) {
    throw new Error(`${site.variant}: run answered ${response.status} ${JSON.stringify(response.body).slice(0, 300)}`);
  }
  return response.body.jobId;
}

// Waits until the job has ended and its counts are final, as the fixture's instruments see
// it (end acknowledged), then as the database sees it. Returns the document.
async function waitForJob(site, jobId, n, { timeoutMs = 600000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const bench = await site.ask('bench');
    if (bench.endAckedAt[jobId]) break;
    if (Date.now() > deadline) throw new Error(`${site.variant}: job ${jobId} did not end within ${timeoutMs} ms`);
    await sleep(20);
  }
  for (;;) {
    const doc = await jobsCollection(site).findOne({ _id: jobId });
    if (doc && doc.ended && doc.processed === n) return doc;
    if (Date.now() > deadline) {
      throw new Error(`${site.variant}: job ${jobId} ended with processed=${doc && doc.processed}, not ${n}`);
    }
    await sleep(20);
  }
}

// When the job document reached `ended: true` with its final counts: the acknowledgement of
// the last write that made it so (the end update; for stock, also its last `$inc`).
function completedAt(bench, jobId) {
  return Math.max(bench.endAckedAt[jobId] || 0, bench.lastWriteAckAt[jobId] || 0);
}

async function idleRss(site) {
  await site.ask('gc');
  await sleep(1100);
  // Peak since the previous call is discarded; `idle` is the median of the last second.
  return site.ask('rss');
}

// Node-side commands (the site's own driver) as { total, writes, byKey }.
function summarizeCommands(byKey) {
  let total = 0;
  let writes = 0;
  let nonJobWrites = 0;
  let jobQueries = 0;
  let queries = 0;
  for (const [key, count] of Object.entries(byKey)) {
    total += count;
    const [name, collection] = key.split(' ');
    const isWrite = [ 'insert', 'update', 'delete', 'findAndModify' ].includes(name);
    if (isWrite) {
      writes += count;
      if (collection !== 'aposJobs') nonJobWrites += count;
    }
    if (name === 'find') {
      queries += count;
      if (collection === 'aposJobs') jobQueries += count;
    }
  }
  return { total, writes, nonJobWrites, queries, jobQueries, byKey };
}

// ---------------------------------------------------------------------------
// Figures. Each returns one sample object per call.

// Figure 1 (and 7): a no-op change over n synthetic ids, in a fresh site.
async function batchRun(site, n, { mode = 'noop' } = {}) {
  const ids = syntheticIds(n);
  await waitForQuiet();
  const rssBefore = await idleRss(site);
  await site.ask('reset');
  await site.ask('commands');
  const ops0 = await opcounters();
  const cpu = cpuMeter(site);
  const jobId = await postRun(site, { ids, mode });
  const doc = await waitForJob(site, jobId, n);
  const cpuShares = cpu();
  const bench = await site.ask('bench');
  const rss = await site.ask('rss');
  const ops1 = await opcounters();
  const nodeCommands = summarizeCommands(await site.ask('commands'));
  const delta = opDelta(ops0, ops1);
  const ms = completedAt(bench, jobId) - bench.runAt;
  return {
    n,
    ms,
    status: doc.status,
    // Job writes: every write the server saw, less the site's own writes elsewhere
    // (sessions); the observer writes nothing.
    jobWrites: delta.writes - nodeCommands.nonJobWrites,
    serverCommands: delta.all,
    nodeCommands: nodeCommands.total,
    nodeByKey: nodeCommands.byKey,
    rssIdle: rssBefore.idle,
    rssPeak: rss.peak,
    rssAboveIdle: rss.peak - rssBefore.idle,
    ...cpuShares
  };
}

// Figure 2: findOne + updateOne on aposDocs per id.
async function docsRun(site, articleIds, concurrency) {
  await waitForQuiet();
  await site.ask('reset');
  await site.ask('commands');
  const ops0 = await opcounters();
  const cpu = cpuMeter(site);
  const jobId = await postRun(site, { ids: articleIds, mode: 'docs', concurrency });
  await waitForJob(site, jobId, articleIds.length);
  const cpuShares = cpu();
  const bench = await site.ask('bench');
  const ops1 = await opcounters();
  const nodeCommands = summarizeCommands(await site.ask('commands'));
  const delta = opDelta(ops0, ops1);
  return {
    n: articleIds.length,
    concurrency,
    ms: completedAt(bench, jobId) - bench.runAt,
    serverCommands: delta.all,
    serverWrites: delta.writes,
    nodeCommands: nodeCommands.total,
    nodeByKey: nodeCommands.byKey,
    // Everything the server saw that the site's Node driver did not send: the Rust driver.
    otherCommands: delta.all - nodeCommands.total,
    otherQueries: delta.query - nodeCommands.queries,
    otherWrites: delta.writes - nodeCommands.writes,
    ...cpuShares
  };
}

// Figure 3: the loop's cost per item with a change that calls back at once, against the same
// change in a plain promise loop. This package's runs are cheap, so each is the median of
// three in the same site; stock's take a database write per item and run once.
async function loopCost(site, n) {
  const out = {};
  const cpu = cpuMeter(site);
  const reps = site.variant === 'native' ? 3 : 1;
  const perItem = async (body, items) => {
    const values = [];
    for (let rep = 0; rep < reps; rep++) {
      await waitForQuiet();
      await site.ask('reset');
      const jobId = await postRun(site, { ...body, ids: syntheticIds(items, `${body.mode[0]}${rep}`) });
      // Let stock's fire-and-forget writes drain before the next measurement.
      await waitForJob(site, jobId, items);
      const bench = await site.ask('bench');
      values.push((bench.endCalledAt[jobId] - bench.firstChangeAt) * 1000 / items);
    }
    return median(values);
  };
  for (const mode of [ 'sync', 'noop' ]) {
    out[mode] = await perItem({ mode }, n);
    const baselines = [];
    for (let rep = 0; rep < 3; rep++) {
      baselines.push((await site.ask('baseline', { mode, n })).ms * 1000 / n);
    }
    out[`${mode}Baseline`] = median(baselines);
  }
  if (site.variant === 'native') {
    // One item per hop: the full Rust -> JavaScript -> Rust round trip for every item.
    out.hop = await perItem({ mode: 'sync', maxRange: 1 }, Math.min(n, 2000));
  }
  out.otherCpu = cpu().otherCpu;
  return out;
}

// Figure 4: watcher queries per second with k live stoppable jobs.
async function watcherRate(site, k, windowMs) {
  await waitForQuiet();
  const jobIds = [];
  for (let i = 0; i < k; i++) {
    // Items of 1 s: the jobs outlive the window, and their count writes stay few.
    jobIds.push(await postRun(site, { ids: syntheticIds(Math.ceil(windowMs / 1000) + 4, `w${i}`), mode: 'slow', delay: 1000 }));
  }
  await sleep(500);
  await site.ask('commands');
  const ops0 = await opcounters();
  const t0 = now();
  await sleep(windowMs);
  const ops1 = await opcounters();
  const seconds = (now() - t0) / 1000;
  const nodeCommands = summarizeCommands(await site.ask('commands'));
  const delta = opDelta(ops0, ops1);
  // The observer ran no find in the window; the site's Node driver's finds are counted
  // apart, so what remains is the Rust driver's.
  const sample = {
    k,
    seconds,
    serverQueriesPerSecond: delta.query / seconds,
    nodeJobQueriesPerSecond: nodeCommands.jobQueries / seconds,
    otherQueriesPerSecond: (delta.query - nodeCommands.queries) / seconds
  };
  sample.watcherQueriesPerSecond = site.variant === 'stock' ? sample.nodeJobQueriesPerSecond : sample.otherQueriesPerSecond;
  // Wait for them all to end, so the next measurement starts quiet.
  const deadline = Date.now() + 120000;
  while (Date.now() < deadline) {
    const left = await jobsCollection(site).countDocuments({ _id: { $in: jobIds }, ended: { $ne: true } });
    if (!left) break;
    await sleep(250);
  }
  return sample;
}

// Figure 5: POST cancel -> the document has `ended: true`, with items of 20 ms. The
// observer polls the document back to back (one find at a time) from the moment the cancel
// is sent.
async function stopLatency(site) {
  await waitForQuiet();
  const jobId = await postRun(site, { ids: syntheticIds(1000, 's'), mode: 'slow', delay: 20 });
  // A random moment, so the stop request lands at any phase of the 250 ms watcher.
  await sleep(400 + Math.random() * 500);
  const sentAt = now();
  const response = await site.client.post('/modules/apostrophe-jobs/cancel', { _id: jobId });
  if (response.status !== 200 || response.body.status !== 'ok') {
    throw new Error(`${site.variant}: cancel answered ${response.status} ${JSON.stringify(response.body)}`);
  }
  const answeredAt = now();
  let polls = 0;
  let lastPollSentAt;
  for (;;) {
    lastPollSentAt = now();
    const doc = await jobsCollection(site).findOne({ _id: jobId }, { projection: { ended: 1, status: 1 } });
    polls++;
    if (doc && doc.ended) {
      const seenAt = now();
      return {
        ms: seenAt - sentAt,
        // The write landed between the last poll's sending and its answer.
        resolutionMs: seenAt - lastPollSentAt,
        cancelRouteMs: answeredAt - sentAt,
        pollMs: (seenAt - answeredAt) / polls,
        status: doc.status
      };
    }
    if (now() - sentAt > 30000) throw new Error(`${site.variant}: job ${jobId} did not stop within 30 s`);
  }
}

// Figure 6: the progress route sampled every 50 ms (one request at a time, as the browser's
// modal polls, only much more often: a request leaves 50 ms after the previous one left, or
// as soon as it is answered if that took longer) against the true number of finished items.
async function progressLag(site, n, delay) {
  await waitForQuiet();
  await site.ask('reset', { recordFinishTimes: true, n });
  const jobId = await postRun(site, { ids: syntheticIds(n, 'p'), mode: 'slow', delay, recordFinishTimes: true });
  const samples = [];
  const deadline = Date.now() + 120000;
  for (;;) {
    if (Date.now() > deadline) throw new Error(`${site.variant}: job ${jobId} did not end within 120 s`);
    const sentAt = now();
    const response = await site.client.post('/modules/apostrophe-jobs/progress', { _id: jobId });
    const answeredAt = now();
    const job = response.body && response.body.job;
    if (!job) throw new Error(`${site.variant}: progress answered ${JSON.stringify(response.body).slice(0, 200)}`);
    samples.push({ sentAt, answeredAt, processed: job.processed || 0 });
    if (job.ended && job.processed === n) break;
    const wait = sentAt + 50 - now();
    if (wait > 0) await sleep(wait);
  }
  const { finishTimes, reads } = await site.ask('bench', { finishTimes: true });
  // The gap when the answer arrives (what the modal would show: an upper bound, since the
  // document was read a little earlier) and when the request was sent (a lower bound).
  // In ms: how long the oldest item the answer does not count had been finished.
  const finishedBy = (t) => {
    let lo = 0;
    let hi = finishTimes.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (finishTimes[mid] <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  const lagAt = (t, processed) => (finishedBy(t) > processed ? t - finishTimes[processed] : 0);
  let maxLagMs = 0;
  let maxLagSentMs = 0;
  let maxGapItems = 0;
  for (const sample of samples) {
    maxGapItems = Math.max(maxGapItems, finishedBy(sample.answeredAt) - sample.processed);
    maxLagMs = Math.max(maxLagMs, lagAt(sample.answeredAt, sample.processed));
    maxLagSentMs = Math.max(maxLagSentMs, lagAt(sample.sentAt, sample.processed));
  }
  // The module's own share: the age of what the route's database read saw (at the read's
  // answer: an upper bound), without Apostrophe's request handling around it.
  let maxLagReadMs = 0;
  for (const read of reads.filter((r) => r.id === jobId && typeof r.processed === 'number')) {
    maxLagReadMs = Math.max(maxLagReadMs, lagAt(read.answeredAt, read.processed));
  }
  return {
    maxLagMs,
    maxLagSentMs,
    maxLagReadMs,
    reads: reads.length,
    maxGapItems,
    samples: samples.length,
    routeMs: median(samples.map((x) => x.answeredAt - x.sentAt)),
    itemMs: (finishTimes[finishTimes.length - 1] - finishTimes[0]) / Math.max(1, finishTimes.length - 1)
  };
}

// Figure 8: what running work through `run` costs against the same work in a bare promise
// pool, in the same site process, on the same ids, with the same `change` and `req`
// (fixture.costRun has the clock points). Runs go bare, job, bare, job, …, bare after a
// discarded warm-up pair (on a quarter of the ids), and each job run is compared with the
// mean of the bare runs either side of it: a drift that is linear over the three runs (the
// database getting slower, other load coming or going) cancels out, where comparing each job
// with the bare run before it would charge the job with it.
async function jobCost(site, spec, concurrency) {
  const n = spec.ids.length;
  const one = async (which, items) => {
    const cpu = cpuMeter(site);
    // A run whose end the fixture never sees (an engine whose API its hooks do not know)
    // fails the benchmark instead of waiting forever.
    let timer;
    const limitMs = 600000;
    const run = await Promise.race([
      site.ask('cost', { which, mode: spec.mode, concurrency }),
      new Promise((resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`figure 8 ${spec.key}: a ${which} run did not end within ${limitMs / 1000} s`)), limitMs);
      })
    ]).finally(() => clearTimeout(timer));
    const shares = cpu();
    if (run.errors) throw new Error(`figure 8 ${spec.key}: ${run.errors} items of the bare loop failed`);
    if (which === 'job') {
      // The end is acknowledged: the document is final.
      const doc = await jobsCollection(site).findOne({ _id: run.jobId });
      if (!doc || !doc.ended || doc.status !== 'completed' || doc.processed !== items || doc.bad) {
        throw new Error(`figure 8 ${spec.key}: job ${run.jobId} ended ${JSON.stringify(doc && { status: doc.status, processed: doc.processed, bad: doc.bad })}, not ${items} good items`);
      }
    }
    // Lets the run's trailing work (the engine's last wake-ups, a scavenge) finish before
    // the next run is timed.
    await sleep(100);
    return { which, ms: run.ms, cpuUs: run.cpuUs, threads: run.threads, split: run.split, otherCpu: shares.otherCpu, serverCpu: shares.serverCpu };
  };
  await waitForQuiet();
  const idle = await site.ask('idleCpu', { ms: 1000 });
  const warm = spec.ids.slice(0, Math.max(1, Math.ceil(n / 4)));
  await site.ask('costCase', { ids: warm, delay: spec.delay });
  await one('bare', warm.length);
  await one('job', warm.length);
  await site.ask('costCase', { ids: spec.ids, delay: spec.delay });
  const bare = [ await one('bare', n) ];
  const job = [];
  for (let i = 0; i < CONFIG.pairs8; i++) {
    job.push(await one('job', n));
    bare.push(await one('bare', n));
  }
  return job.map((j, i) => {
    const bareMs = (bare[i].ms + bare[i + 1].ms) / 2;
    const bareCpuUs = (bare[i].cpuUs + bare[i + 1].cpuUs) / 2;
    // The added CPU by thread group (µs per item; clock-tick resolution).
    const addedThreads = {};
    for (const group of Object.keys(j.threads || {})) {
      addedThreads[group] = (j.threads[group] - (bare[i].threads[group] + bare[i + 1].threads[group]) / 2) / n;
    }
    return {
      n,
      concurrency,
      bareMsPerItem: bareMs / n,
      jobMsPerItem: j.ms / n,
      addedPct: 100 * (j.ms / bareMs - 1),
      bareCpuUsPerItem: bareCpuUs / n,
      jobCpuUsPerItem: j.cpuUs / n,
      addedCpuUs: (j.cpuUs - bareCpuUs) / n,
      // The job's added wall time per run, split: its fixed parts (inserting the job and
      // replying; the end update) and what is left for the items' loop.
      addedMs: j.ms - bareMs,
      startMs: j.split.startMs,
      endMs: j.split.endMs,
      loopAddedMs: j.split.loopMs - bareMs,
      addedMainCpuUs: addedThreads.main,
      addedRustCpuUs: addedThreads.rust,
      addedOtherThreadsCpuUs: addedThreads.other,
      bareSwitchesPerItem: (bare[i].threads.switches + bare[i + 1].threads.switches) / 2 / n,
      jobSwitchesPerItem: j.threads.switches / n,
      // The site's CPU while idle, per ms of wall (before the case's warm-up).
      idleCpuUsPerMs: idle.cpuUs / idle.ms,
      otherCpu: Math.max(...[ bare[i], j, bare[i + 1] ].map((r) => r.otherCpu || 0)),
      // The database server's CPU (cores) during the runs: the job's own writes cost it too.
      bareServerCpu: ((bare[i].serverCpu || 0) + (bare[i + 1].serverCpu || 0)) / 2,
      jobServerCpu: j.serverCpu,
      runs: [ bare[i], j, bare[i + 1] ]
    };
  });
}

// Figure 8's cases: the realistic change on the articles of figure 2, then the synthetic ones.
function costCases(articleIds) {
  const cases = [];
  if (articleIds) {
    cases.push({ key: 'docs', label: 'findOne+updateOne per id', mode: 'docs', delay: undefined, ids: articleIds });
  }
  for (const { ms, n } of CONFIG.items8) {
    cases.push({
      key: `t${ms}`,
      label: ms < 1 ? `${ms} ms items (busy-wait, then setImmediate)` : `${ms} ms items (setTimeout)`,
      mode: ms < 1 ? 'spin' : 'slow',
      delay: ms,
      ids: syntheticIds(n, 'j')
    });
  }
  return cases;
}

// ---------------------------------------------------------------------------
// Statistics and reporting

function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function max(values) {
  return values.reduce((a, b) => Math.max(a, b), -Infinity);
}

const results = {};

function record(key, variant, sample) {
  results[key] = results[key] || { stock: [], native: [] };
  results[key][variant].push(sample);
}

function pick(key, variant, field) {
  return ((results[key] || {})[variant] || []).map((s) => s[field]);
}

function med(key, variant, field) {
  return median(pick(key, variant, field));
}

const MB = 1024 * 1024;
const fmt = (x, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : '–');
const fmtMs = (x) => (Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x.toFixed(1)) : '–');
const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(1)}×` : '–');
const verdict = (ok) => (ok === null ? '–' : ok ? 'met' : '**missed**');

function buildRows() {
  const rows = [];
  const add = (figure, what, stock, native, ratioText, goal, ok) => rows.push({ figure, what, stock, native, ratio: ratioText, goal, ok });

  for (const n of CONFIG.figures.has(1) ? CONFIG.n1 : []) {
    const key = `f1-${n}`;
    const s = med(key, 'stock', 'ms');
    const t = med(key, 'native', 'ms');
    const speedGoal = n >= 10000 ? 20 : 10;
    add('1', `no-op change, N=${n}: run → ended with processed=N (ms)`, fmtMs(s), fmtMs(t), ratio(s, t),
      `≥${speedGoal}× stock`, Number.isFinite(s / t) ? s / t >= speedGoal : null);
    const sw = med(key, 'stock', 'jobWrites') / n;
    const tw = med(key, 'native', 'jobWrites') / n;
    add('1', `  job writes per item`, fmt(sw, 3), fmt(tw, 4), '', '≤0.02 (stock 1)', Number.isFinite(tw) ? tw <= 0.02 : null);
    const sc = med(key, 'stock', 'serverCommands') / n;
    const tc = med(key, 'native', 'serverCommands') / n;
    add('1', `  commands per item, server-side (all drivers)`, fmt(sc, 3), fmt(tc, 4), '', '', null);
    const snc = med(key, 'stock', 'nodeCommands') / n;
    const tnc = med(key, 'native', 'nodeCommands') / n;
    add('1', `  commands per item, site's Node driver (commandStarted)`, fmt(snc, 3), fmt(tnc, 4), '', '', null);
    const sr = med(key, 'stock', 'rssPeak') / MB;
    const tr = med(key, 'native', 'rssPeak') / MB;
    add('1', `  peak RSS (MB)`, fmt(sr), fmt(tr), '', '', null);
    const sa = med(key, 'stock', 'rssAboveIdle') / MB;
    const ta = med(key, 'native', 'rssAboveIdle') / MB;
    add('1', `  peak RSS above idle (MB)`, fmt(sa), fmt(ta), '', '', null);
  }

  if (CONFIG.figures.has(2)) {
    const s = med('f2-c1', 'stock', 'ms');
    const t1 = med('f2-c1', 'native', 'ms');
    const t4 = med('f2-c4', 'native', 'ms');
    const n = CONFIG.n2;
    add('2', `findOne+updateOne per id, N=${n}, concurrency 1 (ms)`, fmtMs(s), fmtMs(t1), ratio(s, t1), '≥1.4× stock',
      Number.isFinite(s / t1) ? s / t1 >= 1.4 : null);
    add('2', `  concurrency 4 (native; stock has none) (ms)`, fmtMs(s), fmtMs(t4), ratio(s, t4), '≥3× stock',
      Number.isFinite(s / t4) ? s / t4 >= 3 : null);
    const base = med('f2-base', 'stock', 'msPerItem');
    const baseNative = med('f2-base', 'native', 'msPerItem');
    add('2', `  ms per item: the change alone in a plain loop, no job (500 ids, a separate warm run) / in the job`,
      `${fmt(base, 2)} / ${fmt(s / n, 2)}`, `${fmt(baseNative, 2)} / ${fmt(t1 / n, 2)}`, '', '', null);
    const serverSecondsPerItem = med('f2-c1', 'native', 'serverCpu') * (t1 / n) / 1000;
    const floor = serverSecondsPerItem * n * 1000;
    add('2', `  database-bound floor: N × server CPU per item at c1 (ms), best possible ratio`, '',
      fmtMs(floor), ratio(s, floor), '', null);
    const sc = med('f2-c1', 'stock', 'serverCommands') / n;
    const tc = med('f2-c1', 'native', 'serverCommands') / n;
    add('2', `  commands per item at c1, server-side`, fmt(sc, 3), fmt(tc, 3), '', '≤2.05', Number.isFinite(tc) ? tc <= 2.05 : null);
    const tc4 = med('f2-c4', 'native', 'serverCommands') / n;
    add('2', `  commands per item at c4, server-side`, '', fmt(tc4, 3), '', '', null);
    const to = med('f2-c1', 'native', 'otherCommands') / n;
    const so = med('f2-c1', 'stock', 'otherCommands') / n;
    add('2', `  of which not from the site's Node driver (Rust driver) at c1`, fmt(so, 3), fmt(to, 3), '', '', null);
    add('2', `  of which Rust writes / Rust queries at c1 (per item)`, '', `${fmt(med('f2-c1', 'native', 'otherWrites') / n, 3)} / ${fmt(med('f2-c1', 'native', 'otherQueries') / n, 3)}`, '', '', null);
    const pct = (x) => (Number.isFinite(x) ? `${(100 * x).toFixed(0)}%` : '–');
    add('2', `  database server CPU at c1 / c4 (of one core)`, pct(med('f2-c1', 'stock', 'serverCpu')),
      `${pct(med('f2-c1', 'native', 'serverCpu'))} / ${pct(med('f2-c4', 'native', 'serverCpu'))}`, '', '', null);
    add('2', `  site process CPU at c1 / c4 (of one core)`, pct(med('f2-c1', 'stock', 'siteCpu')),
      `${pct(med('f2-c1', 'native', 'siteCpu'))} / ${pct(med('f2-c4', 'native', 'siteCpu'))}`, '', '', null);
  }

  if (CONFIG.figures.has(3)) {
    const n = CONFIG.n3;
    const ss = med('f3', 'stock', 'sync');
    const ts = med('f3', 'native', 'sync');
    const tb = med('f3', 'native', 'syncBaseline');
    add('3', `loop cost per item, change calls back at once, N=${n} (µs)`, fmt(ss, 2), fmt(ts, 2), ratio(ss, ts), '≤5 µs',
      Number.isFinite(ts) ? ts <= 5 : null);
    add('3', `  same change in a plain promise loop, no job (µs)`, fmt(med('f3', 'stock', 'syncBaseline'), 2), fmt(tb, 2), '', '', null);
    add('3', `  native loop less the plain loop: the Rust↔JS share (µs)`, '', fmt(ts - tb, 2), '', '', null);
    const sn = med('f3', 'stock', 'noop');
    const tn = med('f3', 'native', 'noop');
    add('3', `  no-op via setImmediate (µs)`, fmt(sn, 2), fmt(tn, 2), ratio(sn, tn), '', null);
    add('3', `  setImmediate no-op in a plain promise loop (µs)`, fmt(med('f3', 'stock', 'noopBaseline'), 2), fmt(med('f3', 'native', 'noopBaseline'), 2), '', '', null);
    add('3', `  one item per hop (maxRange 1): full Rust→JS→Rust round trip (µs)`, '', fmt(med('f3', 'native', 'hop'), 1), '', '', null);
  }

  if (CONFIG.figures.has(4)) {
    for (const k of [ 1, CONFIG.jobs4 ]) {
      const s = med(`f4-${k}`, 'stock', 'watcherQueriesPerSecond');
      const t = med(`f4-${k}`, 'native', 'watcherQueriesPerSecond');
      add('4', `watcher queries/s per process, ${k} live stoppable job${k > 1 ? 's' : ''}`, fmt(s), fmt(t), ratio(s, t),
        `≤4 (stock ${4 * k})`, Number.isFinite(t) ? t <= 4.2 : null);
    }
  }

  if (CONFIG.figures.has(5)) {
    const s = med('f5', 'stock', 'ms');
    const t = med('f5', 'native', 'ms');
    const smax = max(pick('f5', 'stock', 'ms'));
    const tmax = max(pick('f5', 'native', 'ms'));
    add('5', 'stop latency, POST cancel → ended: true, 20 ms items (ms, median)', fmtMs(s), fmtMs(t), ratio(s, t), '≤300 + 20 ms', Number.isFinite(t) ? t <= 320 : null);
    add('5', '  worst of all samples (ms)', fmtMs(smax), fmtMs(tmax), '', '≤300 + 20 ms', Number.isFinite(tmax) ? tmax <= 320 : null);
    add('5', '  of which the cancel route itself (ms, median)', fmtMs(med('f5', 'stock', 'cancelRouteMs')), fmtMs(med('f5', 'native', 'cancelRouteMs')), '', '', null);
    add('5', '  observation resolution: last poll round trip (ms, median)', fmtMs(med('f5', 'stock', 'resolutionMs')), fmtMs(med('f5', 'native', 'resolutionMs')), '', '', null);
  }

  if (CONFIG.figures.has(6)) {
    const s = med('f6', 'stock', 'maxLagMs');
    const t = med('f6', 'native', 'maxLagMs');
    add('6', `progress lag, largest per run (ms), N=${CONFIG.n6} items of ${CONFIG.delay6} ms`, fmtMs(s), fmtMs(t), '', '≤150 ms',
      Number.isFinite(t) ? t <= 150 : null);
    add('6', '  worst of all runs (ms)', fmtMs(max(pick('f6', 'stock', 'maxLagMs'))), fmtMs(max(pick('f6', 'native', 'maxLagMs'))), '', '≤150 ms',
      pick('f6', 'native', 'maxLagMs').length ? max(pick('f6', 'native', 'maxLagMs')) <= 150 : null);
    add('6', '  age of what the route\'s database read saw (ms; no route overhead)', fmtMs(med('f6', 'stock', 'maxLagReadMs')), fmtMs(med('f6', 'native', 'maxLagReadMs')), '', '', null);
    add('6', '  lower bound: lag when the request was sent (ms)', fmtMs(med('f6', 'stock', 'maxLagSentMs')), fmtMs(med('f6', 'native', 'maxLagSentMs')), '', '', null);
    add('6', '  largest gap in items (median of runs)', fmt(med('f6', 'stock', 'maxGapItems'), 0), fmt(med('f6', 'native', 'maxGapItems'), 0), '', '', null);
    add('6', '  progress route round trip (ms, median)', fmtMs(med('f6', 'stock', 'routeMs')), fmtMs(med('f6', 'native', 'routeMs')), '', '', null);
  }

  if (CONFIG.figures.has(7)) {
    const n = CONFIG.n7;
    const s = med('f7', 'stock', 'ms');
    const t = med('f7', 'native', 'ms');
    add('7', `no-op change, N=${n}: time (ms)`, fmtMs(s), fmtMs(t), ratio(s, t), '', null);
    const ta = med('f7', 'native', 'rssAboveIdle') / MB;
    add('7', '  peak RSS above the idle process (MB)', fmt(med('f7', 'stock', 'rssAboveIdle') / MB), fmt(ta), '', '≤20 MB',
      Number.isFinite(ta) ? ta <= 20 : null);
    add('7', '  job writes per item', fmt(med('f7', 'stock', 'jobWrites') / n, 3), fmt(med('f7', 'native', 'jobWrites') / n, 5), '', '', null);
  }

  if (CONFIG.figures.has(8)) {
    // Medians over all pairs of all rounds; the range over the pairs follows the added figure.
    const signed = (x, digits) => (Number.isFinite(x) ? `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(digits)}` : '–');
    const perItemMs = (x) => (!Number.isFinite(x) ? '–' : x >= 100 ? x.toFixed(1) : x >= 10 ? x.toFixed(2) : x >= 1 ? x.toFixed(3) : x.toFixed(4));
    const range = (values, digits) => `${signed(Math.min(...values), digits)}…${signed(max(values), digits)}`;
    for (const spec of costCases(CONFIG.n8 ? [] : null)) {
      for (const c of CONFIG.conc8) {
        const key = `f8-${spec.key}-c${c}`;
        if (!results[key]) continue;
        const n = pick(key, 'native', 'n')[0];
        const pct = med(key, 'native', 'addedPct');
        const cpu = med(key, 'native', 'addedCpuUs');
        add('8', `job cost against the bare loop: ${spec.label}, N=${n}, concurrency ${c}: ms per item, bare / job (added wall; range over pairs)`, '',
          `${perItemMs(med(key, 'native', 'bareMsPerItem'))} / ${perItemMs(med(key, 'native', 'jobMsPerItem'))} (${signed(pct, 1)}%; ${range(pick(key, 'native', 'addedPct'), 1)})`,
          '', '≤5% wall', Number.isFinite(pct) ? pct <= 5 : null);
        add('8', `  site CPU per item, bare / job (added; range over pairs) (µs)`, '',
          `${fmt(med(key, 'native', 'bareCpuUsPerItem'), 1)} / ${fmt(med(key, 'native', 'jobCpuUsPerItem'), 1)} (${signed(cpu, 1)}; ${range(pick(key, 'native', 'addedCpuUs'), 1)})`,
          '', '≤50 µs', Number.isFinite(cpu) ? cpu <= 50 : null);
        add('8', `  job's added wall per run (ms): start (run → loop) + end (end → acknowledged), the rest in the loop; database server CPU, bare / job (cores)`, '',
          `${signed(med(key, 'native', 'addedMs'), 1)}: ${fmt(med(key, 'native', 'startMs'), 1)} + ${fmt(med(key, 'native', 'endMs'), 1)}, ${signed(med(key, 'native', 'loopAddedMs'), 1)}; ${fmt(med(key, 'native', 'bareServerCpu'), 2)} / ${fmt(med(key, 'native', 'jobServerCpu'), 2)}`,
          '', '', null);
        add('8', `  added CPU per item by thread: JS main / Rust engine (tokio) / others (µs); context switches per item, bare / job`, '',
          `${[ 'addedMainCpuUs', 'addedRustCpuUs', 'addedOtherThreadsCpuUs' ].map((f) => signed(med(key, 'native', f), 1)).join(' / ')}; ${fmt(med(key, 'native', 'bareSwitchesPerItem'), 2)} / ${fmt(med(key, 'native', 'jobSwitchesPerItem'), 2)}`,
          '', '', null);
      }
    }
    const idle = median(Object.keys(results).filter((k) => k.startsWith('f8-')).flatMap((k) => pick(k, 'native', 'idleCpuUsPerMs')));
    add('8', `  the idle site's own CPU (µs per ms of wall; part of every CPU per item above)`, '', fmt(idle, 1), '', '', null);
  }
  return rows;
}

// Other processes' CPU (cores) during the timed runs of figures 1, 2, 3, 7 and 8 (for
// figure 8, the largest over each pair's three runs).
function noise() {
  const values = [];
  for (const [key, byVariant] of Object.entries(results)) {
    if (!/^f[12378]/.test(key)) continue;
    for (const samples of Object.values(byVariant)) {
      for (const sample of samples) {
        if (typeof sample.otherCpu === 'number') values.push(sample.otherCpu);
      }
    }
  }
  return values.length ? { median: median(values), max: max(values) } : null;
}

function table(rows) {
  const lines = [
    '| # | Figure | stock 2.227.12 | this package | stock/this | goal | |',
    '|---|---|---:|---:|---:|---|---|'
  ];
  for (const r of rows) {
    lines.push(`| ${r.figure} | ${r.what.replace(/^ {2}/, '↳ ')} | ${r.stock} | ${r.native} | ${r.ratio} | ${r.goal} | ${verdict(r.ok)} |`);
  }
  return lines.join('\n');
}

function plainTable(rows) {
  const widths = [ 2, 72, 12, 12, 10, 16, 8 ];
  // Wide enough for the longest cell (figure 8's cells hold several figures).
  for (const r of rows) widths[3] = Math.max(widths[3], String(r.native).length);
  const pad = (s, w, right) => (right ? String(s).padStart(w) : String(s).padEnd(w));
  const header = [ '#', 'figure', 'stock', 'this', 'stock/this', 'goal', '' ];
  const out = [ header.map((h, i) => pad(h, widths[i], i >= 2 && i <= 4)).join(' ') ];
  for (const r of rows) {
    out.push([ r.figure, r.what, r.stock, r.native, r.ratio, r.goal, r.ok === null ? '' : r.ok ? 'met' : 'MISSED' ]
      .map((s, i) => pad(s, widths[i], i >= 2 && i <= 4)).join(' '));
  }
  return out.join('\n');
}

function tryExec(command) {
  try {
    return childProcess.execSync(command, { encoding: 'utf8', stdio: [ 'ignore', 'pipe', 'ignore' ] }).trim();
  } catch (e) {
    return 'n/a';
  }
}

async function machine() {
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const model = (/^model name\s*:\s*(.*)$/m.exec(cpuinfo) || [])[1] || (os.cpus()[0] || {}).model || 'n/a';
  const build = await observer.db('admin').command({ buildInfo: 1 });
  const database = build.secantusVersion
    ? `SecantusDB ${build.secantusVersion} (MongoDB wire, reports ${build.version}), ${server ? 'started by the benchmark' : 'APOS_MONGODB_URI'}`
    : `MongoDB ${build.version} (APOS_MONGODB_URI)`;
  const apostrophe = require('apostrophe/package.json').version;
  const env = Object.keys(process.env).filter((k) => k.startsWith('BENCH_')).sort().map((k) => `${k}=${process.env[k]}`);
  // What was measured: the commit, whether the module's files differ from it, the addon.
  const head = tryExec(`git -C ${JSON.stringify(ROOT)} rev-parse --short HEAD`);
  const dirty = tryExec(`git -C ${JSON.stringify(ROOT)} status --porcelain -- index.js lib src`);
  const addon = path.join(ROOT, 'index.node');
  let addonInfo = 'missing';
  if (fs.existsSync(addon)) {
    const hash = require('crypto').createHash('sha1').update(fs.readFileSync(addon)).digest('hex').slice(0, 12);
    addonInfo = `index.node sha1 ${hash}, built ${fs.statSync(addon).mtime.toISOString().slice(0, 19)}Z`;
  }
  return {
    code: `commit ${head}${dirty && dirty !== 'n/a' ? ' with uncommitted changes to index.js/lib/src' : ''}; ${addonInfo}`,
    nproc: tryExec('nproc'),
    memory: `${(os.totalmem() / 1024 / 1024 / 1024).toFixed(1)} GiB`,
    cpu: model,
    node: process.version,
    rustc: tryExec('rustc -V'),
    apostrophe,
    database,
    command: `${env.length ? `${env.join(' ')} ` : ''}npm run bench`,
    date: new Date().toISOString()
  };
}

const BEGIN = '<!-- bench:begin (generated by `npm run bench`; edit outside these markers) -->';
const END = '<!-- bench:end -->';

// The chart that the report shows: BENCHMARKS.svg beside BENCHMARKS.md.
function chartPath(reportPath) {
  return `${reportPath.replace(/\.md$/, '')}.svg`;
}

function writeReport(info, rows, elapsedS) {
  const c = CONFIG;
  const generated = [
    BEGIN,
    '',
    '## Results',
    '',
    `| | |`,
    `|---|---|`,
    `| Date | ${info.date} |`,
    `| Command | \`${info.command}\` (${(elapsedS / 60).toFixed(1)} min) |`,
    `| Machine | ${info.nproc} CPUs (\`nproc\`), ${info.memory}, ${info.cpu} |`,
    `| Software | Node.js ${info.node}, ${info.rustc}, apostrophe ${info.apostrophe} |`,
    `| Database | ${info.database} |`,
    `| Code | ${info.code} |`,
    `| Rounds | ${c.rounds} per figure, stock and this package alternating, each run in a fresh site process${c.figures.has(8) ? `; figure 8 (this package only): ${c.pairs8} bare/job pair${c.pairs8 > 1 ? 's' : ''} per case and round in one site process, after a warm-up pair` : ''} |`,
    `| Other load | ${info.noise ? `other processes used ${info.noise.median.toFixed(2)} cores (median; max ${info.noise.max.toFixed(2)}) during the timed runs` : 'not measured'}; load average ${info.loadBefore} before, ${info.loadAfter} after |`,
    '',
    `![Stock against this package, figure by figure](${path.basename(chartPath(c.out))})`,
    '',
    'Medians over the rounds unless stated.',
    '',
    table(rows),
    '',
    END
  ].join('\n');
  let text;
  if (fs.existsSync(c.out)) {
    const old = fs.readFileSync(c.out, 'utf8');
    const a = old.indexOf('<!-- bench:begin');
    const b = old.indexOf(END);
    text = a >= 0 && b > a ? old.slice(0, a) + generated + old.slice(b + END.length) : `${old.trimEnd()}\n\n${generated}\n`;
  } else {
    text = `# Benchmarks\n\nStock ApostropheCMS 2.x \`apostrophe-jobs\` against \`apostrophe-jobs-native\`, from \`npm run bench\` (bench/run.js).\n\n${generated}\n`;
  }
  fs.writeFileSync(c.out, text);
}

// ---------------------------------------------------------------------------
// The run

function order(round) {
  return round % 2 ? VARIANTS : VARIANTS.slice().reverse();
}

function loadAverage() {
  return os.loadavg().map((x) => x.toFixed(2)).join(' ');
}

async function main() {
  const started = Date.now();
  const loadBefore = loadAverage();
  if (process.env.APOS_MONGODB_URI) {
    // Each site replaces the database path with its own `ajn-test-*` name.
    uri = process.env.APOS_MONGODB_URI;
    log(`database: APOS_MONGODB_URI (${uri.replace(/\/\/[^@]*@/, '//***@')})`);
  } else {
    server = await startServer({});
    // SecantusDB 0.7.0b3 slows down as retryable writes accumulate over the server's life
    // (2 ms per update at first, ~20 ms after some 10,000), which would penalize whichever
    // module writes more, and everything measured after it. Without retryable writes it
    // stays at ~1.5 ms. Both sites' drivers (the native engine reuses the site's URI) and
    // the observer get the option. BENCH_RETRY_WRITES=1 keeps the driver default.
    uri = process.env.BENCH_RETRY_WRITES === '1' ? server.uri : `${server.uri}/?retryWrites=false`;
    log(`database: SecantusDB at ${uri}`);
  }
  try {
    await connectObserver();
    await opcounters();
    const info = await machine();
    log(`config: ${JSON.stringify({ ...CONFIG, figures: [ ...CONFIG.figures ] })}`);

    for (let round = 1; round <= CONFIG.rounds; round++) {
      for (const variant of order(round)) {
        if (CONFIG.figures.has(1)) {
          for (const n of CONFIG.n1) {
            const sample = await withSite(variant, (site) => batchRun(site, n));
            record(`f1-${n}`, variant, sample);
            log(`round ${round} f1 N=${n} ${variant}: ${fmtMs(sample.ms)} ms, ${sample.jobWrites} job writes, peak RSS +${fmt(sample.rssAboveIdle / MB)} MB`);
          }
        }
        if ([ 2, 3, 4, 5, 6 ].some((f) => CONFIG.figures.has(f))) {
          await withSite(variant, async (site) => {
            if (CONFIG.figures.has(2)) {
              const articleIds = await site.ask('articles', { n: CONFIG.n2 });
              for (const concurrency of variant === 'native' ? [ 1, 4 ] : [ 1 ]) {
                const sample = await docsRun(site, articleIds, concurrency);
                record(`f2-c${concurrency}`, variant, sample);
                log(`round ${round} f2 c${concurrency} ${variant}: ${fmtMs(sample.ms)} ms, ${fmt(sample.serverCommands / sample.n, 3)} commands/item, CPU server ${fmt(100 * sample.serverCpu, 0)}% site ${fmt(100 * sample.siteCpu, 0)}%`);
              }
              // The same change in a plain loop, no job: what an item costs by itself (after
              // the job runs, so with the same warm caches).
              await waitForQuiet();
              const some = articleIds.slice(0, Math.min(500, articleIds.length));
              const { ms } = await site.ask('baseline', { mode: 'docs', ids: some });
              record('f2-base', variant, { msPerItem: ms / some.length });
              await site.ask('dropArticles');
            }
            // After figure 2, so the loop's code is as warm as in a site that has run jobs.
            if (CONFIG.figures.has(3)) {
              const sample = await loopCost(site, CONFIG.n3);
              record('f3', variant, sample);
              log(`round ${round} f3 ${variant}: ${JSON.stringify(Object.fromEntries(Object.entries(sample).map(([k, v]) => [ k, Number(v.toFixed(2)) ])))} µs/item`);
            }
            if (CONFIG.figures.has(6)) {
              const sample = await progressLag(site, CONFIG.n6, CONFIG.delay6);
              record('f6', variant, sample);
              log(`round ${round} f6 ${variant}: max lag ${fmtMs(sample.maxLagMs)} ms at answer, ${fmtMs(sample.maxLagReadMs)} ms at read, ${fmtMs(sample.maxLagSentMs)} ms at request (${sample.maxGapItems} items, ${sample.samples} samples, route ${fmtMs(sample.routeMs)} ms)`);
            }
            if (CONFIG.figures.has(4)) {
              for (const k of [ 1, CONFIG.jobs4 ]) {
                const sample = await watcherRate(site, k, 3000);
                record(`f4-${k}`, variant, sample);
                log(`round ${round} f4 k=${k} ${variant}: ${fmt(sample.watcherQueriesPerSecond)} watcher queries/s`);
              }
            }
            // Last: stock's stopped jobs keep polling until the process exits.
            if (CONFIG.figures.has(5)) {
              for (let i = 0; i < CONFIG.stops5; i++) {
                const sample = await stopLatency(site);
                record('f5', variant, sample);
                log(`round ${round} f5 ${variant}: ${fmtMs(sample.ms)} ms (${sample.status})`);
              }
            }
          });
        }
        if (CONFIG.figures.has(7) && (variant === 'native' || CONFIG.stock7)) {
          const sample = await withSite(variant, (site) => batchRun(site, CONFIG.n7));
          record('f7', variant, sample);
          log(`round ${round} f7 ${variant}: ${fmtMs(sample.ms)} ms, peak RSS +${fmt(sample.rssAboveIdle / MB)} MB`);
        }
        // This package only (it measures `run` against no job at all), in its own site.
        if (CONFIG.figures.has(8) && variant === 'native') {
          await withSite(variant, async (site) => {
            const articleIds = CONFIG.n8 ? await site.ask('articles', { n: CONFIG.n8 }) : null;
            for (const spec of costCases(articleIds)) {
              for (const concurrency of CONFIG.conc8) {
                for (const sample of await jobCost(site, spec, concurrency)) {
                  record(`f8-${spec.key}-c${concurrency}`, variant, sample);
                  log(`round ${round} f8 ${spec.key} c${concurrency}: ms/item bare ${sample.bareMsPerItem.toFixed(4)} job ${sample.jobMsPerItem.toFixed(4)} (${sample.addedPct >= 0 ? '+' : ''}${sample.addedPct.toFixed(2)}%), CPU µs/item bare ${fmt(sample.bareCpuUsPerItem)} job ${fmt(sample.jobCpuUsPerItem)} (${sample.addedCpuUs >= 0 ? '+' : ''}${fmt(sample.addedCpuUs)}: main ${fmt(sample.addedMainCpuUs)} rust ${fmt(sample.addedRustCpuUs)} other ${fmt(sample.addedOtherThreadsCpuUs)}; switches/item ${fmt(sample.bareSwitchesPerItem, 2)} → ${fmt(sample.jobSwitchesPerItem, 2)}); added ${fmtMs(sample.addedMs)} ms = start ${fmt(sample.startMs)} + end ${fmt(sample.endMs)} + loop ${fmt(sample.loopAddedMs)}; idle site ${fmt(sample.idleCpuUsPerMs)} µs/ms; others ${fmt(sample.otherCpu, 2)} cores`);
                }
              }
              if (spec.key === 'docs') await site.ask('dropArticles');
            }
          });
        }
      }
    }

    const rows = buildRows();
    const elapsedS = (Date.now() - started) / 1000;
    info.noise = noise();
    info.loadBefore = loadBefore;
    info.loadAfter = loadAverage();
    process.stdout.write(`\n${plainTable(rows)}\n\n`);
    if (info.noise) {
      process.stdout.write(`other processes' CPU during timed runs: median ${info.noise.median.toFixed(2)}, max ${info.noise.max.toFixed(2)} cores\n`);
    }
    process.stdout.write(`${info.command} — ${info.nproc} CPUs, ${info.cpu}, ${info.memory}; ${info.database}; ${info.node}, ${info.rustc}; ${(elapsedS / 60).toFixed(1)} min\n`);
    if (CONFIG.out) {
      writeReport(info, rows, elapsedS);
      const chart = chartPath(CONFIG.out);
      fs.writeFileSync(chart, renderChart({ info, config: { ...CONFIG, figures: [ ...CONFIG.figures ] }, results }));
      log(`wrote ${path.relative(process.cwd(), CONFIG.out) || CONFIG.out} and ${path.relative(process.cwd(), chart) || chart}`);
    }
    if (CONFIG.json) {
      fs.writeFileSync(CONFIG.json, JSON.stringify({ info, config: { ...CONFIG, figures: [ ...CONFIG.figures ] }, results }, null, 2));
    }
  } finally {
    if (observer) await observer.close().catch(() => {});
    if (server) await server.stop();
  }
}

main().catch((error) => {
  process.stderr.write(`${error && error.stack ? error.stack : error}\n`);
  process.exitCode = 1;
});
