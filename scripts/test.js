#!/usr/bin/env node
// `npm test`: checks what the suites need from the system (Chromium, Python's venv,
// libfaketime: scripts/system-deps.js installs what is missing when it runs as root with
// apt-get, else stops saying the command to run), starts the MongoDB-wire test server
// (SecantusDB, installed on first use), then runs the Rust core's tests and the node:test
// suites against it, and stops the server. Everything the tests need is installed or started
// here, so a fresh clone passes with `npm test` alone.
//
// The suites that boot an Apostrophe site run twice: on the last 2.x release (the
// `apostrophe` devDependency) and on the oldest supported one (`apostrophe-oldest`, an npm
// alias); the other suites run once. Each pass prints its release and how long it took.
//
//   npm test                           everything
//   npm test -- __tests__/run.test.js  one suite (on both releases if it boots a site)
//   node scripts/test.js --no-cargo    the node:test suites only (any Node.js >= 18)
//   APOS_JOBS_TEST_APOSTROPHE=apostrophe-oldest npm test   one release only (without the
//                                      suites of LATEST_RELEASE_ONLY)
//
// Set APOS_MONGODB_URI to run against a server of your own instead (its databases named
// `ajn-test-*` are created and dropped by the suites).

'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');
const { startServer } = require('./mongo-server.js');
const { assertCargo, ensureSystemDeps } = require('./system-deps.js');

const root = path.resolve(__dirname, '..');
const SUITES_DIR = '__tests__';
const LATEST = 'apostrophe';
const OLDEST = 'apostrophe-oldest';

function run(command, args, env) {
  return new Promise((resolve) => {
    console.log(`\n$ ${command} ${args.join(' ')}`);
    const child = spawn(command, args, { cwd: root, stdio: 'inherit', env });
    child.on('exit', (code, signal) => resolve(signal ? 1 : code));
  });
}

// The suite files of a directory: Node.js 21+ reads a directory argument of --test as a file
// name, so the files are listed here for every version.
function suitesIn(dir) {
  return fs.readdirSync(path.resolve(root, dir))
    .filter((name) => name.endsWith('.test.js'))
    .sort()
    .map((name) => path.join(dir, name));
}

// A suite boots a site when it uses the site helpers (in-process, as a child process, or
// through bootFixtureSite).
function bootsSite(suite) {
  return /helpers\/site(-process)?(\.js)?'|bootFixtureSite/.test(fs.readFileSync(path.resolve(root, suite), 'utf8'));
}

// Suites that set up Apostrophe projects of their own (the demo site; fresh projects that
// install the packed package), always on the `apostrophe` devDependency's release and on a
// Node.js it supports: they run in the latest release's pass only.
const LATEST_RELEASE_ONLY = [ 'demo.test.js', 'install.test.js' ];
const forAnyRelease = (suite) => !LATEST_RELEASE_ONLY.includes(path.basename(suite));

function release(packageName) {
  let version;
  try {
    version = require(path.join(root, 'node_modules', packageName, 'package.json')).version;
  } catch (error) {
    throw new Error(`${packageName} is not installed in node_modules: run \`npm ci\` first`);
  }
  return { packageName, version, title: `Apostrophe ${version} (package ${packageName})` };
}

// The suites share a database server and time-sensitive processes, so they never run side
// by side. Node.js before 20.10 (18 among them) has no --test-concurrency: there, each suite
// file runs in its own `node --test`.
function hasTestConcurrency() {
  const [ major, minor ] = process.versions.node.split('.').map(Number);
  return major > 20 || (major === 20 && minor >= 10);
}

async function runSuites(suites, env) {
  if (hasTestConcurrency()) {
    return (await run(process.execPath, [ '--test', '--test-concurrency=1', ...suites ], env)) ? 1 : 0;
  }
  let failed = 0;
  for (const suite of suites) {
    failed += await run(process.execPath, [ '--test', suite ], env) ? 1 : 0;
  }
  return failed;
}

const seconds = (since) => `${((Date.now() - since) / 1000).toFixed(0)} s`;

async function main() {
  const args = process.argv.slice(2);
  const withCargo = !args.includes('--no-cargo');
  const suites = args.filter((arg) => arg !== '--no-cargo');
  const chosen = (suites.length ? suites : [ SUITES_DIR ])
    .flatMap((suite) => (fs.statSync(path.resolve(root, suite)).isDirectory() ? suitesIn(suite) : [ suite ]));
  const only = process.env.APOS_JOBS_TEST_APOSTROPHE;
  const passes = only
    ? [ { release: release(only), suites: only === LATEST ? chosen : chosen.filter(forAnyRelease) } ]
    : [
      { release: release(LATEST), suites: chosen },
      { release: release(OLDEST), suites: chosen.filter((suite) => bootsSite(suite) && forAnyRelease(suite)) }
    ].filter((pass) => pass.suites.length);
  if (withCargo) {
    assertCargo();
  }
  ensureSystemDeps({ suites: chosen });

  const server = process.env.APOS_MONGODB_URI ? null : await startServer({});
  const uri = process.env.APOS_MONGODB_URI || server.uri;
  const env = { ...process.env, APOS_JOBS_TEST_URI: uri };
  delete env.APOS_MONGODB_URI;
  const report = [];
  let failed = 0;
  try {
    if (withCargo) {
      const started = Date.now();
      const code = await run('cargo', [ 'test', '--release', '--locked' ], env);
      failed += code ? 1 : 0;
      report.push(`cargo test: ${code ? 'FAILED' : 'passed'} in ${seconds(started)}`);
    }
    for (const pass of passes) {
      console.log(`\n== node:test on Node.js ${process.version}, ${pass.release.title}: ${pass.suites.length} suite(s)`);
      const started = Date.now();
      const passFailed = await runSuites(pass.suites, { ...env, APOS_JOBS_TEST_APOSTROPHE: pass.release.packageName });
      failed += passFailed;
      report.push(`node:test on Node.js ${process.version}, ${pass.release.title}, ${pass.suites.length} suite(s): ${passFailed ? 'FAILED' : 'passed'} in ${seconds(started)}`);
    }
  } finally {
    if (server) {
      await server.stop();
    }
  }
  console.log(`\n== summary\n${report.join('\n')}`);
  process.exitCode = failed ? 1 : 0;
}

main().catch((error) => {
  // A missing system package is a message with what to do, not a stack trace.
  console.error(error.systemDeps ? error.message : error);
  process.exitCode = 1;
});
