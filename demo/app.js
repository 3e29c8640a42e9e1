// The demo site: an ordinary Apostrophe 2 project, shaped like apostrophe-boilerplate.
//
//   lib/modules/apostrophe-jobs/index.js   enables apostrophe-jobs-native (that one line)
//   lib/modules/articles/                  a piece type, and a cancelable job over all of it
//   lib/modules/apostrophe-pages/views/    the home page, with the buttons that start the job
//
// `npm run demo` (scripts/demo.js) starts a database when you have none and calls
// `startDemoSite` and `ensureDemoAdmin`. With a MongoDB of your own you can also run it
// directly:
//
//   APOS_MONGODB_URI=mongodb://127.0.0.1:27017/apostrophe-jobs-demo node demo/app.js

'use strict';

const crypto = require('crypto');

const ADMIN = { username: 'admin', password: 'demo' };

// Starts the site and resolves with the `apos` object once it listens.
//   mongodbUri      the database (a URI that names the database)
//   port, address   where to listen
//   logger          optional: Apostrophe's `apostrophe-utils` logger option
function startDemoSite({ mongodbUri, port = 3000, address = '127.0.0.1', logger } = {}) {
  let apos;
  return new Promise((resolve, reject) => {
    apos = require('apostrophe')({
      // Anchors Apostrophe's module lookups and its rootDir (public/, data/) to this folder.
      root: module,
      shortName: 'apostrophe-jobs-demo',
      // Never read the command line of whatever script started us as an Apostrophe task.
      argv: { _: [] },
      modules: Object.assign({
        'apostrophe-db': { uri: mongodbUri },
        'apostrophe-express': {
          port,
          address,
          session: { secret: 'apostrophe-jobs-native-demo' }
        },
        // What Apostrophe 2 recommends for new sites (it warns at start-up otherwise).
        'apostrophe-assets': { jQuery: 3 },
        'apostrophe-images': { enableAltField: true },
        'articles': {}
      }, logger ? { 'apostrophe-utils': { logger } } : {}),
      initFailed: reject,
      afterListen: (err) => (err ? reject(err) : resolve(apos))
    });
  }).catch((err) => {
    // Close what did open (e.g. the database connection), so the process can exit.
    if (apos && apos.destroy) {
      return new Promise((resolve) => apos.destroy(() => resolve())).then(() => { throw err; });
    }
    throw err;
  });
}

// Creates the `admin` user (password `demo`) unless a user of that name exists. Resolves
// with `{ username, password, created }`.
//
// The password hash is made here with 1,000 PBKDF2 rounds. Apostrophe 2 would hash it with
// the `credentials` package, whose round count doubles every two years since 2000: in 2026
// that is about 11 million rounds, around 10 seconds per hash, paid again at every login
// because the stored hash records its own round count. A hash with few rounds makes the
// demo's start-up and login instant, and the unchanged login code verifies it. Fine for a
// local demo with a published password; never do this for real accounts.
async function ensureDemoAdmin(apos) {
  const req = apos.tasks.getReq();
  const existing = await apos.users.find(req, { username: ADMIN.username }).trash(null).toObject();
  if (existing) {
    return Object.assign({ created: false }, ADMIN);
  }
  let group = await apos.groups.find(req, { title: 'admin' }).joins(false).toObject();
  if (!group) {
    group = await apos.groups.insert(req, { title: 'admin', permissions: [ 'admin' ] });
  }
  const user = await apos.users.insert(req, {
    username: ADMIN.username,
    title: 'Demo Admin',
    firstName: 'Demo',
    lastName: 'Admin',
    email: 'admin@example.invalid',
    groupIds: [ group._id ]
  });
  await apos.users.safe.updateOne({ _id: user._id }, { $set: { passwordHash: fastPasswordHash(ADMIN.password) } });
  return Object.assign({ created: true }, ADMIN);
}

function fastPasswordHash(password) {
  const keyLength = 64;
  const iterations = 1000;
  const salt = crypto.randomBytes(keyLength);
  const hash = crypto.pbkdf2Sync(password, salt, iterations, keyLength, 'sha512');
  // The format of the `credentials` package that Apostrophe 2 uses.
  return JSON.stringify({
    hashMethod: 'pbkdf2-sha512',
    salt: salt.toString('base64'),
    hash: hash.toString('base64'),
    keyLength,
    iterations,
    credentials3: true
  });
}

// On the first start, gives the jobs dashboard (admin bar → Jobs) a few jobs started by the
// admin: see `seedDemoJobs` in lib/modules/articles. Resolves once they have ended.
async function seedDemoJobs(apos) {
  const user = await apos.users.find(apos.tasks.getReq(), { username: ADMIN.username }).toObject();
  return apos.modules.articles.seedDemoJobs(user);
}

module.exports = { startDemoSite, ensureDemoAdmin, seedDemoJobs };

if (require.main === module) {
  const mongodbUri = process.env.APOS_MONGODB_URI;
  if (!mongodbUri) {
    process.stderr.write('Set APOS_MONGODB_URI, or use `npm run demo`, which starts a database for you.\n');
    process.exit(2);
  }
  const port = Number(process.env.PORT || 3000);
  const address = process.env.ADDRESS || '127.0.0.1';
  startDemoSite({ mongodbUri, port, address })
    .then(async (apos) => {
      const admin = await ensureDemoAdmin(apos);
      await seedDemoJobs(apos);
      process.stdout.write(`Demo site: http://${address}:${port}/  (log in as ${admin.username} / ${admin.password})\n`);
    })
    .catch((err) => {
      process.stderr.write(`${err.stack || err}\n`);
      process.exit(1);
    });
}
