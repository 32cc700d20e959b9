#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
// ctest check of agent_loop.mjs: runs it and checks the transcript (exit 77 where no guest boots).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const addon = process.env.SBX_NODE_ADDON;
if (addon && !existsSync(addon)) {
  console.log(`test_agent_loop: skipped: the Node addon ${addon} was not built`);
  process.exit(77);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const r = spawnSync(process.execPath, [path.join(here, 'agent_loop.mjs')], { encoding: 'utf8', timeout: 540_000 });
process.stdout.write(r.stdout || '');
process.stderr.write(r.stderr || '');
if (r.status !== 0 && /SBX_ENOKVM/.test(r.stderr || '')) {
  console.log('test_agent_loop: skipped: this machine cannot boot guests');
  process.exit(77);
}
const out = r.stdout || '';
const checks = [
  [r.status === 0, `exit status 0 (got ${r.status})`],
  [/^sandbox [a-z0-9]+ \(Debian/m.test(out), 'the sandbox line'],
  [/--- step 1: fed back ---\nexit code 0\nstdout \(\d+ characters\):\npython 3\.\d+\.\d+ primes: \[2, 3, 5, 7/.test(out), 'step 1 ran python'],
  [/saved 8 values/.test(out), 'step 2 saved its state'],
  [/--- step 3: fed back ---\nexit code 1\n[\s\S]*ZeroDivisionError/.test(out), 'step 3 traceback fed back'],
  [/mean is 3\.875 median is 3\.5/.test(out), 'step 4 used the state of step 2'],
  [/stdout \(\d{6,} characters\):\nrow 0: 0\n[\s\S]*characters omitted[\s\S]*row 49999: 2499900001/.test(out), 'step 5 shortened'],
  [/--- step 6: fed back ---\nexit code 2\nstdout \(\d+ characters\):\nfiles in home: \d+\n\nstderr:\nwarning: nothing to clean/.test(out), 'step 6 stderr and exit code'],
  [/--- step 7: fed back ---\n\(stopped: no result after 5000 ms\)\nexit code -1\n[\s\S]*waiting for a signal/.test(out), 'step 7 stopped by the time limit'],
  [/^agent_loop: 7 steps, 3 failed, 15 messages$/m.test(out), 'the summary'],
];
let bad = 0;
for (const [ok, what] of checks) {
  if (!ok) {
    console.log(`test_agent_loop: FAILED: ${what}`);
    bad++;
  }
}
if (bad) process.exit(1);
console.log(`test_agent_loop: ${checks.length} checks passed`);
