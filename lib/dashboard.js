// The jobs dashboard, an addition of this package: a "Jobs" button in the admin bar opens a
// modal (also a page, `GET /modules/apostrophe-jobs/dashboard`) listing jobs newest first,
// with filters, a page per job (counts, timings, process, failed items), and actions: Stop
// or Cancel (the `cancel` route), Retry failed items or Resume unfinished items (the browser
// posts the job's own route again, as the admin who clicks), and Delete.
//
// Who sees it: admins see every job. With `ownerOnly`, every logged-in user sees the jobs
// they started (admins still see all). Without `ownerOnly`, other users get no button, 403
// from the page and `{ status: 'forbidden' }` from its routes.
//
// What `run` records for a retry (additive fields of the job document):
//   rerun: { route, body, ids }   the route `run` was called from, the request body without
//                                 `ids`, `_id` and `job` (a JSON string, at most 4 KB), and
//                                 the ids (at most 1 MB of JSON); when one of those is too
//                                 large, `rerun: { route, unavailable }` says why instead.
//   itemsFinished, itemsFailed    bitmaps of the items that finished and that failed (bit i
//                                 for ids[i], written with the counts), so the unfinished
//                                 items are known exactly after a stop, a drain or a crash.
//   retryOf: { jobId, items }     on a job started by a retry: the job and which items
//                                 ('failed' or 'unfinished').
// Every job also records `process: { hostname, pid }`, the process that ran it.

const os = require('os');

const PAGE_SIZE = 20;
const RERUN_BODY_LIMIT = 4 * 1024;
const RERUN_IDS_LIMIT = 1024 * 1024;

// The large additive fields (`LARGE_FIELDS` of the Rust core too): never sent to the
// browser, never needed by the 2.x routes.
const LARGE_FIELDS = { rerun: 0, itemsFinished: 0, itemsFailed: 0 };
const LIST_PROJECTION = Object.assign({ results: 0, failedItems: 0 }, LARGE_FIELDS);

const FILTERS = {
  all: {},
  running: { ended: false },
  failed: { ended: true, $or: [ { status: 'failed' }, { interrupted: true } ] },
  stopped: { status: { $in: [ 'stopped', 'canceled' ] } },
  completed: { status: 'completed', interrupted: { $ne: true } }
};

// A retry's header: `<jobId>:<failed|unfinished>`.
const RETRY_HEADER = 'X-Apos-Jobs-Retry-Of';

module.exports = function(self, options) {

  self.largeJobFields = LARGE_FIELDS;

  // Who may use the dashboard: `null` (nobody: anonymous, or not an admin without
  // `ownerOnly`), else `{ everyone }`, whether the user sees every user's jobs.

  self.dashboardAccess = function(req) {
    if (!req.user) {
      return null;
    }
    if (self.apos.permissions.can(req, 'admin')) {
      return { everyone: true };
    }
    return self.options.ownerOnly ? { everyone: false } : null;
  };

  self.addDashboardToAdminBar = function() {
    self.apos.adminBar.add('apostrophe-jobs', 'Jobs', self.options.ownerOnly ? null : 'admin');
  };

  // Called by Apostrophe once every module is constructed (the admin bar is then ready).

  self.modulesReady = function(callback) {
    self.addDashboardToAdminBar();
    return callback(null);
  };

  // *What `run` and `start` record.*

  // The additive fields `run` stores for a batch started from a route: `rerun` (see the top
  // of this file) and `retryOf` when the request is a retry posted by the dashboard.
  // A request that did not come over HTTP (a task, code calling `run` with a hand-made
  // `req`) records neither.

  self.describeRerun = function(req, ids) {
    if (req.method !== 'POST' || typeof req.originalUrl !== 'string') {
      return undefined;
    }
    const route = req.originalUrl;
    const rest = Object.assign({}, req.body);
    delete rest.ids;
    delete rest._id;
    delete rest.job;
    let body;
    try {
      body = JSON.stringify(rest);
    } catch (error) {
      return { route, unavailable: `Its request could not be recorded (${error.message}).` };
    }
    if (Buffer.byteLength(body) > RERUN_BODY_LIMIT) {
      return { route, unavailable: `Its request carried ${kilobytes(Buffer.byteLength(body))} besides the ids; at most ${kilobytes(RERUN_BODY_LIMIT)} are recorded.` };
    }
    // The size of `JSON.stringify(ids)`, without making that string for a batch of any size:
    // laundered ids have nothing to escape, so each takes its bytes, two quotes and a comma.
    const idsSize = ids.reduce((size, id) => size + Buffer.byteLength(String(id)) + 3, 1);
    if (idsSize > RERUN_IDS_LIMIT) {
      return { route, unavailable: `Its ${ids.length} ids take ${kilobytes(idsSize)}; at most ${kilobytes(RERUN_IDS_LIMIT)} of ids are recorded.` };
    }
    return { route, body, ids };
  };

  self.describeRetryOf = function(req) {
    const header = typeof req.get === 'function' ? req.get(RETRY_HEADER) : undefined;
    const match = /^([^:]+):(failed|unfinished)$/.exec(header || '');
    if (!match) {
      return undefined;
    }
    return { jobId: self.apos.launder.id(match[1]), items: match[2] };
  };

  self.describeProcess = function() {
    return { hostname: os.hostname(), pid: process.pid };
  };

  // *Reading jobs for the dashboard.*

  // The newest jobs first, a page at a time: `{ jobs, total, page, pages }`.

  self.findDashboardJobs = async function(req, access, filter, page) {
    const query = Object.assign({}, FILTERS[filter] || FILTERS.all);
    if (!access.everyone) {
      query.userId = req.user._id;
    }
    const total = await countJobs(query);
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    page = Math.min(Math.max(1, page), pages);
    const jobs = await self.db.find(query).project(LIST_PROJECTION)
      .sort({ when: -1, _id: -1 }).skip((page - 1) * PAGE_SIZE).limit(PAGE_SIZE).toArray();
    jobs.forEach(self.withLiveCounts);
    await self.addUserTitles(jobs);
    return { jobs: jobs.map(self.describeJob), total, page, pages };
  };

  function countJobs(query) {
    // `countDocuments` from driver 3.x on; older releases of Apostrophe 2 ship driver 2.x.
    return typeof self.db.countDocuments === 'function' ? self.db.countDocuments(query) : self.db.count(query);
  }

  // One job as stored, without the fields `projection` leaves out (by default its large
  // ones), or null when it does not exist or `req` may not see it.

  self.findDashboardJob = async function(req, access, _id, projection = LARGE_FIELDS) {
    const [ job ] = await self.db.find({ _id: self.apos.launder.id(_id) }).project(projection).limit(1).toArray();
    if (!job || (!access.everyone && job.userId !== req.user._id)) {
      return null;
    }
    return self.withLiveCounts(job);
  };

  // Names `job._user` for the dashboard: the title of the user who started it.

  self.addUserTitles = async function(jobs) {
    const userIds = [ ...new Set(jobs.map((job) => job.userId).filter((id) => typeof id === 'string')) ];
    if (!userIds.length) {
      return;
    }
    const users = await self.apos.docs.db.find({ _id: { $in: userIds } }).project({ title: 1, username: 1 }).toArray();
    const byId = new Map(users.map((user) => [ user._id, user.title || user.username ]));
    jobs.forEach((job) => {
      job._user = byId.get(job.userId);
    });
  };

  // What the dashboard's templates show of a job.

  self.describeJob = function(job) {
    const labels = job.labels || {};
    const end = job.endedAt || (job.ended ? null : new Date());
    return {
      _id: job._id,
      title: labels.title || 'Job',
      status: job.status,
      statusLabel: statusLabel(job),
      interrupted: !!job.interrupted,
      running: !job.ended,
      canceling: !!job.canceling,
      canCancel: !!job.canCancel,
      canStop: !!job.canStop,
      user: job._user || job.userId || null,
      when: job.when instanceof Date ? job.when : null,
      endedAt: job.endedAt instanceof Date ? job.endedAt : null,
      duration: (job.when instanceof Date && end) ? formatDuration(end - job.when) : null,
      good: job.good || 0,
      bad: job.bad || 0,
      processed: job.processed || 0,
      total: typeof job.total === 'number' ? job.total : null,
      // What the templates print ("—" for nothing; Nunjucks has no null test in every release).
      totalText: typeof job.total === 'number' ? String(job.total) : '—',
      percentage: (typeof job.total === 'number' && job.total > 0) ? self.percentage(job.processed || 0, job.total) : null,
      labels
    };
  };

  // The progress modal's own wording (its `progress.html`), labels first.
  function statusLabel(job) {
    const labels = job.labels || {};
    if (job.canceling && !job.ended) {
      return job.canCancel ? (labels.canceling || 'Canceling...') : (labels.stopping || 'Stopping...');
    }
    switch (job.status) {
      case 'failed': return labels.failed || 'Failed';
      case 'canceled': return labels.canceled || 'Canceled';
      case 'stopped': return labels.stopped || 'Stopped';
      case 'completed': return labels.completed || 'Completed';
      default: return labels.running || 'In Progress...';
    }
  }

  // A job's page: everything of `describeJob`, its process, failed items (with the titles
  // of the documents they name), results count and what a retry or resume would run.

  self.describeJobPage = async function(req, job) {
    const described = self.describeJob(job);
    const failedItems = (job.failedItems || []).map((item) => ({ id: item.id, message: item.message }));
    const docIds = failedItems.map((item) => item.id).filter((id) => typeof id === 'string');
    if (docIds.length) {
      const docs = await self.apos.docs.find(req, { _id: { $in: docIds } })
        .projection({ title: 1, type: 1 }).trash(null).published(null).toArray();
      const titles = new Map(docs.map((doc) => [ doc._id, doc.title ]));
      failedItems.forEach((item) => {
        item.title = titles.get(item.id);
      });
    }
    // A running job cannot be retried yet: its ids (up to 1 MB) are read once it has ended.
    const ledger = job.ended ? await self.readLedger(job._id) : {};
    return Object.assign(described, {
      process: job.process || null,
      workerId: job.workerId || null,
      heartbeatAt: job.heartbeatAt instanceof Date ? job.heartbeatAt : null,
      failedItems,
      moreFailedItems: Math.max(0, (job.bad || 0) - failedItems.length),
      resultsText: (job.results && typeof job.results === 'object') ? String(Object.keys(job.results).length) : '—',
      retryOf: job.retryOf || null,
      rerun: describeRerunChoices(ledger)
    });
  };

  // The job's `rerun` record with its ids and bitmaps (read apart: they are what the other
  // reads leave out).

  self.readLedger = async function(_id) {
    const [ doc ] = await self.db.find({ _id }).project({ rerun: 1, itemsFinished: 1, itemsFailed: 1 }).limit(1).toArray();
    return doc || {};
  };

  // The items a retry of an ended job would run, from its `rerun` and bitmaps (`ledger`):
  // `{ ids }`, or `{ unavailable }` saying why not.

  self.rerunItems = function(ledger, items) {
    const rerun = ledger.rerun;
    if (!rerun || !rerun.route) {
      return { unavailable: 'This job was not started by run() from a route, so the dashboard cannot run it again.' };
    }
    if (rerun.unavailable || !Array.isArray(rerun.ids)) {
      return { unavailable: rerun.unavailable || 'Its items were not recorded.' };
    }
    const finished = bitmap(ledger.itemsFinished);
    const failed = bitmap(ledger.itemsFailed);
    const ids = [];
    rerun.ids.forEach((id, index) => {
      const chosen = items === 'failed' ? isSet(failed, index) : !isSet(finished, index);
      if (chosen) {
        ids.push(id);
      }
    });
    return { ids };
  };

  function describeRerunChoices(ledger) {
    const failed = self.rerunItems(ledger, 'failed');
    const unfinished = self.rerunItems(ledger, 'unfinished');
    return {
      unavailable: failed.unavailable || null,
      failed: failed.ids ? failed.ids.length : 0,
      unfinished: unfinished.ids ? unfinished.ids.length : 0
    };
  }

  // A BSON Binary (or, from some drivers, a Buffer) as bytes.
  function bitmap(value) {
    if (!value) {
      return null;
    }
    if (Buffer.isBuffer(value)) {
      return value;
    }
    if (value.buffer && typeof value.value === 'function') {
      return Buffer.from(value.value(true));
    }
    return Buffer.from(value.buffer || []);
  }

  function isSet(bytes, index) {
    return !!bytes && index >> 3 < bytes.length && (bytes[index >> 3] & (1 << (index & 7))) !== 0;
  }

  // *Routes.*

  self.addDashboardRoutes = function() {

    // The page: the dashboard in the site's layout, for a bookmark or a new tab.

    self.route('get', 'dashboard', function(req, res) {
      if (!self.dashboardAccess(req)) {
        return res.status(403).send(self.render(req, 'dashboardForbidden', {}));
      }
      return self.sendPage(req, 'dashboardPage', { dashboard: dashboardOptions() });
    });

    // The modal (apostrophe-modal loads it).

    self.renderRoute('post', 'dashboard', function(req, res, next) {
      if (!self.dashboardAccess(req)) {
        return next('forbidden');
      }
      return next(null, { template: 'dashboard', data: { dashboard: dashboardOptions() } });
    });

    self.apiRoute('post', 'dashboard-list', dashboardRoute(async function(req, access) {
      const filter = Object.prototype.hasOwnProperty.call(FILTERS, req.body.filter) ? req.body.filter : 'all';
      const found = await self.findDashboardJobs(req, access, filter, self.apos.launder.integer(req.body.page, 1, 1));
      const html = self.render(req, 'dashboardList', Object.assign({ filter }, found));
      return { html, page: found.page, pages: found.pages, total: found.total, running: found.jobs.some((job) => job.running) };
    }));

    self.apiRoute('post', 'dashboard-job', dashboardRoute(async function(req, access) {
      const job = await self.findDashboardJob(req, access, req.body._id);
      if (!job) {
        return 'notfound';
      }
      await self.addUserTitles([ job ]);
      const html = self.render(req, 'dashboardJob', { job: await self.describeJobPage(req, job) });
      return { html, ended: !!job.ended };
    }));

    // What a retry posts: the job's route, its recorded body and the ids to run.

    self.apiRoute('post', 'rerun', dashboardRoute(async function(req, access) {
      const items = req.body.items === 'failed' ? 'failed' : 'unfinished';
      // The job with its ids and bitmaps, in one read.
      const job = await self.findDashboardJob(req, access, req.body._id, { results: 0 });
      if (!job) {
        return 'notfound';
      }
      if (!job.ended) {
        return { error: 'unavailable', message: 'The job is still running.' };
      }
      const chosen = self.rerunItems(job, items);
      if (chosen.unavailable) {
        return { error: 'unavailable', message: chosen.unavailable };
      }
      if (!chosen.ids.length) {
        return { error: 'unavailable', message: items === 'failed' ? 'No item of this job failed.' : 'Every item of this job finished.' };
      }
      let body;
      try {
        body = JSON.parse(job.rerun.body || '{}');
      } catch (error) {
        return { error: 'unavailable', message: 'Its recorded request cannot be read.' };
      }
      return { route: job.rerun.route, body, ids: chosen.ids, header: RETRY_HEADER, retryOf: `${job._id}:${items}` };
    }));

    // Deletes one ended job (`_id`), or, for admins, every job that ended more than
    // `olderThanDays` days ago.

    self.apiRoute('post', 'delete', dashboardRoute(async function(req, access) {
      if (req.body._id !== undefined) {
        const job = await self.findDashboardJob(req, access, req.body._id);
        if (!job) {
          return 'notfound';
        }
        if (!job.ended) {
          return { error: 'invalid', message: 'A running job cannot be deleted: stop it first.' };
        }
        return { deleted: await self.purgeJobs({ _id: job._id }) };
      }
      if (!access.everyone) {
        return 'forbidden';
      }
      const days = Number(req.body.olderThanDays);
      if (!(days >= 0)) {
        return { error: 'invalid', message: 'olderThanDays must be a number of days, 0 or more.' };
      }
      return { deleted: await self.purgeJobs({ olderThan: days * 24 * 60 * 60 * 1000 }) };
    }));
  };

  // An apiRoute for the dashboard: the access check, then `handle(req, access)`, which
  // resolves the reply, an error status string, or `{ error, message }`.
  function dashboardRoute(handle) {
    return function(req, res, next) {
      const access = self.dashboardAccess(req);
      if (!access) {
        return next('forbidden');
      }
      req.body = req.body || {};
      return handle(req, access).then(function(reply) {
        if (typeof reply === 'string') {
          return next(reply);
        }
        if (reply.error) {
          return next(reply.error, null, { message: reply.message });
        }
        return next(null, reply);
      }, next);
    };
  }

  function dashboardOptions() {
    return {
      filters: [
        { name: 'all', label: 'All' },
        { name: 'running', label: 'Running' },
        { name: 'failed', label: 'Failed or interrupted' },
        { name: 'stopped', label: 'Stopped or canceled' },
        { name: 'completed', label: 'Completed' }
      ],
      purgeAges: [ 30, 7, 1, 0 ]
    };
  }
};

function kilobytes(bytes) {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${Math.ceil(bytes / 1024)} KB`;
}

// "2 h 5 min", "3 min 20 s", "12 s", "250 ms".
function formatDuration(ms) {
  if (ms < 1000) {
    return `${Math.max(0, Math.round(ms))} ms`;
  }
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) {
    return `${seconds} s`;
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min ${seconds % 60} s`;
  }
  const hours = Math.floor(minutes / 60);
  if (hours < 48) {
    return `${hours} h ${minutes % 60} min`;
  }
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

module.exports.formatDuration = formatDuration;
