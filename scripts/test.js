#!/usr/bin/env node
// `npm test`: checks what the suites need from the system (Chromium, Python's venv,
// libfaketime: scripts/system-deps.js installs what is missing when it runs as root with
// apt-get, else stops saying the command to run), starts the MongoDB-wire test server
// (SecantusDB, installed on first use), then runs the Rust core's tests and the node:test
// suites against it, and stops the server. Everything the tests need is installed or started
// here, so a fresh clone passes with `npm test` alone.
//
// Set APOS_MONGODB_URI to run against a server of your own instead (its databases named
// `ajn-test-*` are created and dropped by the suites).

'use strict';

const { spawn } = require('child_process');
const path = require('path');
const { startServer } = require('./mongo-server.js');
const { assertCargo, ensureSystemDeps } = require('./system-deps.js');

const root = path.resolve(__dirname, '..');

function run(command, args, env) {
  return new Promise((resolve) => {
    console.log(`\n$ ${command} ${args.join(' ')}`);
    const child = spawn(command, args, { cwd: root, stdio: 'inherit', env });
    child.on('exit', (code, signal) => resolve(signal ? 1 : code));
  });
}

async function main() {
  const suites = process.argv.slice(2);
  assertCargo();
  ensureSystemDeps({ suites });
  const server = process.env.APOS_MONGODB_URI ? null : await startServer({});
  const uri = process.env.APOS_MONGODB_URI || server.uri;
  const env = { ...process.env, APOS_JOBS_TEST_URI: uri };
  delete env.APOS_MONGODB_URI;
  let failed = 0;
  try {
    failed += await run('cargo', [ 'test', '--release', '--locked' ], env) ? 1 : 0;
    failed += await run(process.execPath, [
      '--test',
      '--test-concurrency=1',
      ...(suites.length ? suites : [ '__tests__/' ])
    ], env) ? 1 : 0;
  } finally {
    if (server) {
      await server.stop();
    }
  }
  process.exitCode = failed ? 1 : 0;
}

main().catch((error) => {
  // A missing system package is a message with what to do, not a stack trace.
  console.error(error.systemDeps ? error.message : error);
  process.exitCode = 1;
});
