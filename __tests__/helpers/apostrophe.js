// Which Apostrophe 2 release the site suites run: the `apostrophe` devDependency (the last
// 2.x release) unless APOS_JOBS_TEST_APOSTROPHE names another installed package, such as
// `apostrophe-oldest` (the oldest supported release, installed under an npm alias), which
// `npm test` runs the site suites against in a second pass.

const fs = require('fs');
const path = require('path');

const packageName = process.env.APOS_JOBS_TEST_APOSTROPHE || 'apostrophe';

function packageDir() {
  try {
    return path.dirname(require.resolve(`${packageName}/package.json`));
  } catch (error) {
    throw new Error(`APOS_JOBS_TEST_APOSTROPHE names ${packageName}, which is not installed: run \`npm ci\`, or unset it to test the \`apostrophe\` devDependency`);
  }
}

const version = () => require(path.join(packageDir(), 'package.json')).version;

// A file of the release (`lib/modules/apostrophe-jobs/lib/api.js`, ...).
const requireFile = (file) => require(path.join(packageDir(), file));

// The MongoDB driver module that the release's `apostrophe-db` connects with: the MongoDB 2.x
// driver itself up to 2.100, `emulate-mongo-2-driver` (over a newer driver) since 2.101. Its
// ObjectID/ObjectId, Long, Decimal128 and Binary are the BSON types the site's own code gets.
function siteDriver() {
  const dependencies = require(path.join(packageDir(), 'package.json')).dependencies;
  const name = dependencies['emulate-mongo-2-driver'] ? 'emulate-mongo-2-driver' : 'mongodb';
  return require(require.resolve(name, { paths: [ packageDir() ] }));
}

// Apostrophe loads its core modules from the npm package named `apostrophe` as found from
// the folder of its `root` option (moog-require's bundle lookup), whatever file was required
// to start it: a release installed under an alias would run with the core modules of the
// `apostrophe` devDependency. So for an alias, `root` is a file of a folder of its own, whose
// package.json lists `apostrophe` and whose `node_modules/apostrophe` links to the alias.
// Site processes may start side by side: each step is done so that a race is harmless.
function rootFor(defaultRoot) {
  if (packageName === 'apostrophe') {
    return defaultRoot;
  }
  const dir = path.join(__dirname, '..', '..', 'node_modules', '.apostrophe-release', packageName);
  const link = path.join(dir, 'node_modules', 'apostrophe');
  fs.mkdirSync(path.dirname(link), { recursive: true });
  const manifest = path.join(dir, 'package.json');
  if (!fs.existsSync(manifest)) {
    const temporary = `${manifest}.${process.pid}`;
    fs.writeFileSync(temporary, JSON.stringify({ private: true, dependencies: { apostrophe: version() } }));
    fs.renameSync(temporary, manifest);
  }
  try {
    fs.symlinkSync(packageDir(), link, 'dir');
  } catch (error) {
    if (error.code !== 'EEXIST') {
      throw error;
    }
  }
  return { filename: path.join(dir, 'app.js') };
}

module.exports = {
  packageName,
  packageDir,
  version,
  requireFile,
  siteDriver,
  // Starts a site (`options` as for `require('apostrophe')(options)`) with the release.
  create: (options) => require(packageName)({ ...options, root: rootFor(options.root) })
};
