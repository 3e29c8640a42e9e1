// The package installed as a site installs it, from the tarballs that `npm run package` makes,
// into fresh Apostrophe 2 projects, each booted in its own process to run a batch job:
// - with the prebuilt binary, on a machine without Rust: no cargo or rustc on the PATH of the
//   install or the site, and no install script approved;
// - without it, where the install script builds the addon from source with cargo, as on a
//   platform with no prebuilt binary;
// - with neither, where the install and the loader fail saying what to do.
// The sites check which addon file they loaded, so one quietly running another build fails.
//
// The source build compiles into its own target folder, so it does not disturb the main one:
// the first (cold) build there takes 3 to 6 minutes; later ones recompile only this crate.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { MongoClient } = require('mongodb');
const { spawnSite } = require('./helpers/site-process.js');
const { testUri, waitForEnd, ids } = require('./helpers/jobs.js');
const { prebuiltPackage } = require('../lib/native.js');

const ROOT = path.resolve(__dirname, '..');
const APOSTROPHE_VERSION = require('apostrophe/package.json').version;
const JOB_FIXTURES = path.join(__dirname, 'fixtures', 'job-fixtures.js');
const TEST_ARTICLES = path.join(__dirname, 'fixtures', 'site-stock', 'lib', 'modules', 'test-articles');
const SOURCE_BUILD_TARGET = path.join(os.homedir(), '.cache', 'apostrophe-jobs-native', 'target-install-test');
const MINUTE = 60 * 1000;

let workDir;
let tarballs;

// A shell's environment, not an npm script's: the npm_* variables of `npm test` would steer
// the projects' own npm commands.
function shellEnv(extra = {}) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([ key ]) => !/^npm_/i.test(key)));
  return { ...env, ...extra };
}

// The PATH of a machine without Rust: no folder holding cargo or rustc (which covers
// ~/.cargo/bin). Where Node.js or npm shared such a folder, they get one of their own.
function envWithoutRust() {
  const hasTool = (dir, tool) => fs.existsSync(path.join(dir, tool));
  const dirs = process.env.PATH.split(path.delimiter)
    .filter((dir) => dir && !hasTool(dir, 'cargo') && !hasTool(dir, 'rustc'));
  if (![ 'node', 'npm' ].every((tool) => dirs.some((dir) => hasTool(dir, tool)))) {
    const own = path.join(workDir, 'bin');
    fs.mkdirSync(own, { recursive: true });
    const npmFile = spawnSync('sh', [ '-c', 'command -v npm' ], { encoding: 'utf8' }).stdout.trim();
    fs.symlinkSync(process.execPath, path.join(own, 'node'));
    fs.symlinkSync(fs.realpathSync(npmFile), path.join(own, 'npm'));
    dirs.unshift(own);
  }
  const env = shellEnv({ PATH: dirs.join(path.delimiter) });
  delete env.CARGO;
  delete env.RUSTC;
  return env;
}

// Runs npm in a project; resolves `{ status, output }` (stdout and stderr as they came).
function npm(cwd, args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn('npm', [ ...args, '--no-audit', '--no-fund' ], { cwd, env });
    let output = '';
    child.stdout.on('data', (chunk) => { output += chunk; });
    child.stderr.on('data', (chunk) => { output += chunk; });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, output }));
  });
}

const tail = (text) => (text.length > 6000 ? `...${text.slice(-6000)}` : text);

// A new Apostrophe 2 project, as a site's repository would have it: apostrophe from npm
// (from npm's cache, which the repository's own install filled), the one file that enables
// this package, and the piece type the test helpers configure.
async function createProject(name, env, packageJsonExtra = {}) {
  const dir = path.join(workDir, name);
  fs.mkdirSync(path.join(dir, 'lib', 'modules', 'apostrophe-jobs'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'lib', 'modules', 'test-articles'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({
    name: `ajn-install-test-${name}`,
    private: true,
    dependencies: { apostrophe: APOSTROPHE_VERSION },
    ...packageJsonExtra
  }, null, 2));
  fs.writeFileSync(path.join(dir, 'lib', 'modules', 'apostrophe-jobs', 'index.js'),
    "module.exports = require('apostrophe-jobs-native');\n");
  fs.writeFileSync(path.join(dir, 'lib', 'modules', 'test-articles', 'index.js'),
    `module.exports = require(${JSON.stringify(TEST_ARTICLES)});\n`);
  const install = await npm(dir, [ 'install', '--prefer-offline' ], env);
  assert.equal(install.status, 0, `npm install of apostrophe@${APOSTROPHE_VERSION} failed:\n${tail(install.output)}`);
  return dir;
}

// Boots the project in its own process, checks which build of the addon it loaded, and runs
// a batch of 50 items through a real route to its end.
async function runBatch(projectDir, env, expectedAddon) {
  const site = await spawnSite({
    uri: testUri(),
    projectDir,
    admin: { username: 'admin', password: 'admin-password' },
    moduleFiles: { 'job-fixtures': JOB_FIXTURES }
  }, { env });
  const mongo = await MongoClient.connect(testUri());
  try {
    const loaded = site.nativeAddons.filter((file) => file.includes('apostrophe-jobs-native'));
    assert.deepEqual(loaded, [ fs.realpathSync(expectedAddon) ], 'the site loaded this addon');

    const client = await site.login('admin', 'admin-password');
    const reply = await client.post('/modules/job-fixtures/batch', { ids: ids(50), job: true });
    assert.equal(reply.status, 200);
    assert.equal(reply.body.status, 'ok', JSON.stringify(reply.body));
    const jobs = { db: mongo.db(site.shortName).collection('aposJobs') };
    const job = await waitForEnd(jobs, reply.body.jobId);
    assert.equal(job.status, 'completed');
    assert.equal(job.good, 50);
    assert.equal(job.bad, 0);
    assert.equal(job.processed, 50);
    assert.equal(job.total, 50);
    assert.deepEqual(job.results.id7, { id: 'id7' });
    // Only this package's engine records which process runs a job.
    assert.equal(typeof job.workerId, 'string');
  } finally {
    await mongo.close();
    await site.stop();
  }
}

before(() => {
  workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ajn-install-'));
  const packaged = spawnSync(process.execPath, [ path.join(ROOT, 'scripts', 'package.js'), '--out-dir', path.join(workDir, 'dist') ], {
    cwd: ROOT,
    encoding: 'utf8',
    stdio: [ 'ignore', 'pipe', 'inherit' ]
  });
  assert.equal(packaged.status, 0, `npm run package failed:\n${packaged.stdout}`);
  const [ main, platform ] = packaged.stdout.trim().split('\n').slice(-2);
  tarballs = { main, platform };
  assert.match(path.basename(main), /^apostrophe-jobs-native-\d+\.\d+\.\d+\.tgz$/);
  assert.equal(path.basename(platform).startsWith(`${prebuiltPackage}-`), true, platform);
});

after(() => {
  if (workDir) {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
});

test('with the prebuilt binary, a site installs the package and runs a batch on a machine without Rust', { timeout: 10 * MINUTE }, async () => {
  const env = envWithoutRust();
  for (const tool of [ 'cargo', 'rustc' ]) {
    const probe = spawnSync(tool, [ '--version' ], { env });
    assert.equal(probe.error && probe.error.code, 'ENOENT', `${tool} is not on the PATH of the install`);
  }
  const project = await createProject('prebuilt', env);

  const install = await npm(project, [ 'install', tarballs.main, tarballs.platform, '--foreground-scripts' ], env);
  assert.equal(install.status, 0, `the install failed:\n${tail(install.output)}`);
  assert.equal(JSON.parse(fs.readFileSync(path.join(project, 'package.json'), 'utf8')).allowScripts, undefined);
  // npm 11 runs an install script that no one approved (and lists it after the install); the
  // README's install section says so, and must change if npm stops doing it.
  assert.match(install.output, /apostrophe-jobs-native: the prebuilt binary \S+ loads; nothing to build\./);
  assert.equal(fs.existsSync(path.join(project, 'node_modules', 'apostrophe-jobs-native', 'index.node')), false);

  const platform = prebuiltPackage.slice('apostrophe-jobs-native-'.length);
  await runBatch(project, env, path.join(project, 'node_modules', prebuiltPackage, `apostrophe-jobs-native.${platform}.node`));
});

test('without the prebuilt binary, the install script builds the addon from source with cargo and a site runs a batch', { timeout: 20 * MINUTE }, async () => {
  const env = shellEnv({ CARGO_TARGET_DIR: SOURCE_BUILD_TARGET });
  // Approved as `npm install-scripts approve` records it for a tarball, since npm says it will
  // stop running scripts that no one approved.
  const project = await createProject('source', env, { allowScripts: { [`file:${tarballs.main}`]: true } });
  const install = await npm(project, [ 'install', tarballs.main, tarballs.platform ], env);
  assert.equal(install.status, 0, `the install failed:\n${tail(install.output)}`);
  // The platform package goes missing, as where npm leaves it out. (Not with `--omit=optional`:
  // Apostrophe's image processing, sharp, is an optional dependency too.)
  fs.rmSync(path.join(project, 'node_modules', prebuiltPackage), { recursive: true });

  const rebuild = await npm(project, [ 'rebuild', 'apostrophe-jobs-native', '--foreground-scripts' ], env);
  assert.equal(rebuild.status, 0, `the build failed:\n${tail(rebuild.output)}`);
  assert.match(rebuild.output, new RegExp(`${prebuiltPackage} \\(the prebuilt binary for \\S+\\): not installed; building from source\\.`));
  assert.match(rebuild.output, /apostrophe-jobs-native: installed /);

  await runBatch(project, env, path.join(project, 'node_modules', 'apostrophe-jobs-native', 'index.node'));
});

test('with neither the prebuilt binary nor cargo, the install fails, and so does loading, each saying what to do', { timeout: 5 * MINUTE }, async () => {
  const env = envWithoutRust();
  const project = path.join(workDir, 'neither');
  fs.mkdirSync(project);
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'ajn-install-test-neither', private: true }));

  const install = await npm(project, [ 'install', tarballs.main, '--omit=optional', '--prefer-offline' ], env);
  assert.notEqual(install.status, 0, 'the install succeeded with no addon');
  assert.match(install.output, /not installed; building from source\./);
  assert.match(install.output, /cargo was not found, so the native addon cannot be built from source\./);
  assert.match(install.output, /install with optional/);

  const skipped = await npm(project, [ 'install', tarballs.main, '--omit=optional', '--prefer-offline', '--ignore-scripts' ], env);
  assert.equal(skipped.status, 0, tail(skipped.output));
  const load = spawnSync(process.execPath, [ '-e', "require('apostrophe-jobs-native/lib/native.js').load()" ], { cwd: project, env, encoding: 'utf8' });
  assert.notEqual(load.status, 0);
  const installed = path.join(project, 'node_modules', 'apostrophe-jobs-native');
  const platform = prebuiltPackage.slice('apostrophe-jobs-native-'.length);
  assert.match(load.stderr, /apostrophe-jobs-native: the native addon could not be loaded\. Tried:/);
  assert.ok(load.stderr.includes(`  - ${prebuiltPackage} (the prebuilt binary for ${platform}): not installed\n`), load.stderr);
  assert.ok(load.stderr.includes(`  - ${path.join(installed, 'index.node')} (a build from source): not built\n`), load.stderr);
  assert.match(load.stderr, /install with them/);
  assert.match(load.stderr, /npm install-scripts approve apostrophe-jobs-native/);
});
