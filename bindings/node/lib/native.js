// SPDX-License-Identifier: Apache-2.0
// Loads the compiled addon: $SBX_NODE_ADDON (used by the CMake tests), else build/Release.
'use strict';
const path = require('node:path');

const file = process.env.SBX_NODE_ADDON || path.join(__dirname, '..', 'build', 'Release', 'sandbox.node');
let native;
try {
  native = require(file);
} catch (e) {
  const err = new Error(
    `libsandbox: cannot load the native addon ${file}: ${e.message}\n` +
      'Build it with `npm install` (or `npm rebuild`) in bindings/node once libsandbox is built or installed ' +
      '(see bindings/node/README.md).',
  );
  err.cause = e;
  throw err;
}
module.exports = native;
