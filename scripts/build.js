#!/usr/bin/env node
// The package's `install` script. Where npm installed the prebuilt binary for this platform
// (the optional dependency `apostrophe-jobs-native-<platform>`) and it loads, there is nothing
// to do. Otherwise it builds the native addon from source with cargo and installs it as
// `index.node`: nothing is downloaded except crates from crates.io. `node scripts/build.js`
// in a checkout (which has no prebuilt binary) rebuilds the addon after a Rust change.
//
// The copy is atomic (write a temporary file, then rename) so a process that is already
// running with the old addon loaded, or a build that fails half-way, never leaves a
// truncated `index.node` behind.

'use strict';

const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');

const prebuilt = require('../lib/native.js').loadPrebuilt();
if (prebuilt.binding) {
  console.log(`apostrophe-jobs-native: the prebuilt binary ${prebuilt.file} loads; nothing to build.`);
  process.exit(0);
}

const libraryName = {
  linux: 'libapostrophe_jobs_native.so',
  darwin: 'libapostrophe_jobs_native.dylib',
  win32: 'apostrophe_jobs_native.dll'
}[process.platform];

function fail(message) {
  console.error(`\napostrophe-jobs-native: ${message}\n`);
  process.exit(1);
}

if (!libraryName) {
  fail(`building on ${process.platform} is not supported; use Linux or macOS.`);
}

// Why there is something to build, so a site that expected the prebuilt binary can tell.
console.log(`apostrophe-jobs-native: ${prebuilt.tried}: ${prebuilt.reason}; building from source.`);

const cargo = process.env.CARGO || 'cargo';
const version = spawnSync(cargo, [ '--version' ], { encoding: 'utf8' });
if (version.error || version.status !== 0) {
  fail(
    'cargo was not found, so the native addon cannot be built from source.\n' +
    'On the platforms with a prebuilt binary (see "Install" in the README), install with optional\n' +
    'dependencies and npm installs it. Elsewhere, install Rust 1.88 or newer (https://rustup.rs,\n' +
    'or your system\'s rustc and cargo packages), make sure `cargo` is on the PATH of the user\n' +
    'running npm, then run\n' +
    '  npm rebuild apostrophe-jobs-native'
  );
}

const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
console.log(`apostrophe-jobs-native: building the native addon with ${version.stdout.trim()} (target ${targetDir})`);
const build = spawnSync(cargo, [ 'build', '--release', '--locked' ], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, CARGO_TARGET_DIR: targetDir }
});
if (build.error || build.status !== 0) {
  fail(
    'cargo build failed (see the messages above), so the native addon was not installed.\n' +
    'Fix the cause, then run `npm rebuild apostrophe-jobs-native`.'
  );
}

const built = path.join(targetDir, 'release', libraryName);
const installed = path.join(root, 'index.node');
const temporary = `${installed}.tmp${process.pid}`;
fs.copyFileSync(built, temporary);
fs.renameSync(temporary, installed);
console.log(`apostrophe-jobs-native: installed ${path.relative(process.cwd(), installed) || installed}`);
