#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
// Runs one test of a `node --test` file for ctest: exit 0 passed, 77 skipped (reason printed),
// 1 failed or not found. Usage: node ctest-run.mjs FILE TEST_NAME
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const [file, name] = process.argv.slice(2);
if (!file || !name) {
  console.error('usage: ctest-run.mjs FILE TEST_NAME');
  process.exit(2);
}
const addon = process.env.SBX_NODE_ADDON;
if (addon && !existsSync(addon)) {
  console.log(`ctest-run: ${name} skipped: the Node addon ${addon} was not built (no Node-API headers? ` +
    'run `npm install` in bindings/node, then rebuild)');
  process.exit(77);
}
const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const r = spawnSync(
  process.execPath,
  ['--test', '--test-reporter=tap', `--test-name-pattern=^${escaped}$`, file],
  { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 256 << 20 },
);
process.stdout.write(r.stdout || '');
if (r.error) {
  console.error(`ctest-run: cannot run node: ${r.error.message}`);
  process.exit(1);
}
// The top-level TAP line of this test (other tests show up as skipped by the pattern).
const line = (r.stdout || '')
  .split('\n')
  .find((l) => new RegExp(`^(not )?ok \\d+ - ${escaped}( # .*)?$`).test(l));
if (!line) {
  console.error(`ctest-run: test ${name} not found in ${file} (exit status ${r.status})`);
  process.exit(1);
}
if (line.startsWith('not ok') || r.status !== 0) {
  console.error(`ctest-run: ${name} FAILED`);
  process.exit(1);
}
const skip = line.match(/ # SKIP ?(.*)$/);
if (skip) {
  console.log(`ctest-run: ${name} skipped: ${skip[1] || 'no reason given'}`);
  process.exit(77);
}
console.log(`ctest-run: ${name} passed`);
