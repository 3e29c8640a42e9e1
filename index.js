// apostrophe-jobs-native: a drop-in replacement for the ApostropheCMS 2.x `apostrophe-jobs`
// module, with its job state, stop/cancel watcher and batch loop in Rust.
//
// Enable it with one file in your project, `lib/modules/apostrophe-jobs/index.js`:
//
//     module.exports = require('apostrophe-jobs-native');
//
// That file becomes an implicit subclass of the core `apostrophe-jobs` module (this
// definition has no `extend`), so the core module's routes, views, browser assets and
// `afterConstruct` stay in force; this package's `construct` runs after the core one and
// replaces its methods. Everything else in the site stays as it is.
//
// What the module does (as in 2.x): it runs long-running jobs in response to user actions,
// such as batch operations on pieces, with a progress modal in the browser and a Stop or
// Cancel button. See `run` for the easiest way to use it, `runNonBatch` for one-shot work,
// and `start` and friends for the rest. It has nothing to do with cron jobs or command
// line tasks.
//
// Options (all optional; see the README): `collectionName` (default `aposJobs`), `uri` (the
// MongoDB connection string for the Rust engine; defaults to the one the site connected
// with), `requireLogin`, `ownerOnly`, `orphanAfter`, `drainOnSignal`, `drainTimeout`,
// `keepFailedItems`, `expireAfter`, `connectTimeout`, `flushInterval`, `watchInterval`,
// `finishRetryWindow`.

module.exports = {

  collectionName: 'aposJobs',

  construct: function(self, options) {
    addPackageFolder(self);
    require('./lib/implementation.js')(self, options);
    require('./lib/api.js')(self, options);
    require('./lib/routes.js')(self, options);
    require('./lib/dashboard.js')(self, options);
    require('./lib/browser.js')(self, options);
  }
};

// The dashboard's templates (`views/`) and browser code (`public/`) live in this package.
// Apostrophe finds a module's views and assets along its chain of definitions (the core
// `apostrophe-jobs` folder, then the project's `lib/modules/apostrophe-jobs`); this puts the
// package's folder between the two, as if it were an npm module improving the core one, so
// a project's own files still win.
function addPackageFolder(self) {
  const chain = self.__meta.chain;
  if (chain.some((meta) => meta.dirname === __dirname)) {
    return;
  }
  const packageMeta = { name: 'apostrophe-jobs-native', dirname: __dirname, filename: __filename, npm: true };
  chain.splice(chain.length - 1, 0, packageMeta);
  const chains = self.apos.assets && self.apos.assets.chains;
  if (chains) {
    // Where `/modules/apostrophe-jobs-native/…` is served from, and the project's chain.
    chains[packageMeta.name] = chain.slice(0, chain.length - 1);
    chains[chain[chain.length - 1].name] = chain.slice();
  }
}
