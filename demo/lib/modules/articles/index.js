// A piece type, plus the long-running job the home page's buttons start.
//
// Articles get the usual admin UI (admin bar → Articles, or the home page's "Open the
// Articles manager" button): its batch operations (Publish, Add Tag, Trash...) run through
// apostrophe-jobs too, with a Stop button.
//
// The home page's buttons call this module's `set-all-published` route, which runs a
// one-shot job with `runNonBatch`: it publishes (or unpublishes) every article one by one,
// reporting progress as it goes, and can be canceled: it then puts back every article it
// had changed.
//
// The `check-links` route is a batch through `run`, as a site's own batch operations are.
// On the first start the demo runs it twice (`seedDemoJobs`), so the jobs dashboard (admin
// bar → Jobs) has something to show: a check where some articles failed (Retry failed
// items runs them again, and they pass), a check stopped halfway (Resume unfinished items
// runs the rest), and a failed import.

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

module.exports = {
  extend: 'apostrophe-pieces',
  name: 'article',
  label: 'Article',
  pluralLabel: 'Articles',
  // Demo only: how many articles to create on start-up when there are fewer.
  seed: 1000,
  // Pause after each article, so the progress bar is easy to follow even on a fast database.
  pauseMs: 10,
  // The manager lists drafts and published articles alike. Apostrophe lists published pieces
  // only by default, and the seeded articles are drafts: the manager would open empty, with
  // no article for its batch operations. (Of two filters of one name, the last one counts.)
  addFilters: [
    {
      name: 'published',
      choices: [
        { value: true, label: 'Published' },
        { value: false, label: 'Draft' },
        { value: null, label: 'Both' }
      ],
      allowedInChooser: false,
      def: null,
      style: 'pill'
    }
  ],

  construct: function(self, options) {

    // POST /modules/articles/set-all-published { published: true|false } -> { status: 'ok', jobId }
    // `requireEditor` (from apostrophe-pieces) refuses users who may not edit articles.

    self.route('post', 'set-all-published', self.requireEditor, function(req, res) {
      const published = self.apos.launder.boolean(req.body.published);
      const jobs = self.apos.modules['apostrophe-jobs'];
      // runNonBatch answers the request itself with the job id, then calls the work
      // function. `canCancel` shows a Cancel button in the progress modal.
      return jobs.runNonBatch(req, function(req, reporting) {
        const work = self.setAllPublished(req, published, reporting);
        self.runningWork.add(work);
        const forget = () => self.runningWork.delete(work);
        work.then(forget, forget);
        return work;
      }, {
        labels: {
          title: published ? 'Publish every article' : 'Unpublish every article',
          good: published ? 'Published' : 'Unpublished',
          canceling: 'Canceling: putting the articles back...'
        },
        canCancel: true
      });
    });

    // POST /modules/articles/check-links { ids, job: true } -> { status: 'ok', jobId }
    // Checks the links of each article (the demo pretends: it waits a moment). The first
    // check of an article whose number ends in 0 or 5 times out; a second check passes.

    self.route('post', 'check-links', self.requireEditor, function(req, res) {
      return self.apos.modules['apostrophe-jobs'].run(req, self.checkLinks, {
        labels: { title: 'Check links', good: 'Checked', bad: 'Failed' }
      });
    });

    self.checkLinks = async function(req, id) {
      const article = await self.apos.docs.db.findOne({ _id: id, type: self.name });
      if (!article) {
        throw new Error(`There is no article ${id}.`);
      }
      await delay(options.checkLinksMs || 60);
      const timesOut = !article.linksCheckedAt && !article.linkCheckTimedOut && /[05]$/.test(article.title);
      if (timesOut) {
        await self.apos.docs.db.updateOne({ _id: id }, { $set: { linkCheckTimedOut: true } });
        throw new Error(`${article.title}: the link checker timed out. Retry it.`);
      }
      await self.apos.docs.db.updateOne({ _id: id }, { $set: { linksCheckedAt: new Date() } });
    };

    // Demo only: gives the jobs dashboard a few jobs on the first start, run as `user` through
    // the real route's code: a link check of 40 articles where 8 time out, one of 60 articles
    // stopped after about 15, and an import that failed (made with start/end: the demo has
    // no old site to import from). Resolves once they have ended.

    self.seedDemoJobs = async function(user) {
      const jobs = self.apos.modules['apostrophe-jobs'];
      if (await jobs.db.countDocuments({})) {
        return;
      }
      const ids = (await self.apos.docs.db.find({ type: self.name, trash: { $ne: true } })
        .sort({ titleSortified: 1 }).limit(100).toArray()).map((doc) => doc._id);
      const route = (body) => self.demoRequest(user, `/modules/${self.__meta.name}/check-links`, body);
      const imported = await require('util').promisify(jobs.start)({ labels: { title: 'Import articles from the old site' }, userId: user._id });
      jobs.setTotal(imported, 250);
      jobs.good(imported, 117);
      jobs.bad(imported, 3);
      await jobs.end(imported, false);
      const withErrors = route({ ids: ids.slice(0, 40), job: true });
      jobs.run(withErrors.req, self.checkLinks, { labels: { title: 'Check links', good: 'Checked', bad: 'Failed' } });
      const stopped = route({ ids: ids.slice(40, 100), job: true });
      jobs.run(stopped.req, self.checkLinks, { labels: { title: 'Check links', good: 'Checked', bad: 'Failed' } });
      const stoppedId = await stopped.jobId;
      await delay(1000);
      await jobs.engine.requestCancel(stoppedId);
      const seeded = await Promise.all([ withErrors.jobId, stoppedId ]);
      while (await jobs.db.countDocuments({ _id: { $in: seeded }, ended: false })) {
        await delay(100);
      }
    };

    // A request as the route would receive it from `user`'s browser; `jobId` resolves with
    // the id of the job it starts.
    self.demoRequest = function(user, url, body) {
      const req = self.apos.tasks.getReq({ user, method: 'POST', originalUrl: url, url, body });
      req.get = () => undefined;
      let answered;
      const jobId = new Promise((resolve, reject) => {
        answered = (reply) => (reply.jobId ? resolve(reply.jobId) : reject(new Error(JSON.stringify(reply))));
      });
      req.res = { send: answered };
      return { req, jobId };
    };

    // The job's work. `reporting` comes from apostrophe-jobs: `setTotal` enables the progress
    // bar, `good`/`bad` count articles, `setResults` is what the browser's `success`
    // callback receives, and `isCanceling()` returns a function once the user has clicked
    // Cancel: we then undo our changes and call it instead of finishing normally.

    self.setAllPublished = async function(req, published, reporting) {
      const ids = (await self.apos.docs.db.find(
        { type: self.name, trash: { $ne: true }, published: !published },
        { _id: 1 }
      ).sort({ titleSortified: 1 }).toArray()).map((doc) => doc._id);
      reporting.setTotal(ids.length);
      const changed = [];
      for (const id of ids) {
        if (self.stopping) {
          // The job ends as failed; the articles already changed stay changed.
          throw new Error('The site is stopping: the job stops here.');
        }
        const halt = reporting.isCanceling();
        if (halt) {
          // Undo in one write, so Cancel is quick even after hundreds of articles:
          // `published` is the only field this job changes.
          await self.apos.docs.db.updateMany({ _id: { $in: changed } }, { $set: { published: !published } });
          return halt();
        }
        try {
          const piece = await self.findForEditing(req, { _id: id }).toObject();
          if (!piece) {
            reporting.bad();
            continue;
          }
          piece.published = published;
          await self.update(req, piece);
          changed.push(id);
          reporting.good();
        } catch (err) {
          self.apos.utils.error(err);
          reporting.bad();
        }
        await delay(options.pauseMs);
      }
      reporting.setResults({ changed: changed.length, published });
    };

    // Stops this module's jobs before the site stops (scripts/demo.js calls it before
    // `apos.destroy()`, which closes the database connection the work is using). Resolves
    // once every job has finished its current article and ended.

    self.runningWork = new Set();
    self.stopping = false;

    self.stopWork = function() {
      self.stopping = true;
      return Promise.all([ ...self.runningWork ].map((work) => work.catch(() => {})));
    };

    // The home page shows how many articles are published.

    const superPageBeforeSend = self.pageBeforeSend;
    self.pageBeforeSend = function(req, callback) {
      superPageBeforeSend(req);
      if (!req.user) {
        return callback(null);
      }
      const articles = { type: self.name, trash: { $ne: true } };
      return Promise.all([
        self.apos.docs.db.countDocuments(articles),
        self.apos.docs.db.countDocuments(Object.assign({ published: true }, articles))
      ]).then(([ total, published ]) => {
        req.data.articleCounts = { total, published };
        return callback(null);
      }, callback);
    };

    // The home page's buttons (public/js/demo-jobs.js), for logged-in users.

    const superPushAssets = self.pushAssets;
    self.pushAssets = function() {
      superPushAssets();
      self.pushAsset('script', 'demo-jobs', { when: 'user' });
    };

    // Demo only: create draft articles until there are `seed` of them. The first goes
    // through `insert`, so every hook runs; the rest are copies of it made with one
    // `insertMany`, which takes a second where a thousand `insert` calls take a minute.

    self.afterInit = function(callback) {
      return self.seedArticles(options.seed).then(() => callback(null), callback);
    };

    self.seedArticles = async function(wanted) {
      const existing = await self.apos.docs.db.countDocuments({ type: self.name });
      if (existing >= wanted) {
        return;
      }
      const req = self.apos.tasks.getReq();
      const title = (i) => `Article ${String(i).padStart(4, '0')}`;
      const first = await self.insert(req, { title: title(existing + 1), published: false });
      const copies = [];
      for (let i = existing + 2; i <= wanted; i++) {
        const t = title(i);
        const sortified = self.apos.utils.sortify(t);
        copies.push(Object.assign({}, first, {
          _id: self.apos.utils.generateId(),
          title: t,
          slug: self.apos.utils.slugify(t),
          titleSortified: sortified,
          highSearchText: sortified,
          highSearchWords: sortified.split(/\s+/),
          lowSearchText: sortified,
          searchSummary: '',
          createdAt: new Date(),
          updatedAt: new Date()
        }));
      }
      if (copies.length) {
        await self.apos.docs.db.insertMany(copies);
      }
      self.apos.utils.log(`Created ${copies.length + 1} draft articles.`);
    };
  }
};
