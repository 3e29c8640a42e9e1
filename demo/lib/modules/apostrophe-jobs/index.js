// This one file is all it takes to use apostrophe-jobs-native in an Apostrophe 2 project.
// In your own project it reads:
//
//     module.exports = require('apostrophe-jobs-native');
//
// The demo lives inside the package's own repository, so it requires the package by path.
module.exports = require('../../../..');
