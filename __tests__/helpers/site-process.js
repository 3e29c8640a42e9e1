'use strict';

// Runs one test site in its own process, for tests that need several
// Apostrophe processes sharing a database (each with its own watcher, its
// own crash, ...).
//
// As a script:
//   AJN_SITE_OPTIONS='{"uri":"mongodb://127.0.0.1:PORT","native":false}' \
//     node __tests__/helpers/site-process.js
//   node __tests__/helpers/site-process.js '{"uri":"...","native":false}'
// Options are bootSite's (JSON only, so no functions in `modules`) plus
// `admin: { username, password }` to create an admin before reporting ready and
// `moduleFiles: { name: '/abs/path.js' }` for modules defined in files.
// Prints one JSON line on stdout when listening:
//   {"ready":true,"baseUrl":"http://127.0.0.1:PORT","port":PORT,"pid":...,
//    "shortName":"...","csrfCookieName":"<shortName>.csrf","nativeAddons":[".../index.node"]}
// or {"ready":false,"error":"..."} and exits 1. SIGTERM/SIGINT stop the site
// and exit 0. It also exits if its parent dies, so a crashed test run
// leaves no sites behind.
//
// As a module, from a test:
//   const { spawnSite } = require('./helpers/site-process');
//   const site = await spawnSite({ uri, native: true, shortName: 'shared' });
//   const client = await site.login('admin', 'pw');
//   await site.kill();   // SIGKILL: simulate a crash
//   await site.stop();   // SIGTERM: clean shutdown

const childProcess = require('child_process');
const path = require('path');
const readline = require('readline');

const READY_TIMEOUT_MS = 60000;
const STOP_GRACE_MS = 10000;

function readOptions() {
  const raw = process.argv[2] || process.env.AJN_SITE_OPTIONS;
  if (!raw) {
    throw new Error('site-process: pass bootSite options as JSON in argv[2] or AJN_SITE_OPTIONS');
  }
  return JSON.parse(raw);
}

async function runChild() {
  const { bootSite, createAdmin } = require('./site');
  const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
  let site = null;
  let stopping = false;

  const shutdown = async (code, graceMs = STOP_GRACE_MS) => {
    if (stopping) return;
    stopping = true;
    // apos.destroy has never hung in practice; still, never outlive a
    // SIGTERM by more than the grace period.
    setTimeout(() => {
      // stop() did not finish: at least don't leave the temp rootDir.
      if (site) require('fs').rmSync(site.rootDir, { recursive: true, force: true });
      process.exit(code);
    }, graceMs).unref();
    try {
      // A deploy's shutdown hook: let running jobs drain while the database is still open
      // (apos.destroy closes it before the jobs module's own destroy hook runs).
      const jobs = site && site.apos.modules['apostrophe-jobs'];
      if (jobs && jobs.options.drainOnSignal && jobs.drain) await jobs.drain();
      if (site) await site.stop();
    } catch (err) {
      process.stderr.write(`site-process: stop failed: ${err.stack || err}\n`);
      code = 1;
    }
    process.exit(code);
  };
  process.on('SIGTERM', () => shutdown(0));
  process.on('SIGINT', () => shutdown(0));

  // Reparenting means the parent is gone; it probably took the database
  // server with it, so don't wait long for a clean stop.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) shutdown(0, 2000);
  }, 1000).unref();

  let opts;
  try {
    opts = readOptions();
    const { admin, moduleFiles, ...bootOpts } = opts;
    // Module definitions can't travel as JSON: `moduleFiles` names files that export them.
    for (const [ name, file ] of Object.entries(moduleFiles || {})) {
      bootOpts.modules = { ...bootOpts.modules, [name]: { ...require(file), ...(bootOpts.modules || {})[name] } };
    }
    site = await bootSite(bootOpts);
    let adminId;
    if (admin) {
      adminId = (await createAdmin(site.apos, admin))._id;
    }
    if (stopping) return;
    say({
      ready: true,
      baseUrl: site.baseUrl,
      port: site.port,
      pid: process.pid,
      shortName: site.shortName,
      csrfCookieName: site.csrfCookieName,
      adminId,
      // The native addons this process loaded (Node.js caches them by file name), so a test
      // can tell which build of this package a site runs.
      nativeAddons: Object.keys(require.cache).filter((file) => file.endsWith('.node'))
    });
  } catch (err) {
    say({ ready: false, error: String((err && err.stack) || err) });
    await shutdown(1);
  }
}

/**
 * Spawn a site process and wait for its ready line. Its stderr is passed
 * through to ours; with `captureStderr`, its lines are also kept in
 * `stderrLines` (boot the site with `verbose: true` to get its log there).
 * `execArgv`: Node flags for the child (e.g. `--expose-gc`). Resolves to
 * { baseUrl, port, pid, shortName, csrfCookieName, child, exited, stderrLines,
 *   login(username, password), stop(), kill(signal = 'SIGKILL') }.
 */
function spawnSite(options, { env = process.env, execArgv = [], captureStderr = false, readyTimeoutMs = READY_TIMEOUT_MS } = {}) {
  const child = childProcess.spawn(process.execPath, [...execArgv, __filename], {
    env: { ...env, AJN_SITE_OPTIONS: JSON.stringify(options) },
    stdio: ['ignore', 'pipe', captureStderr ? 'pipe' : 'inherit']
  });
  const stderrLines = [];
  if (captureStderr) {
    readline.createInterface({ input: child.stderr }).on('line', (line) => {
      stderrLines.push(line);
      process.stderr.write(`${line}\n`);
    });
  }
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });

  async function terminate(signal) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    }
    return exited;
  }

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      terminate('SIGKILL');
      reject(new Error(`site process ${child.pid} not ready after ${readyTimeoutMs} ms`));
    }, readyTimeoutMs);
    const lines = readline.createInterface({ input: child.stdout });
    let settled = false;
    lines.on('line', (line) => {
      let msg;
      try { msg = JSON.parse(line); } catch (e) { return; /* not ours */ }
      if (settled || typeof msg.ready !== 'boolean') return;
      settled = true;
      clearTimeout(timer);
      if (!msg.ready) {
        reject(new Error(`site process failed to boot:\n${msg.error}`));
        return;
      }
      const { login } = require('./site');
      resolve({
        ...msg,
        child,
        exited,
        stderrLines,
        login: (username, password) => login(msg.baseUrl, username, password, { csrfCookieName: msg.csrfCookieName }),
        stop: () => terminate('SIGTERM'),
        kill: (signal = 'SIGKILL') => terminate(signal)
      });
    });
    exited.then(({ code, signal }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`site process exited before ready (code ${code}, signal ${signal})`));
    });
  });
}

module.exports = { spawnSite, SCRIPT: path.resolve(__filename) };

if (require.main === module) {
  runChild();
}
