// The three routes of 2.x, same paths, bodies and replies: `progress` and `modal` read the
// job through `self.db` (so the JSON and HTML are what 2.x produced, through the core
// templates), with the exact counts of the Rust engine when the job runs in this process;
// `cancel` asks the Rust engine to write the stop request.
//
// Unlike 2.x, the routes are for logged-in users by default (the browser modal is only
// loaded for them): anonymous requests get `{ status: 'forbidden' }` (403 for `modal`). The
// `requireLogin: false` option restores 2.x's openness. With `ownerOnly: true`, a job started
// by a user (it records `userId`) is visible to that user and to admins only; to anyone else
// it answers as a job that does not exist.

module.exports = function(self, options) {

  self.addRoutes = function() {

    // Asks a job, running in any process, to stop or cancel. Unlike 2.x, a job that has
    // already ended is left alone, so it never shows "Stopping..." afterwards. Replies
    // `ok` for an unknown id, as 2.x does (its browser code shows an error otherwise).

    self.apiRoute('post', 'cancel', function(req, res, next) {
      return withVisibleJob(req, next, function(job, _id, hidden) {
        if (hidden) {
          return next('notfound');
        }
        if (!_id) {
          return next(null);
        }
        return self.engine.requestCancel(_id).then(() => next(null), next);
      });
    });

    self.renderRoute('post', 'modal', function(req, res, next) {
      return withVisibleJob(req, next, function(job) {
        if (job) {
          // Unlike 2.x, the first paint of the embedded progress fragment has its
          // percentage too (2.x drew "width: %" until the first poll).
          self.addPercentage(job);
        }
        return next(null, {
          template: 'modal',
          data: {
            options: self.options,
            job: job
          }
        });
      });
    });

    // Unlike 2.x, a job that no longer exists also answers `ended: true`, so the browser
    // modal shows its "The job no longer exists" heading with a Done button instead of
    // polling forever.

    self.apiRoute('post', 'progress', function(req, res, next) {
      return withVisibleJob(req, next, function(job) {
        if (!job) {
          return respond({ notfound: true, ended: true });
        }
        self.addPercentage(job);
        return respond(job);
      });

      function respond(job) {
        let html;
        try {
          html = self.render(req, 'progress', { job: job });
        } catch (e) {
          return next(e);
        }
        return next(null, { job: job, html: html });
      }
    });

    // The dashboard's routes (`dashboard.js`).
    self.addDashboardRoutes();
  };

  // Whether this request may use the job routes at all.

  self.mayUseRoutes = function(req) {
    return self.options.requireLogin === false || !!req.user;
  };

  // Whether the user of `req` may see `job`: always, unless `ownerOnly` is on and the job
  // was started by another user and `req` is not an admin's.

  self.canAccessJob = function(req, job) {
    if (!self.options.ownerOnly || !job.userId) {
      return true;
    }
    if (req.user && req.user._id === job.userId) {
      return true;
    }
    return self.apos.permissions.can(req, 'admin');
  };

  // The common start of the three routes: the laundered `_id` of the body, the login check,
  // and the job, which is answered as missing (`hidden` is true) to a user who may not see it.
  function withVisibleJob(req, next, handle) {
    const _id = self.apos.launder.id((req.body || {})._id);
    if (!self.mayUseRoutes(req)) {
      return next('forbidden');
    }
    // Without the dashboard's large fields (the ids of a batch, its bitmaps): the 2.x
    // replies stay as small as 2.x's.
    return self.db.find({ _id: _id }).project(self.largeJobFields).limit(1).toArray().then(function([ job ]) {
      if (job && !self.canAccessJob(req, job)) {
        return handle(null, _id, true);
      }
      return handle(job && self.withLiveCounts(job), _id, false);
    }, next);
  }

  // Counts are written at most every 100 ms (every 250 ms for slow items), but the process
  // running a job knows them as of the last few ms: its routes show those.

  self.withLiveCounts = function(job) {
    const live = !job.ended && self.engine && self.engine.liveCounts(job._id);
    if (live && live.good + live.bad >= (job.processed || 0)) {
      job.good = live.good;
      job.bad = live.bad;
      job.processed = live.good + live.bad;
    }
    return job;
  };

  // The non-persisted `percentage` of 2.x's `progress` reply: the number 0 without a total,
  // else the string `((processed / total) * 100).toFixed(2)`.

  self.addPercentage = function(job) {
    job.percentage = job.total ? self.percentage(job.processed, job.total) : 0;
    return job;
  };

  // As 2.x computes it.

  self.percentage = function(processed, total) {
    return ((processed / total) * 100).toFixed(2);
  };
};
