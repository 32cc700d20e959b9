#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
// An agent loop: code an LLM wrote runs in one sandbox, and its output and errors go back to it.
//
// No model and no network are needed: the "model" is a fixed list of answers as an LLM would
// produce them (Python for the guest's python3, and shell): one raises, one prints a lot, a
// later one relies on state an earlier one left behind, one fixes the error, one never ends.
// Each answer runs in the same sandbox; the observation fed back is the exit status, stdout and
// stderr, shortened the way agent frameworks shorten tool output for the context window.
//
//   node examples/node/agent_loop.mjs   (from the repository, after `npm install ./bindings/node`;
//   an application of its own imports { Sandbox } from 'libsandbox' instead)
import { Sandbox, CommandExitError, TimeoutError } from '../../bindings/node/index.mjs';

// What the "LLM" answers, turn by turn.
const ANSWERS = [
  {
    language: 'python',
    code: `
import platform
primes = [n for n in range(2, 60) if all(n % d for d in range(2, n))]
print("python", platform.python_version(), "primes:", primes)
`,
  },
  {
    // leaves state behind for a later turn: files persist in the sandbox
    language: 'python',
    code: `
import json
data = {"name": "report", "values": [3, 1, 4, 1, 5, 9, 2, 6]}
with open("/home/user/data.json", "w") as f:
    json.dump(data, f)
print("saved", len(data["values"]), "values")
`,
  },
  {
    // raises: the traceback goes back to the model
    language: 'python',
    code: `
import json
values = json.load(open("/home/user/data.json"))["values"]
print("mean is", sum(values) / len([v for v in values if v > 100]))
`,
  },
  {
    // the model fixes its mistake
    language: 'python',
    code: `
import json, statistics
values = json.load(open("/home/user/data.json"))["values"]
print("mean is", statistics.mean(values), "median is", statistics.median(values))
`,
  },
  {
    // prints a lot: the observation is shortened
    language: 'python',
    code: `
for i in range(50000):
    print(f"row {i}: {i * i}")
`,
  },
  {
    // a shell answer: stderr and a non-zero exit without a traceback
    language: 'bash',
    code: `
echo "files in home: $(ls ~ | wc -l)"
echo "warning: nothing to clean" >&2
exit 2
`,
  },
  {
    // never ends: the turn's time limit stops it
    language: 'python',
    code: `
import time
print("waiting for a signal that never comes", flush=True)
while True:
    time.sleep(1)
`,
  },
];

const MAX_OBSERVATION = 2000; // characters of each stream the "model" gets back
const TURN_TIMEOUT_MS = 5000;

/** Keeps the head and the tail of long output, as agent frameworks do. */
function shorten(text, limit = MAX_OBSERVATION) {
  if (text.length <= limit) return text;
  return `${text.slice(0, limit / 2)}\n... [${text.length - limit} characters omitted] ...\n${text.slice(-limit / 2)}`;
}

/** Runs one answer and returns the observation for the model. */
async function runAnswer(sandbox, step, { language, code }) {
  const file = `/home/user/agent/step_${step}.${language === 'python' ? 'py' : 'sh'}`;
  await sandbox.files.write(file, code.trimStart());
  const interpreter = language === 'python' ? 'python3' : 'bash';
  let r;
  let note = '';
  try {
    r = await sandbox.commands.run(`${interpreter} ${file}`, { timeoutMs: TURN_TIMEOUT_MS });
  } catch (e) {
    // A failed command is an observation for the model, not a crash of the loop.
    if (e instanceof CommandExitError) r = e;
    else if (e instanceof TimeoutError && e.result) {
      r = e.result;
      note = `(stopped: no result after ${TURN_TIMEOUT_MS} ms)\n`;
    } else throw e;
  }
  return {
    exitCode: r.exitCode,
    note,
    stdout: shorten(r.stdout),
    stderr: shorten(r.stderr),
    stdoutChars: r.stdout.length,
  };
}

async function main() {
  const history = [{ role: 'system', content: 'You write Python or shell; I run it and show you the result.' }];
  let failed = 0;
  const sandbox = await Sandbox.create({ timeoutMs: 600_000, memoryMB: 256, bootTimeoutMs: 120_000 });
  try {
    const info = await sandbox.getInfo();
    console.log(`sandbox ${sandbox.sandboxId} (${info.osName})`);
    for (const [i, answer] of ANSWERS.entries()) {
      const step = i + 1;
      history.push({ role: 'assistant', content: answer.code });
      const obs = await runAnswer(sandbox, step, answer);
      if (obs.exitCode !== 0) failed++;
      const feedback =
        `${obs.note}exit code ${obs.exitCode}\n` +
        `stdout (${obs.stdoutChars} characters):\n${obs.stdout}` +
        (obs.stderr ? `\nstderr:\n${obs.stderr}` : '');
      history.push({ role: 'tool', content: feedback });
      console.log(`=== step ${step}: model wrote (${answer.language}) ===`);
      console.log(answer.code.trim());
      console.log(`--- step ${step}: fed back ---`);
      console.log(feedback.trimEnd());
    }
  } finally {
    await sandbox.kill();
  }
  console.log(`agent_loop: ${ANSWERS.length} steps, ${failed} failed, ${history.length} messages`);
}

main().catch((e) => {
  console.error(`agent_loop: ${e.name}${e.codeName ? ` (${e.codeName})` : ''}: ${e.message}`);
  process.exit(1);
});
