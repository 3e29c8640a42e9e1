'use strict';

// Test/demo MongoDB-wire server: SecantusDB, a MongoDB-compatible server
// installed from PyPI into a private virtualenv.
//
// SecantusDB is GPL-2.0, so it is only ever installed by name from the
// registry, never vendored into this repository.
//
// Module use:
//   const { startServer } = require('./scripts/mongo-server');
//   const server = await startServer({ port, dataDir, quiet });
//   // server.uri === 'mongodb://127.0.0.1:PORT'
//   await server.restart(); // same port, same data
//   await server.stop();
//
// CLI:
//   node scripts/mongo-server.js install
//   node scripts/mongo-server.js run [--port 27017] [--data DIR]

const childProcess = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');

// Pre-release: pin exactly so every machine runs the same server.
const PACKAGE_SPEC = 'SecantusDB==0.7.0b3';
const READY_DEADLINE_MS = 60000;
const STOP_GRACE_MS = 10000;
// How much of the server's output to keep for error messages.
const LOG_TAIL_BYTES = 8192;

function venvDir() {
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(cache, 'apostrophe-jobs-native', 'secantus-venv');
}

function serverBinary() {
  return path.join(venvDir(), 'bin', 'secantusd-py');
}

// Create the virtualenv and install SecantusDB unless the server binary is
// already there. Synchronous on purpose: it runs once, before anything else.
function ensureInstalled({ quiet = false } = {}) {
  const bin = serverBinary();
  if (fs.existsSync(bin)) {
    return bin;
  }
  const dir = venvDir();
  // Always say what we are doing: it happens once per machine, takes a
  // while, and a silent 30-second pause would look like a hang. pip's own
  // chatter is dropped when quiet; its errors never are.
  const say = (msg) => process.stderr.write(`[mongo-server] ${msg}\n`);
  // pip's stdout goes to our stderr so that a CLI caller's stdout stays
  // machine-readable (the URI line).
  const stdio = ['ignore', quiet ? 'ignore' : process.stderr, process.stderr];
  if (!fs.existsSync(path.join(dir, 'bin', 'pip'))) {
    say(`creating virtualenv ${dir}`);
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    try {
      run('python3', ['-m', 'venv', dir], stdio);
    } catch (err) {
      // Debian/Ubuntu ship venv support separately from python3.
      fs.rmSync(dir, { recursive: true, force: true });
      throw new Error(`${err.message}\n(on Debian/Ubuntu: apt-get install -y python3-venv)`);
    }
  }
  say(`installing ${PACKAGE_SPEC} into ${dir}`);
  run(path.join(dir, 'bin', 'pip'), ['install', '--disable-pip-version-check', PACKAGE_SPEC], stdio);
  if (!fs.existsSync(bin)) {
    throw new Error(`pip install of ${PACKAGE_SPEC} finished but ${bin} does not exist`);
  }
  say(`installed ${bin}`);
  return bin;
}

function run(cmd, args, stdio) {
  const r = childProcess.spawnSync(cmd, args, { stdio });
  if (r.error) {
    throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  }
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status === null ? r.signal : r.status}`);
  }
}

// Ask the kernel for a free port. There is a small window between closing
// and the server binding it, which is acceptable for tests on one machine.
function getFreePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Every live child, so the exit/signal hooks can kill them if the parent
// goes away without calling stop().
const liveChildren = new Set();
// Temp data dirs we created, removed on exit if stop() never ran.
const ownedDirs = new Set();
let hooksInstalled = false;

function installExitHooks() {
  if (hooksInstalled) return;
  hooksInstalled = true;
  // 'exit' handlers must be synchronous, so SIGKILL is the only sure thing.
  process.on('exit', () => {
    for (const child of liveChildren) {
      try { child.kill('SIGKILL'); } catch (e) { /* already gone */ }
    }
    for (const dir of ownedDirs) {
      try { fs.rmSync(dir, { recursive: true, force: true }); } catch (e) { /* best effort */ }
    }
  });
  for (const sig of ['SIGINT', 'SIGTERM']) {
    const onSignal = async () => {
      // Someone else (the CLI, a test runner) handles this signal and
      // decides whether the process ends; the 'exit' hook still covers us.
      if (process.listenerCount(sig) > 1) return;
      process.removeListener(sig, onSignal);
      await Promise.all([...liveChildren].map((child) => terminate(child)));
      // Dying by signal skips the 'exit' event, so tidy up here too.
      for (const dir of ownedDirs) {
        try { fs.rmSync(dir, { recursive: true, force: true }); } catch (e) { /* best effort */ }
      }
      // Re-raise with the default disposition so the exit status says
      // "killed by signal", as it would have without our handler.
      process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

// SIGTERM, then SIGKILL if it has not exited after the grace period.
async function terminate(child) {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    const timer = setTimeout(() => { try { child.kill('SIGKILL'); } catch (e) { /* gone */ } }, STOP_GRACE_MS);
    await child.exitedPromise;
    clearTimeout(timer);
  }
  liveChildren.delete(child);
}

// The server is started through this tiny Python shim so the kernel sends it
// SIGTERM if our process dies without running any handler (SIGKILL, OOM
// killer, a test runner's hard timeout). PR_SET_PDEATHSIG survives exec, so
// the pid we hold is the server's own.
const PDEATHSIG_SHIM = [
  'import ctypes, os, signal, sys',
  'ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG',
  '# If the parent died before prctl took effect, nobody would reap us.',
  'if os.getppid() != int(sys.argv[1]): sys.exit(1)',
  'os.execv(sys.argv[2], sys.argv[2:])'
].join('\n');

// Refuse a busy port up front: otherwise the readiness ping could be
// answered by whatever already listens there while our server dies with
// EADDRINUSE.
function assertPortFree(port) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', (err) => {
      reject(err.code === 'EADDRINUSE'
        ? new Error(`port ${port} on 127.0.0.1 is already in use; pick another (or omit port for a free one)`)
        : err);
    });
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve()));
  });
}

async function ping(uri) {
  const { MongoClient } = require('mongodb');
  const client = new MongoClient(uri, {
    directConnection: true,
    serverSelectionTimeoutMS: 1000,
    connectTimeoutMS: 1000
  });
  try {
    await client.connect();
    await client.db('admin').command({ ping: 1 });
  } finally {
    await client.close().catch(() => {});
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// onUnexpectedExit({ code, signal }) is called if the server dies on its own
// (not through stop/restart), e.g. so the CLI can exit too.
// ownProcessGroup: start the server in a process group of its own, so that Ctrl-C in a
// terminal (SIGINT to the whole foreground group) reaches only us and we can stop the
// site using it before the server; it still dies with us (PR_SET_PDEATHSIG).
async function startServer({ port, dataDir, quiet = true, onUnexpectedExit, ownProcessGroup = false } = {}) {
  const bin = ensureInstalled({ quiet });
  const python = path.join(venvDir(), 'bin', 'python');
  installExitHooks();
  if (!port) port = await getFreePort();
  let ownsDataDir = false;
  if (!dataDir) {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ajn-secantus-'));
    ownsDataDir = true;
    ownedDirs.add(dataDir);
  }
  fs.mkdirSync(dataDir, { recursive: true });
  const uri = `mongodb://127.0.0.1:${port}`;

  let child = null;
  let logTail = '';

  const server = {
    uri,
    port,
    dataDir,
    pid: null,
    stop,
    restart
  };

  async function launch() {
    await assertPortFree(port);
    logTail = '';
    // No --standalone: it drops the replica-set advertisement from `hello`,
    // and drivers refuse change streams on a standalone topology. The
    // storage path is a subdirectory so dataDir can hold other files too.
    const args = ['--host', '127.0.0.1', '--port', String(port), '--storage-path', path.join(dataDir, 'db')];
    // cwd = dataDir keeps a stray ./secantusd.toml in the caller's cwd from
    // being auto-discovered and silently changing the configuration.
    const c = childProcess.spawn(python, ['-c', PDEATHSIG_SHIM, String(process.pid), bin, ...args], {
      cwd: dataDir,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: ownProcessGroup
    });
    child = c;
    liveChildren.add(c);
    server.pid = c.pid;
    const keep = (chunk) => {
      if (!quiet) process.stderr.write(chunk);
      logTail = (logTail + chunk.toString()).slice(-LOG_TAIL_BYTES);
    };
    c.stdout.on('data', keep);
    c.stderr.on('data', keep);
    let exitInfo = null;
    let ready = false;
    c.exitedPromise = new Promise((resolve) => {
      c.once('exit', (code, signal) => {
        exitInfo = { code, signal };
        liveChildren.delete(c);
        resolve(exitInfo);
        // child !== c once stop/restart has taken it over.
        if (child === c && ready && onUnexpectedExit) onUnexpectedExit(exitInfo);
      });
    });
    c.once('error', (err) => { logTail += `\nspawn error: ${err.message}`; });

    const deadline = Date.now() + READY_DEADLINE_MS;
    let lastErr = null;
    while (Date.now() < deadline && !exitInfo) {
      try {
        await ping(uri);
        if (!exitInfo) {
          ready = true;
          return;
        }
      } catch (e) {
        lastErr = e;
      }
      await sleep(200);
    }
    const why = exitInfo
      ? `exited early (code ${exitInfo.code}, signal ${exitInfo.signal})`
      : `did not answer ping within ${READY_DEADLINE_MS / 1000}s (last error: ${lastErr && lastErr.message})`;
    await kill();
    throw new Error(`SecantusDB on port ${port} ${why}.\n--- server log tail ---\n${logTail.trim()}\n---`);
  }

  async function kill() {
    const c = child;
    child = null;
    server.pid = null;
    if (c) await terminate(c);
  }

  async function stop() {
    await kill();
    if (ownsDataDir) {
      fs.rmSync(dataDir, { recursive: true, force: true });
      ownedDirs.delete(dataDir);
    }
  }

  // Same port and data: lets tests check what survives a server restart.
  async function restart() {
    await kill();
    await launch();
  }

  await launch();
  return server;
}

module.exports = { startServer, ensureInstalled, getFreePort, venvDir, serverBinary, PACKAGE_SPEC };

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
}

async function main() {
  const [cmd, ...rest] = process.argv.slice(2);
  const usage = 'usage: node scripts/mongo-server.js install | run [--port 27017] [--data DIR]';
  if (cmd === 'install') {
    const bin = ensureInstalled();
    process.stdout.write(`${bin}\n`);
    return;
  }
  if (cmd !== 'run') {
    process.stderr.write(`${usage}\n`);
    process.exit(2);
  }
  const opts = {};
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === '--port') opts.port = Number(rest[++i]);
    else if (rest[i] === '--data') opts.dataDir = path.resolve(rest[++i]);
    else {
      process.stderr.write(`unknown argument ${rest[i]}\n${usage}\n`);
      process.exit(2);
    }
  }
  // Stop gracefully on Ctrl-C; registering before startServer makes our
  // handler run first, and the exit hooks then see it is not alone.
  let stopping = false;
  let server = null;
  const onSignal = async () => {
    if (stopping) return;
    stopping = true;
    if (server) await server.stop();
    process.exit(0);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  server = await startServer({
    ...opts,
    quiet: false,
    onUnexpectedExit: ({ code, signal }) => {
      process.stderr.write(`[mongo-server] server exited unexpectedly (code ${code}, signal ${signal})\n`);
      process.exit(1);
    }
  });
  process.stdout.write(`${server.uri}\n`);
  if (!opts.dataDir) {
    process.stderr.write(`[mongo-server] data in ${server.dataDir} (removed on exit)\n`);
  }
}
