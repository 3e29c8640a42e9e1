#!/usr/bin/env node
// `npm run typings`: regenerates `binding.d.ts`, the typings of the native binding, from the
// Rust doc comments of `src/lib.rs`, with the napi-rs CLI (a build of its own, into a
// temporary folder; the package's own build, scripts/build.js, stays plain cargo).
// `npm run typings -- --check` fails when the checked-in file is out of date (CI runs it).

'use strict';

const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const checked = path.join(root, 'binding.d.ts');
const check = process.argv.includes('--check');
const outputDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ajn-typings-'));

try {
  const args = [ 'build', '--release', '--output-dir', outputDir, '--dts', 'binding.d.ts' ];
  if (process.env.CARGO_TARGET_DIR) {
    args.push('--target-dir', process.env.CARGO_TARGET_DIR);
  }
  const napi = path.join(root, 'node_modules', '.bin', 'napi');
  const build = spawnSync(napi, args, { cwd: root, stdio: 'inherit' });
  if (build.error || build.status !== 0) {
    console.error('\nnpm run typings: the napi-rs build failed (see above); binding.d.ts is unchanged.');
    process.exit(1);
  }
  const generated = fs.readFileSync(path.join(outputDir, 'binding.d.ts'), 'utf8');
  const current = fs.existsSync(checked) ? fs.readFileSync(checked, 'utf8') : '';
  if (generated === current) {
    console.log('binding.d.ts is up to date.');
  } else if (check) {
    console.error('binding.d.ts is out of date with the doc comments and signatures of src/lib.rs: run `npm run typings` and commit the result.');
    process.exitCode = 1;
  } else {
    fs.writeFileSync(checked, generated);
    console.log('binding.d.ts regenerated.');
  }
} finally {
  fs.rmSync(outputDir, { recursive: true, force: true });
}
