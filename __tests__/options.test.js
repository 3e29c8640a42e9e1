// Every option of the module is checked when the site starts: a value out of range is a
// start-up error naming the option and what it accepts, never a background task that quietly
// does not run.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootSite } = require('./helpers/site.js');
const { testUri } = require('./helpers/jobs.js');

let site;
let jobs;

before(async () => {
  site = await bootSite({ uri: testUri(), native: true });
  jobs = site.apos.modules['apostrophe-jobs'];
});

after(async () => {
  await site.stop();
});

// The options, with a value each accepts and the message a wrong value gets.
const OPTIONS = {
  orphanAfter: [ 3000, /must be a whole number from 1000 to 2147483647 \(ms\), or false to turn it off/ ],
  drainTimeout: [ 5000, /must be a whole number from 1 to 2147483647 \(ms\)/ ],
  stopGrace: [ 5000, /must be a whole number from 1 to 2147483647 \(ms\)/ ],
  keepFailedItems: [ 10, /must be a whole number from 1 to 100000, or false to turn it off/ ],
  expireAfter: [ 86400, /must be a whole number from 1 to 2147483647 \(s\)/ ],
  connectTimeout: [ 5000, /must be a whole number from 1 to 2147483647 \(ms\)/ ],
  flushInterval: [ 50, /must be a whole number from 1 to 60000 \(ms\)/ ],
  watchInterval: [ 250, /must be a whole number from 10 to 60000 \(ms\)/ ],
  finishRetryWindow: [ 60000, /must be a whole number from 1 to 2147483647 \(ms\)/ ],
  requireLogin: [ false, /must be true or false/ ],
  ownerOnly: [ true, /must be true or false/ ],
  drainOnSignal: [ true, /must be true or false/ ],
  uri: [ 'mongodb://127.0.0.1:27017/x', /must be a mongodb:\/\/ or mongodb\+srv:\/\/ connection string/ ],
  collectionName: [ 'aposJobs', /must be a non-empty string/ ]
};

const WRONG = [ 0, -1, 1.5, 'x', {} ];

function validateWith(name, value) {
  const saved = jobs.options[name];
  jobs.options[name] = value;
  try {
    jobs.validateOptions();
  } finally {
    jobs.options[name] = saved;
  }
}

for (const [ name, [ good, message ] ] of Object.entries(OPTIONS)) {
  test(`${name} refuses 0, -1, 1.5, "x" and {} with a message naming it, and accepts ${JSON.stringify(good)}`, () => {
    for (const value of WRONG) {
      // A collection name "x" is a fine name.
      if (name === 'collectionName' && value === 'x') {
        continue;
      }
      assert.throws(() => validateWith(name, value), (error) => {
        assert.match(error.message, new RegExp(`the ${name} option`));
        assert.match(error.message, message);
        assert.match(error.message, /modules: \{ 'apostrophe-jobs'/);
        return true;
      }, `${name}: ${JSON.stringify(value)}`);
    }
    validateWith(name, good);
  });
}

test('orphanAfter: false turns heartbeats off and keepFailedItems: false keeps none', () => {
  validateWith('orphanAfter', false);
  validateWith('keepFailedItems', false);
});

test('a site with a wrong option does not start, and says which', async () => {
  await assert.rejects(
    bootSite({ uri: testUri(), native: true, modules: { 'apostrophe-jobs': { watchInterval: 0 } } }),
    /the watchInterval option must be a whole number from 10 to 60000 \(ms\), not 0/
  );
});
