// The jobs dashboard in the browser (see `lib/dashboard.js` for the server side).
//
// `apostrophe-jobs-dashboard` drives one `[data-apos-jobs-dashboard]` element, in the modal
// the admin bar's "Jobs" button opens (`apostrophe-jobs-dashboard-modal`) or in the page
// `GET /modules/apostrophe-jobs/dashboard`. The server renders the list and the job pages;
// this code asks for them, refreshes them every second while a job shown is running, and
// carries out the actions.

apos.define('apostrophe-jobs-dashboard', {

  extend: 'apostrophe-context',

  construct: function(self, options) {
    self.$el = options.$el;
    self.filter = 'all';
    self.page = 1;
    // The job whose page is shown, or null for the list.
    self.jobId = null;
    self.timer = null;
    self.destroyed = false;

    // What a click on each kind of element does (it receives the element).
    self.clicks = {
      '[data-apos-jobs-filter]': function($filter) {
        self.filter = $filter.attr('data-apos-jobs-filter');
        self.page = 1;
        self.$el.find('[data-apos-jobs-filter]').removeClass('apos-active').addClass('apos-button--pill-inactive');
        $filter.addClass('apos-active').removeClass('apos-button--pill-inactive');
        self.showList();
      },
      '[data-apos-jobs-page]': function($link) {
        self.page = parseInt($link.attr('data-apos-jobs-page'), 10) || 1;
        self.showList();
      },
      '[data-apos-jobs-open]': function($link) {
        self.showJob($link.attr('data-apos-jobs-open'));
      },
      '[data-apos-jobs-back]': function() {
        self.showList();
      },
      '[data-apos-jobs-halt]': function($button) {
        self.halt($button.attr('data-apos-jobs-halt'));
      },
      '[data-apos-jobs-rerun]': function($button) {
        self.rerun(self.jobId, $button.attr('data-apos-jobs-rerun'));
      },
      '[data-apos-jobs-delete]': function($button) {
        self.deleteJob($button.attr('data-apos-jobs-delete'));
      },
      '[data-apos-jobs-action="purge"]': function() {
        self.purge(self.$el.find('[data-apos-jobs-purge-age]').val());
      }
    };

    self.start = function() {
      _.each(self.clicks, function(handle, selector) {
        self.$el.on('click', selector, function() {
          handle($(this));
          return false;
        });
      });
      self.showList();
    };

    self.destroy = function() {
      self.destroyed = true;
      clearTimeout(self.timer);
      self.$el.off('click');
    };

    self.showList = function() {
      self.jobId = null;
      self.$el.find('[data-apos-jobs-purge]').show();
      return self.refresh();
    };

    self.showJob = function(jobId) {
      self.jobId = jobId;
      self.$el.find('[data-apos-jobs-purge]').hide();
      return self.refresh();
    };

    // Fetches what is shown (the list or the job's page) and polls again in a second while
    // a running job is shown.
    self.refresh = function() {
      clearTimeout(self.timer);
      var shown = self.jobId;
      var request = shown ?
        [ 'dashboard-job', { _id: shown } ] :
        [ 'dashboard-list', { filter: self.filter, page: self.page } ];
      return self.api(request[0], request[1], function(data) {
        if (self.destroyed || shown !== self.jobId) {
          return;
        }
        if (data.status === 'notfound') {
          apos.notify('That job no longer exists.', { type: 'error', dismiss: true });
          return self.showList();
        }
        if (data.status !== 'ok') {
          return self.failed(data);
        }
        self.$el.find('[data-apos-jobs-view]').html(data.html);
        self.localizeTimes();
        if (shown ? !data.ended : data.running) {
          self.timer = setTimeout(self.refresh, 1000);
        }
      }, function(err) {
        self.failed(err);
      });
    };

    // Times come as ISO strings; show them as this browser's locale does.
    self.localizeTimes = function() {
      self.$el.find('time[datetime]').each(function() {
        var date = new Date($(this).attr('datetime'));
        if (!isNaN(date.getTime())) {
          $(this).text(date.toLocaleString());
        }
      });
    };

    self.failed = function(reply) {
      apos.utils.error(reply);
      var message = (reply && reply.message) ||
        ((reply && reply.status === 'forbidden') ? 'You may not do that. Log in as an administrator.' :
          'The jobs dashboard could not reach the site. Please try again.');
      apos.notify(message, { type: 'error', dismiss: true });
    };

    // Stop or Cancel: the progress modal's own route.
    self.halt = function(jobId) {
      return self.api('cancel', { _id: jobId }, function(data) {
        if (data.status !== 'ok') {
          return self.failed(data);
        }
        self.refresh();
      }, self.failed);
    };

    // Retry failed items or resume unfinished ones: ask the server which items and which
    // route, post that route again as this user (so every check of the route applies), then
    // follow the new job in the unchanged progress modal.
    self.rerun = function(jobId, items) {
      apos.ui.globalBusy(true);
      return self.api('rerun', { _id: jobId, items: items }, function(plan) {
        if (plan.status !== 'ok') {
          apos.ui.globalBusy(false);
          return self.failed(plan);
        }
        var headers = {};
        headers[plan.header] = plan.retryOf;
        $.ajax({
          url: plan.route,
          method: 'POST',
          contentType: 'application/json',
          dataType: 'json',
          headers: headers,
          data: JSON.stringify($.extend({}, plan.body, { ids: plan.ids, job: true }))
        }).then(function(data) {
          apos.ui.globalBusy(false);
          if (!data || data.status !== 'ok' || !data.jobId) {
            return self.failed({ message: 'The job\'s route refused to run it again' + ((data && data.status) ? ' (' + data.status + ')' : '') + '.' });
          }
          self.showJob(data.jobId);
          apos.modules['apostrophe-jobs'].progress(data.jobId, { change: options.change });
        }, function(err) {
          apos.ui.globalBusy(false);
          self.failed(err);
        });
      }, function(err) {
        apos.ui.globalBusy(false);
        self.failed(err);
      });
    };

    self.deleteJob = function(jobId) {
      if (!confirm('Delete this job? Its record, counts and failed items go for good.')) {
        return;
      }
      return self.api('delete', { _id: jobId }, function(data) {
        if (data.status !== 'ok') {
          return self.failed(data);
        }
        self.showList();
      }, self.failed);
    };

    self.purge = function(days) {
      var which = days === '0' ? 'every ended job' : ('every job that ended more than ' + days + ' day(s) ago');
      if (!confirm('Delete ' + which + '? This cannot be undone.')) {
        return;
      }
      return self.api('delete', { olderThanDays: days }, function(data) {
        if (data.status !== 'ok') {
          return self.failed(data);
        }
        apos.notify('Deleted ' + data.deleted + ' job(s).', { type: 'success', dismiss: true });
        self.showList();
      }, self.failed);
    };

    self.start();
  }
});

apos.define('apostrophe-jobs-dashboard-modal', {

  extend: 'apostrophe-modal',

  source: 'dashboard',

  construct: function(self, options) {
    self.beforeShow = function(callback) {
      self.dashboard = apos.create('apostrophe-jobs-dashboard', {
        action: options.action,
        $el: self.$el.find('[data-apos-jobs-dashboard]')
      });
      return callback(null);
    };

    self.afterHide = function() {
      self.dashboard.destroy();
    };
  }
});

// The jobs module opens the dashboard from the admin bar, and drives it on the dashboard's
// own page.
apos.define('apostrophe-jobs', {
  construct: function(self, options) {
    self.dashboard = function() {
      return apos.create('apostrophe-jobs-dashboard-modal', _.assign({}, self.options));
    };

    apos.adminBar.link('apostrophe-jobs', function() {
      self.dashboard();
    });

    $(function() {
      $('.apos-jobs-dashboard-page [data-apos-jobs-dashboard]').each(function() {
        apos.create('apostrophe-jobs-dashboard', { action: self.action, $el: $(this) });
      });
    });
  }
});
