'use strict';

// What `npm test` does about the system packages the suites need (scripts/system-deps.js):
// machines without them are simulated by where the check looks (a Chromium path, lib
// directories, a PATH), and the installing command is recorded instead of run, so nothing is
// installed or removed here.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { ensureSystemDeps, missingRequirements, checkContext, faketimeLibrary } = require('../scripts/system-deps.js');

let scratch;
// A PATH with an apt-get on it (never run: `run` records the calls).
let pathWithAptGet;
// A PATH with no commands at all.
let emptyPath;
let noChromium;
let noLibraries;

before(() => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'ajn-system-deps-'));
  pathWithAptGet = path.join(scratch, 'bin');
  fs.mkdirSync(pathWithAptGet);
  fs.writeFileSync(path.join(pathWithAptGet, 'apt-get'), '');
  emptyPath = path.join(scratch, 'empty');
  fs.mkdirSync(emptyPath);
  noChromium = path.join(scratch, 'absent', 'chromium');
  noLibraries = { libDirs: [ path.join(scratch, 'lib') ] };
});

after(() => {
  fs.rmSync(scratch, { recursive: true, force: true });
});

// A machine that lacks Chromium and has everything else the browser suite needs.
function browserSuiteWithoutChromium(overrides) {
  return Object.assign({
    suites: [ '__tests__/browser.test.js' ],
    env: { PATH: pathWithAptGet, APOS_MONGODB_URI: 'mongodb://127.0.0.1:27017/' },
    chromium: noChromium,
    faketime: noLibraries
  }, overrides);
}

function recorder() {
  const calls = [];
  const run = (command, args, env) => calls.push({ command, args, frontend: env.DEBIAN_FRONTEND });
  return { calls, run };
}

test('without Chromium and not root, it stops before running anything and names the one command to run', () => {
  const { calls, run } = recorder();
  assert.throws(() => ensureSystemDeps(browserSuiteWithoutChromium({ isRoot: false, run })), (error) => {
    assert.match(error.message, /Chromium \(.*absent\/chromium\): the browser tests drive a real Chromium/);
    assert.match(error.message, /^ {2}sudo apt-get update && sudo apt-get install -y chromium$/m);
    assert.equal(error.systemDeps, true);
    return true;
  });
  assert.deepEqual(calls, []);
});

test('without Chromium, as root with apt-get, it runs apt-get update and apt-get install -y chromium, non-interactive, and says why', () => {
  const logged = [];
  const calls = [];
  const chromium = path.join(scratch, 'installed', 'chromium');
  const run = (command, args, env) => {
    calls.push({ command, args, frontend: env.DEBIAN_FRONTEND });
    if (args[0] === 'install') {
      fs.mkdirSync(path.dirname(chromium), { recursive: true });
      fs.writeFileSync(chromium, '');
    }
  };
  const installed = ensureSystemDeps(browserSuiteWithoutChromium({
    chromium,
    isRoot: true,
    run,
    log: (line) => logged.push(line)
  }));
  const aptGet = path.join(pathWithAptGet, 'apt-get');
  assert.deepEqual(calls, [
    { command: aptGet, args: [ 'update' ], frontend: 'noninteractive' },
    { command: aptGet, args: [ 'install', '-y', 'chromium' ], frontend: 'noninteractive' }
  ]);
  assert.deepEqual(installed, [ 'chromium' ]);
  assert.match(logged.join('\n'), /the browser tests drive a real Chromium/);
  assert.match(logged.join('\n'), /apt-get update && apt-get install -y chromium/);
});

test('an install that does not provide what was missing is an error that says so', () => {
  const { calls, run } = recorder();
  assert.throws(() => ensureSystemDeps(browserSuiteWithoutChromium({ isRoot: true, run, log: () => {} })),
    /apt-get install -y chromium finished, but these are still missing: Chromium/);
  assert.equal(calls.length, 2);
});

test('a fresh machine lacking all three gets one command for all three packages', () => {
  const { calls, run } = recorder();
  assert.throws(() => ensureSystemDeps({
    suites: [],
    env: { PATH: pathWithAptGet },
    chromium: noChromium,
    faketime: noLibraries,
    databaseServer: path.join(scratch, 'no-venv', 'bin', 'secantusd-py'),
    isRoot: false,
    run
  }), /sudo apt-get update && sudo apt-get install -y chromium python3-venv faketime$/m);
  assert.deepEqual(calls, []);
});

test('without apt-get, even as root, it installs nothing and names the Debian/Ubuntu packages and AJN_CHROMIUM', () => {
  const { calls, run } = recorder();
  assert.throws(() => ensureSystemDeps(browserSuiteWithoutChromium({
    env: { PATH: emptyPath, APOS_MONGODB_URI: 'mongodb://127.0.0.1:27017/' },
    isRoot: true,
    run
  })), /package manager \(Debian\/Ubuntu packages: chromium\); AJN_CHROMIUM can point/);
  assert.deepEqual(calls, []);
});

test('an AJN_CHROMIUM that does not exist is reported as such, not installed over', () => {
  const { calls, run } = recorder();
  const env = { PATH: pathWithAptGet, APOS_MONGODB_URI: 'mongodb://127.0.0.1:27017/', AJN_CHROMIUM: noChromium };
  assert.throws(() => ensureSystemDeps(browserSuiteWithoutChromium({ env, chromium: undefined, isRoot: true, run })),
    /AJN_CHROMIUM is .*absent\/chromium, which does not exist/);
  assert.deepEqual(calls, []);
});

test('only what the chosen suites need is checked: the API suite runs without Chromium or libfaketime', () => {
  const context = checkContext(browserSuiteWithoutChromium({ suites: [ '__tests__/api.test.js' ] }));
  assert.deepEqual(missingRequirements(context), []);
  const fencing = checkContext(browserSuiteWithoutChromium({ suites: [ '__tests__/fencing.test.js' ] }));
  assert.deepEqual(missingRequirements(fencing).map((requirement) => requirement.aptPackage), [ 'faketime' ]);
});

test('with everything in place nothing is run', () => {
  const { calls, run } = recorder();
  const lib = path.join(scratch, 'lib-with-faketime');
  fs.mkdirSync(path.join(lib, 'faketime'), { recursive: true });
  fs.writeFileSync(path.join(lib, 'faketime', 'libfaketimeMT.so.1'), '');
  const installed = ensureSystemDeps({
    suites: [ '__tests__/browser.test.js', '__tests__/fencing.test.js' ],
    env: { PATH: pathWithAptGet, APOS_MONGODB_URI: 'mongodb://127.0.0.1:27017/' },
    chromium: process.execPath,
    faketime: { libDirs: [ lib ] },
    isRoot: true,
    run
  });
  assert.deepEqual(installed, []);
  assert.deepEqual(calls, []);
});

test("libfaketime is found under the architecture's multiarch directory (Debian, Ubuntu) or directly under a lib directory", () => {
  const lib = path.join(scratch, 'multiarch');
  const library = path.join(lib, 'aarch64-linux-gnu', 'faketime', 'libfaketimeMT.so.1');
  fs.mkdirSync(path.dirname(library), { recursive: true });
  fs.writeFileSync(library, '');
  assert.equal(faketimeLibrary({ libDirs: [ lib ], arch: 'arm64' }), library);
  assert.equal(faketimeLibrary({ libDirs: [ lib ], arch: 'x64' }), null);
});
