// The home page's buttons: start the job on the server, then open the progress modal of
// apostrophe-jobs for it, as any module's browser code does.

$(function() {
  $('body').on('click', '[data-demo-set-all-published]', function() {
    var published = $(this).attr('data-demo-set-all-published') === 'true';
    apos.ui.globalBusy(true);
    $.jsonCall('/modules/articles/set-all-published', { published: published }, function(result) {
      apos.ui.globalBusy(false);
      if (result.status !== 'ok') {
        return apos.notify('The job could not be started.', { type: 'error' });
      }
      apos.modules['apostrophe-jobs'].progress(result.jobId, {
        // Called after "Done", only if the job completed (not if it was canceled).
        success: function(results) {
          apos.notify((results.published ? 'Published ' : 'Unpublished ') + results.changed + ' articles.', { type: 'success', dismiss: true });
        },
        // After "Done" in any case: refreshes the page's content, so the counts update.
        change: 'article'
      });
    }, function() {
      apos.ui.globalBusy(false);
      apos.notify('The job could not be started.', { type: 'error' });
    });
    return false;
  });
});
