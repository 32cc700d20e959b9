// SPDX-License-Identifier: Apache-2.0
// Templates: build one from a Dockerfile subset, list and remove them (docs/templates.md).
'use strict';
const native = require('./native');
const { InvalidArgumentError } = require('./errors');
const { envList } = require('./util');

function count(v, what) {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new InvalidArgumentError(`${what} must be a non-negative integer`);
  return v;
}

function info(i) {
  return {
    name: i.name,
    isSnapshot: i.isSnapshot,
    parent: i.parent,
    cpuCount: i.vcpus,
    memoryMB: i.memoryMib,
    diskMB: i.diskMib,
    steps: i.nsteps,
    cachedSteps: i.ncached,
    createdAt: i.createdMs ? new Date(i.createdMs) : undefined,
    memoryBytes: i.memoryBytes,
    diskBytes: i.diskBytes,
    buildMs: i.buildMs,
    tags: i.tags ? i.tags.split(',').filter(Boolean) : [],
    error: i.error,
  };
}

/**
 * Templates of a local store: a template is a snapshot of a booted, ready guest that
 * Sandbox.create({ template: name }) maps in milliseconds instead of booting. The store is
 * templateDir, else $SBX_TEMPLATE_DIR, else ~/.local/share/libsandbox/templates.
 */
class Template {
  /**
   * Builds a template and resolves to its description. opts: name; dockerfile (a path) or
   * dockerfileText (exactly one: a Dockerfile subset, FROM base / a template / an ext4
   * image, RUN, COPY, ADD, ENV, WORKDIR, USER, ARG, LABEL, CMD); context (COPY/ADD source
   * directory); buildArgs ({NAME: value}); tags (string[]); cpuCount, memoryMB, diskMB (the
   * template's size); startCmd (left running in the snapshot); ready ('cmd:COMMAND',
   * 'port:N', 'file:PATH', 'delay:MS'); readyTimeoutMs; stepTimeoutMs; noCache; templateDir;
   * kernel; imageDir; hostLoopback (RUN steps reach this machine's 127.0.0.1 at 10.0.2.2);
   * onOutput(stream: 'stdout' | 'stderr', text) with the live output of RUN steps and the
   * start command; onProgress({step, steps, text, cached, done, elapsedMs}). If a callback
   * throws, the build stops at its next output and the promise rejects with that error.
   */
  static async build(opts) {
    if (!opts || typeof opts !== 'object') throw new InvalidArgumentError('Template.build takes an options object');
    const nullish = (v) => v === undefined || v === null;
    if (nullish(opts.dockerfile) === nullish(opts.dockerfileText)) {
      throw new InvalidArgumentError('give exactly one of dockerfile (a path) or dockerfileText');
    }
    if (!nullish(opts.tags) && !Array.isArray(opts.tags)) throw new InvalidArgumentError('tags must be an array of strings');
    for (const k of ['onOutput', 'onProgress']) {
      if (!nullish(opts[k]) && typeof opts[k] !== 'function') throw new InvalidArgumentError(`${k} must be a function`);
    }
    let onOutput;
    if (opts.onOutput) {
      const decoders = { 1: new TextDecoder(), 2: new TextDecoder() };
      onOutput = (stream, buf) => {
        const d = decoders[stream];
        const text = d ? d.decode(buf, { stream: true }) : '';
        if (text) opts.onOutput(stream === 1 ? 'stdout' : 'stderr', text);
      };
    }
    const onProgress = opts.onProgress ? (p) => opts.onProgress(p) : undefined;
    const i = await native.templateBuild(
      {
        name: opts.name,
        dockerfile: opts.dockerfile,
        dockerfileText: opts.dockerfileText,
        context: opts.context,
        buildArgs: envList(opts.buildArgs, 'buildArgs'),
        tags: opts.tags,
        vcpus: count(opts.cpuCount, 'cpuCount'),
        memoryMib: count(opts.memoryMB, 'memoryMB'),
        diskMib: count(opts.diskMB, 'diskMB'),
        startCmd: opts.startCmd,
        ready: opts.ready,
        readyTimeoutMs: count(opts.readyTimeoutMs, 'readyTimeoutMs'),
        stepTimeoutMs: count(opts.stepTimeoutMs, 'stepTimeoutMs'),
        noCache: !!opts.noCache,
        templateDir: opts.templateDir,
        kernel: opts.kernel,
        imageDir: opts.imageDir,
        hostLoopback: !!opts.hostLoopback,
      },
      onOutput,
      onProgress,
    );
    return info(i);
  }

  /** The templates of the store, sorted by name (a missing store lists as empty); entries that cannot be used say why in `error`. */
  static async list({ templateDir } = {}) {
    return (await native.templateList(templateDir)).map(info);
  }

  /** Removes a template and the cached layers nothing else uses (rejects with NotFoundError if there is none). */
  static async remove(name, { templateDir } = {}) {
    await native.templateRemove(name, templateDir);
  }
}

module.exports = { Template };
