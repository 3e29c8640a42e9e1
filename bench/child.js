// One benchmark site in its own process (forked by bench/run.js), so that peak RSS is
// comparable between the stock and the native module and no state carries over.
//
// Boots the fixture site (bench/fixture.js) with the driver's command monitoring on, samples
// `process.memoryUsage().rss` every 10 ms, and answers the parent's IPC requests:
//   { id, cmd: 'bench' }          the fixture's instruments (see bench/fixture.js)
//   { id, cmd: 'reset', ... }     clears them (and optionally sizes the finish-time array)
//   { id, cmd: 'commands' }       driver commands started since the last 'commands' call
//   { id, cmd: 'rss' }            peak since the last 'rss' call, and the recent idle level
//   { id, cmd: 'gc' }             a full collection (run with --expose-gc)
//   { id, cmd: 'baseline', mode, n | ids } the change alone in a plain promise loop
//                                 (figures 2 and 3); returns { ms }
//   { id, cmd: 'costCase', ids, delay } figure 8: makes the `req` that every following 'cost'
//                                 run uses (the same object, until the next 'costCase')
//   { id, cmd: 'cost', which, mode, concurrency } figure 8: one run, `which` 'bare' or
//                                 'job' (fixture.costRun); returns { ms, cpuUs, threads, ... }
//   { id, cmd: 'idleCpu', ms }    figure 8: the process's CPU while nothing runs, over ms
//   { id, cmd: 'articles', n }    inserts n test pieces, returns their ids
//   { id, cmd: 'dropArticles' }   deletes them again
//   { id, cmd: 'stop' }           stops the site and exits

'use strict';

const { performance } = require('perf_hooks');
const { bootSite, createAdmin, insertArticles } = require('../__tests__/helpers/site.js');

const now = () => performance.timeOrigin + performance.now();
const RSS_INTERVAL_MS = 10;

const options = JSON.parse(process.env.AJN_BENCH_CHILD);

let site;
let fixture;
let commands = new Map();
let rssTimer = null;
// Figure 8's `req`, shared by its bare and job runs.
let costReq = null;
let rssPeak = 0;
let rssSamples = 0;
// The last second of samples, for the idle level.
const recentRss = [];

// BENCH_RSS_TRACE=file: every sample since the last 'rss' call, with the fixture's
// timestamps, is written there as JSON (a diagnosis aid; not used for the figures).
const trace = process.env.BENCH_RSS_TRACE ? [] : null;

function sampleRss() {
  const rss = process.memoryUsage.rss();
  if (trace) {
    trace.push([ Math.round(now()), Math.round(rss / 1e5) / 10 ]);
  }
  rssSamples++;
  if (rss > rssPeak) {
    rssPeak = rss;
  }
  recentRss.push(rss);
  if (recentRss.length > 100) {
    recentRss.shift();
  }
}

// CPU time by thread group (µs), from /proc/self/task (Linux; {} elsewhere), to tell whose
// CPU a figure 8 run took: the JavaScript main thread, the Rust engine's tokio workers, or
// the others (V8's platform workers, libuv's pool, the Node driver has none of its own).
// Clock-tick resolution (10 ms per thread), so only meaningful over whole runs. Also the
// context switches of all threads (`switches`): a thread handing work to another and
// waiting for it shows there.
const CLOCK_TICKS = (() => {
  try {
    return Number(require('child_process').execSync('getconf CLK_TCK', { encoding: 'utf8' }).trim()) || 100;
  } catch (e) {
    return 100;
  }
})();
function threadCpu() {
  const fs = require('fs');
  const out = { main: 0, rust: 0, other: 0, switches: 0 };
  let tids;
  try {
    tids = fs.readdirSync('/proc/self/task');
  } catch (e) {
    return {};
  }
  for (const tid of tids) {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const us = (Number(fields[11]) + Number(fields[12])) * 1e6 / CLOCK_TICKS;
      const group = Number(tid) === process.pid ? 'main' : name.startsWith('tokio') ? 'rust' : 'other';
      out[group] += us;
      const status = fs.readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
      for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s*(\d+)/gm)) out.switches += Number(m[1]);
    } catch (e) {
      // The thread exited meanwhile.
    }
  }
  return out;
}

function threadDelta(before, after) {
  const out = {};
  for (const key of Object.keys(after)) out[key] = after[key] - (before[key] || 0);
  return out;
}

function median(values) {
  const sorted = values.slice().sort((a, b) => a - b);
  return sorted.length ? sorted[sorted.length >> 1] : null;
}

async function handle(message) {
  switch (message.cmd) {
    case 'bench': {
      const b = fixture.bench;
      return {
        runAt: b.runAt,
        firstChangeAt: b.firstChangeAt,
        finished: b.finished,
        finishTimes: message.finishTimes && b.finishTimes ? Array.from(b.finishTimes.subarray(0, b.finished)) : undefined,
        endCalledAt: b.endCalledAt,
        endAckedAt: b.endAckedAt,
        lastWriteAckAt: b.lastWriteAckAt,
        touched: b.touched,
        reads: message.finishTimes ? b.reads : undefined
      };
    }
    case 'reset':
      fixture.resetBench(!!message.recordFinishTimes, message.n || 0);
      return true;
    case 'commands': {
      const out = Object.fromEntries(commands);
      commands = new Map();
      return out;
    }
    case 'rss': {
      const out = { peak: rssPeak, idle: median(recentRss), current: process.memoryUsage.rss(), samples: rssSamples };
      rssPeak = process.memoryUsage.rss();
      rssSamples = 0;
      if (trace) {
        const b = fixture.bench;
        const marks = { runAt: b.runAt, firstChangeAt: b.firstChangeAt, endCalledAt: b.endCalledAt, endAckedAt: b.endAckedAt };
        require('fs').writeFileSync(process.env.BENCH_RSS_TRACE, JSON.stringify({ marks, idle: out.idle, samples: trace.splice(0) }));
      }
      return out;
    }
    case 'gc':
      if (global.gc) {
        global.gc();
        global.gc();
      }
      return true;
    case 'baseline': {
      // The same change in a plain JavaScript loop, one promise per item as the native
      // module's item runner makes, with no job around it: what any loop costs.
      const change = fixture.changes[message.mode];
      const req = { body: {} };
      const ids = message.ids || Array.from({ length: message.n }, (_, i) => `c${i}`);
      const started = now();
      for (const id of ids) {
        await new Promise((resolve) => change(req, id, (err, result) => resolve({ err, result })));
      }
      return { ms: now() - started };
    }
    case 'costCase':
      // A task request as Apostrophe makes them (`apos.tasks.getReq()`: an admin, `res` with
      // the i18n helpers), with the body a batch route receives. `run` replies through
      // `req.res.send` (set by each job run).
      costReq = site.apos.tasks.getReq({ body: { ids: message.ids, job: true, delay: message.delay } });
      return true;
    case 'cost': {
      // A full collection first, outside the measured window, so each run pays for its own
      // garbage rather than the previous run's; the RSS sampler (a timer every 10 ms) is
      // paused, so its CPU is not in either figure.
      if (global.gc) {
        global.gc();
      }
      clearInterval(rssTimer);
      try {
        // Per-thread CPU is read just outside the run's own window.
        const before = threadCpu();
        const result = await fixture.costRun(costReq, message.which, message.mode, message.concurrency);
        result.threads = threadDelta(before, threadCpu());
        return result;
      } finally {
        rssTimer = setInterval(sampleRss, RSS_INTERVAL_MS);
      }
    }
    case 'idleCpu': {
      // What the idle site costs per ms (Apostrophe's and the drivers' timers, the engine's
      // watcher tick): the floor under figure 8's CPU per item for slow items.
      clearInterval(rssTimer);
      try {
        const before = threadCpu();
        const cpu0 = process.cpuUsage();
        const t0 = now();
        await new Promise((resolve) => setTimeout(resolve, message.ms));
        const cpu = process.cpuUsage(cpu0);
        const ms = now() - t0;
        return { ms, cpuUs: cpu.user + cpu.system, threads: threadDelta(before, threadCpu()) };
      } finally {
        rssTimer = setInterval(sampleRss, RSS_INTERVAL_MS);
      }
    }
    case 'articles': {
      const docs = await insertArticles(site.apos, message.n);
      return docs.map((doc) => doc._id);
    }
    case 'dropArticles': {
      // With thousands of pieces, every logged-in request gets slow on SecantusDB (Apostrophe's
      // per-request user/group/global lookups use nested $and filters, which it answers by
      // scanning aposDocs): the figures after figure 2 must not pay for that.
      const result = await site.apos.docs.db.deleteMany({ type: 'test-article' });
      return result.deletedCount;
    }
    case 'stop':
      // Stock 2.x keeps polling stopped jobs after shutdown (its known leak) and logs
      // "client closed" errors: noise, not results.
      process.stderr.write = () => true;
      await site.stop();
      setImmediate(() => process.exit(0));
      return true;
    default:
      throw new Error(`unknown command ${message.cmd}`);
  }
}

async function main() {
  // If the parent goes away, so do we.
  process.on('disconnect', () => process.exit(0));
  site = await bootSite({
    uri: options.uri,
    native: options.native,
    modules: {
      'bench-fixture': require('./fixture.js'),
      // Command monitoring on the site's own driver (stock: every job write; native: only
      // what JavaScript still does, e.g. the `progress` route and the site's own changes).
      'apostrophe-db': { connect: { monitorCommands: true } }
    }
  });
  fixture = site.apos.modules['bench-fixture'];
  // The parent logs in as this user, as the browser that watches a job's progress is.
  await createAdmin(site.apos, options.admin);
  const client = site.apos.db.client || (site.apos.db.s && site.apos.db.s.client);
  if (!client || typeof client.on !== 'function') {
    throw new Error('bench child: cannot find the site\'s MongoClient to monitor commands');
  }
  client.on('commandStarted', (event) => {
    const body = event.command || {};
    const collection = typeof body[event.commandName] === 'string' ? body[event.commandName] : '';
    const key = `${event.commandName}${collection ? ` ${collection}` : ''}`;
    commands.set(key, (commands.get(key) || 0) + 1);
  });
  rssTimer = setInterval(sampleRss, RSS_INTERVAL_MS);
  process.on('message', (message) => {
    handle(message).then(
      (result) => process.send({ id: message.id, result }),
      (error) => process.send({ id: message.id, error: String((error && error.stack) || error) })
    );
  });
  process.send({
    ready: true,
    baseUrl: site.baseUrl,
    shortName: site.shortName,
    csrfCookieName: site.csrfCookieName,
    pid: process.pid,
    bootedAt: now()
  });
}

main().catch((error) => {
  process.send({ ready: false, error: String((error && error.stack) || error) });
  setTimeout(() => process.exit(1), 100);
});
