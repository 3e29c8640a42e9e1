'use strict';

// What the tests need from the system besides Node.js and Rust, and how Debian/Ubuntu
// provide it: Chromium for the browser tests, Python's venv for the test database, and
// libfaketime for the clock-skew tests.
//
// `npm test` (scripts/test.js) checks these before it runs anything. When something is
// missing and the process is root on a machine with apt-get, it installs it, as it installs
// its own database server; otherwise it stops with the one command to run. `.ci/run`
// installs them all with `node scripts/system-deps.js install`.
//
//   node scripts/system-deps.js           lists what is missing (exit 1 if anything is)
//   node scripts/system-deps.js install   installs what is missing, as npm test would

const childProcess = require('child_process');
const fs = require('fs');
const path = require('path');
const { serverBinary } = require('./mongo-server.js');

const DEFAULT_CHROMIUM = '/usr/bin/chromium';

// The Chromium the browser tests drive: AJN_CHROMIUM, else Debian's.
function chromiumPath(env = process.env) {
  return env.AJN_CHROMIUM || DEFAULT_CHROMIUM;
}

// Debian and Ubuntu put libfaketime under the multiarch directory of the machine's
// architecture; other distributions directly under a lib directory.
const MULTIARCH = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu', ia32: 'i386-linux-gnu' };
const FAKETIME_LIBRARY = 'libfaketimeMT.so.1';

// The libfaketime preload library (multithreaded flavour: site processes have threads), or
// null when it is not installed.
function faketimeLibrary({ libDirs = [ '/usr/lib', '/usr/lib64', '/usr/local/lib' ], arch = process.arch } = {}) {
  const candidates = [];
  for (const dir of libDirs) {
    if (MULTIARCH[arch]) {
      candidates.push(path.join(dir, MULTIARCH[arch], 'faketime', FAKETIME_LIBRARY));
    }
    candidates.push(path.join(dir, 'faketime', FAKETIME_LIBRARY));
  }
  return candidates.find((candidate) => fs.existsSync(candidate)) || null;
}

// Each requirement: what it is, the Debian/Ubuntu package that provides it, why the tests
// need it and which suites (file names; all of them when `suites` is null).
const REQUIREMENTS = [
  {
    what: 'Chromium',
    aptPackage: 'chromium',
    why: 'the browser tests drive a real Chromium',
    suites: [ 'browser.test.js', 'demo.test.js' ],
    where: (context) => context.chromium,
    isPresent: (context) => fs.existsSync(context.chromium)
  },
  {
    what: "Python 3's venv module",
    aptPackage: 'python3-venv',
    why: 'the test database (SecantusDB, from PyPI) is installed into a Python virtualenv',
    suites: null,
    // Only before the database is installed, and not at all with a database of your own.
    isNeeded: (context) => !context.env.APOS_MONGODB_URI && !fs.existsSync(context.databaseServer),
    where: () => 'python3 -m venv',
    isPresent: (context) => childProcess.spawnSync('python3', [ '-c', 'import venv, ensurepip' ], {
      env: context.env,
      stdio: 'ignore'
    }).status === 0
  },
  {
    what: 'libfaketime',
    aptPackage: 'faketime',
    why: 'the clock-skew tests run a site process with its clock set 2 minutes off',
    suites: [ 'fencing.test.js' ],
    where: () => FAKETIME_LIBRARY,
    isPresent: (context) => faketimeLibrary(context.faketime) !== null
  }
];

// The context of a check, with what this machine has by default; tests pass their own.
//   suites          the arguments of `npm test` (files or folders); empty means all suites
//   env             for PATH, AJN_CHROMIUM, APOS_MONGODB_URI
//   isRoot          whether this process may install system packages
//   chromium        where Chromium should be (`chromiumPath(env)`)
//   faketime        where to look for libfaketime (`faketimeLibrary`'s options)
//   databaseServer  the installed test database server, if any
function checkContext(options = {}) {
  return {
    suites: options.suites || [],
    env: options.env || process.env,
    isRoot: options.isRoot !== undefined ? options.isRoot : (process.getuid ? process.getuid() === 0 : false),
    chromium: options.chromium || chromiumPath(options.env || process.env),
    faketime: options.faketime || {},
    databaseServer: options.databaseServer || serverBinary()
  };
}

// Whether the suites to run include one of `names` (a folder or anything else that is not a
// test file runs them all).
function runsAnyOf(suites, names) {
  if (!names || suites.length === 0) {
    return true;
  }
  return suites.some((suite) => !suite.endsWith('.test.js') || names.includes(path.basename(suite)));
}

// The requirements of the suites to run that this machine lacks.
function missingRequirements(context) {
  return REQUIREMENTS.filter((requirement) =>
    runsAnyOf(context.suites, requirement.suites) &&
    (!requirement.isNeeded || requirement.isNeeded(context)) &&
    !requirement.isPresent(context));
}

function findOnPath(command, env) {
  for (const dir of (env.PATH || '').split(path.delimiter)) {
    if (dir && fs.existsSync(path.join(dir, command))) {
      return path.join(dir, command);
    }
  }
  return null;
}

function runCommand(command, args, env) {
  const result = childProcess.spawnSync(command, args, { stdio: 'inherit', env });
  if (result.error) {
    throw systemDepsError(`${command} ${args.join(' ')}: ${result.error.message}`);
  }
  if (result.status !== 0) {
    throw systemDepsError(`${command} ${args.join(' ')} exited with ${result.status === null ? result.signal : result.status}`);
  }
}

// An error whose message says all (scripts/test.js prints it without a stack trace).
function systemDepsError(message) {
  const error = new Error(message);
  error.systemDeps = true;
  return error;
}

// `npm test` also runs the Rust core's tests, with cargo: Debian's is too old for the crate,
// so it is not installed here.
function assertCargo(env = process.env) {
  if (!findOnPath('cargo', env)) {
    throw systemDepsError(
      "npm test runs the Rust core's tests with cargo, which is not on PATH: install Rust 1.88 " +
      'or later (https://rustup.rs), then run it again.'
    );
  }
}

// Makes sure the system has what the suites to run need: installs what is missing when it
// can (root, apt-get), else throws an error that says the command to run. Returns the
// packages it installed (none when nothing was missing).
//   options   as for `checkContext`, plus `log` (a line of progress) and `run(command,
//             args, env)` (runs a command, throws when it fails)
function ensureSystemDeps(options = {}) {
  const context = checkContext(options);
  const log = options.log || ((line) => process.stderr.write(`[system-deps] ${line}\n`));
  const run = options.run || runCommand;
  const missing = missingRequirements(context);
  if (missing.length === 0) {
    return [];
  }
  const lines = missing.map((requirement) =>
    `  - ${requirement.what} (${requirement.where(context)}): ${requirement.why}`);
  if (missing.some((requirement) => requirement.aptPackage === 'chromium') && context.env.AJN_CHROMIUM) {
    throw systemDepsError(
      `AJN_CHROMIUM is ${context.env.AJN_CHROMIUM}, which does not exist: point it to a Chromium ` +
      `binary, or unset it to use ${DEFAULT_CHROMIUM} (installed as root with apt-get if missing).`
    );
  }
  const packages = missing.map((requirement) => requirement.aptPackage);
  const aptGet = findOnPath('apt-get', context.env);
  if (!aptGet) {
    throw systemDepsError([
      'The tests need what this machine lacks:',
      ...lines,
      `Install it with your system's package manager (Debian/Ubuntu packages: ${packages.join(' ')}); ` +
        'AJN_CHROMIUM can point to a Chromium installed elsewhere.'
    ].join('\n'));
  }
  if (!context.isRoot) {
    throw systemDepsError([
      'The tests need what this machine lacks:',
      ...lines,
      'Install it, then run the tests again:',
      `  sudo apt-get update && sudo apt-get install -y ${packages.join(' ')}`
    ].join('\n'));
  }
  log(`The tests need what this machine lacks:\n${lines.join('\n')}`);
  log(`Installing it, as root with apt-get: apt-get update && apt-get install -y ${packages.join(' ')}`);
  const aptEnv = Object.assign({}, context.env, { DEBIAN_FRONTEND: 'noninteractive' });
  run(aptGet, [ 'update' ], aptEnv);
  run(aptGet, [ 'install', '-y', ...packages ], aptEnv);
  const stillMissing = missingRequirements(context);
  if (stillMissing.length) {
    throw systemDepsError(
      `apt-get install -y ${packages.join(' ')} finished, but these are still missing: ` +
      `${stillMissing.map((requirement) => `${requirement.what} (${requirement.where(context)})`).join(', ')}. ` +
      'Install them by hand (AJN_CHROMIUM can point to a Chromium installed elsewhere).'
    );
  }
  log(`Installed ${packages.join(' ')}.`);
  return packages;
}

module.exports = { ensureSystemDeps, assertCargo, missingRequirements, checkContext, chromiumPath, faketimeLibrary };

if (require.main === module) {
  const command = process.argv[2];
  try {
    if (command === 'install') {
      ensureSystemDeps();
    } else if (command === undefined) {
      const missing = missingRequirements(checkContext());
      for (const requirement of missing) {
        process.stdout.write(`missing: ${requirement.what} (Debian/Ubuntu package ${requirement.aptPackage})\n`);
      }
      process.exitCode = missing.length ? 1 : 0;
    } else {
      process.stderr.write('usage: node scripts/system-deps.js [install]\n');
      process.exitCode = 2;
    }
  } catch (error) {
    process.stderr.write(`${error.message}\n`);
    process.exitCode = 1;
  }
}
