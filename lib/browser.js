// Browser assets: the core module's own `user.js`, `modal.js` and `user.less`, unchanged.
// They are found along the module's chain (the core `apostrophe-jobs` folder, then the
// project's `lib/modules/apostrophe-jobs`), exactly as in 2.x, so project-level overrides of
// those files keep working. Then the dashboard's `dashboard.js` and `dashboard.less`, from
// this package's `public/` folder (see `addPackageFolder` in `index.js`).

module.exports = function(self, options) {
  self.pushAssets = function() {
    self.pushAsset('script', 'user', { when: 'user' });
    self.pushAsset('script', 'modal', { when: 'user' });
    self.pushAsset('stylesheet', 'user', { when: 'user' });
    self.pushAsset('script', 'dashboard', { when: 'user' });
    self.pushAsset('stylesheet', 'dashboard', { when: 'user' });
  };
};
