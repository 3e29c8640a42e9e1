#!/usr/bin/env node
// `npm run package`: the tarballs of the two packages that a site on this machine installs,
// made as the release makes them (.github/workflows/release.yml), into dist/ (or
// `npm run package -- --out-dir DIR`); prints their paths.
//
// - The platform package `apostrophe-jobs-native-<platform>`: `napi create-npm-dirs` makes
//   npm/<platform>/package.json from the `napi` field of package.json (`os`, `cpu`, `libc`,
//   `main` = the `.node` file), and the addon that scripts/build.js builds goes next to it.
// - The main package, with the `optionalDependencies` on every platform package that
//   `napi prepublish` adds when the release publishes. package.json itself has none, as in
//   the napi-rs package template, so `npm ci` in a checkout never asks the registry for
//   platform packages of a version that is not published yet.

'use strict';

const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { readNapiConfig } = require('@napi-rs/cli');
const { prebuiltPackage } = require('../lib/native.js');

const root = path.resolve(__dirname, '..');
const outDirFlag = process.argv.indexOf('--out-dir');
const outDir = path.resolve(outDirFlag > 0 ? process.argv[outDirFlag + 1] : path.join(root, 'dist'));
const napi = path.join(root, 'node_modules', '.bin', 'napi');

function fail(message) {
  console.error(`\nnpm run package: ${message}`);
  process.exit(1);
}

function run(command, args, { cwd = root, capture = false } = {}) {
  const result = spawnSync(command, args, {
    cwd,
    encoding: 'utf8',
    stdio: [ 'ignore', capture ? 'pipe' : 'inherit', 'inherit' ]
  });
  if (result.error || result.status !== 0) {
    fail(`\`${command} ${args.join(' ')}\` failed (see above).`);
  }
  return result.stdout;
}

function pack(dir) {
  const [ { filename } ] = JSON.parse(run('npm', [ 'pack', '--json', '--loglevel=warn', '--pack-destination', outDir ], { cwd: dir, capture: true }));
  return path.join(outDir, filename);
}

// The main package as `napi prepublish` publishes it, packed from a copy of its files.
function packMain(packageJson, optionalDependencies) {
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'ajn-package-'));
  try {
    const [ { files } ] = JSON.parse(run('npm', [ 'pack', '--dry-run', '--json', '--loglevel=warn', '--ignore-scripts' ], { capture: true }));
    for (const { path: file } of files) {
      fs.mkdirSync(path.dirname(path.join(stage, file)), { recursive: true });
      fs.copyFileSync(path.join(root, file), path.join(stage, file));
    }
    fs.writeFileSync(path.join(stage, 'package.json'), `${JSON.stringify({ ...packageJson, optionalDependencies }, null, 2)}\n`);
    return pack(stage);
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

async function main() {
  run(process.execPath, [ path.join(__dirname, 'build.js') ]);
  run(napi, [ 'create-npm-dirs' ]);
  const { packageJson, packageName, binaryName, targets } = await readNapiConfig(path.join(root, 'package.json'));
  const platform = prebuiltPackage.slice(packageName.length + 1);
  if (!targets.some((target) => target.platformArchABI === platform)) {
    fail(`this machine's platform, ${platform}, is not among the \`napi.targets\` of package.json.`);
  }
  const platformDir = path.join(root, 'npm', platform);
  fs.copyFileSync(path.join(root, 'index.node'), path.join(platformDir, `${binaryName}.${platform}.node`));

  fs.mkdirSync(outDir, { recursive: true });
  const optionalDependencies = Object.fromEntries(targets.map((target) => [
    `${packageName}-${target.platformArchABI}`,
    packageJson.version
  ]));
  console.log([ packMain(packageJson, optionalDependencies), pack(platformDir) ].join('\n'));
}

main().catch((error) => fail(error.stack || String(error)));
