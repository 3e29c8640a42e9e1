// Loads the compiled Rust core, napi-rs style: first the prebuilt binary that npm installs
// for this platform (the optional dependency `apostrophe-jobs-native-<platform>`), then a
// build from source (`index.node`, made by scripts/build.js, the install script). When
// neither loads, the error lists what was tried, why each failed, and what to do.

'use strict';

const fs = require('fs');
const path = require('path');
const { name, version, optionalDependencies } = require('../package.json');

// napi-rs's platform names: Linux binaries differ by C library, Windows ones are MSVC builds.
function platformName() {
  const { platform, arch } = process;
  if (platform === 'linux') {
    return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`;
  }
  return platform === 'win32' ? `win32-${arch}-msvc` : `${platform}-${arch}`;
}

// As napi-rs's generated loaders tell: a Node.js built on glibc reports the glibc it runs on.
// The report would also look up network interfaces, which can be slow; it is not needed.
function isMusl() {
  const excludeNetwork = process.report.excludeNetwork;
  process.report.excludeNetwork = true;
  try {
    return !process.report.getReport().header.glibcVersionRuntime;
  } finally {
    process.report.excludeNetwork = excludeNetwork;
  }
}

const platform = platformName();
const prebuiltPackage = `${name}-${platform}`;
const localBuild = path.join(__dirname, '..', 'index.node');

// Each attempt answers `{ tried, file, binding }` or `{ tried, reason }`.
function loadFile(tried, file) {
  try {
    return { tried, file, binding: require(file) };
  } catch (error) {
    return { tried, reason: `${file} does not load: ${error.message}` };
  }
}

function loadPrebuilt() {
  const tried = `${prebuiltPackage} (the prebuilt binary for ${platform})`;
  let file;
  try {
    file = require.resolve(prebuiltPackage);
  } catch (error) {
    return { tried, reason: 'not installed' };
  }
  // A binary of another version may lack bindings this version calls.
  const installed = require(`${prebuiltPackage}/package.json`).version;
  if (installed !== version) {
    return { tried, reason: `version ${installed} is installed, this package is ${version}` };
  }
  return loadFile(tried, file);
}

function loadLocalBuild() {
  const tried = `${localBuild} (a build from source)`;
  if (!fs.existsSync(localBuild)) {
    return { tried, reason: 'not built' };
  }
  return loadFile(tried, localBuild);
}

// The platforms this copy of the package has prebuilt binaries for: the release adds them as
// optional dependencies when it publishes (a checkout of the repository has none).
function prebuiltPlatforms() {
  return Object.keys(optionalDependencies || {})
    .filter((dependency) => dependency.startsWith(`${name}-`))
    .map((dependency) => dependency.slice(name.length + 1));
}

function advice() {
  const platforms = prebuiltPlatforms();
  const fromSource =
    'build it from source: install Rust (cargo 1.88 or newer, https://rustup.rs), approve the ' +
    `package's install script (\`npm install-scripts approve ${name}\`), then run ` +
    `\`npm rebuild ${name}\` and read its output.`;
  if (!platforms.includes(platform)) {
    const list = platforms.length ? platforms.join(', ') : 'none in this copy of the package';
    return `There is no prebuilt binary for ${platform} (prebuilt: ${list}), so ${fromSource}`;
  }
  return (
    `npm installs ${prebuiltPackage} as an optional dependency, unless optional dependencies ` +
    'are left out (`--omit=optional`, `--no-optional`, `omit=optional` in .npmrc): install ' +
    'with them. If it is still missing, remove node_modules and package-lock.json and run ' +
    '`npm install` again (npm can miss optional dependencies of other platforms in an existing ' +
    `lockfile: https://github.com/npm/cli/issues/4828). Or ${fromSource}`
  );
}

/**
 * Loads the addon: `{ binding, file }`, or throws an error saying what was tried and what to do.
 * @returns {{ binding: import('../binding'), file: string }}
 */
function load() {
  // In order, stopping at the first that loads: a process needs one copy of the addon.
  const attempts = [];
  for (const attempt of [ loadPrebuilt, loadLocalBuild ]) {
    const result = attempt();
    if (result.binding) {
      return result;
    }
    attempts.push(result);
  }
  throw new Error(
    `${name}: the native addon could not be loaded. Tried:\n` +
    attempts.map((attempt) => `  - ${attempt.tried}: ${attempt.reason}\n`).join('') +
    advice()
  );
}

module.exports = { load, loadPrebuilt, prebuiltPackage };
