// SPDX-License-Identifier: Apache-2.0
// sandbox.files: whole and streamed file transfer, directory operations, watches, tree copies.
'use strict';
const native = require('./native');
const { InvalidArgumentError } = require('./errors');

const TYPES = { 1: 'file', 2: 'dir', 3: 'symlink', 4: 'other' };
const WATCH_OPS = { 1: 'create', 2: 'write', 3: 'remove', 4: 'rename', 5: 'chmod', 6: 'overflow' };
const STREAM_CHUNK = 1 << 20;

function permissions(mode) {
  const r = (bit, ch) => (mode & bit ? ch : '-');
  let s = '';
  for (const shift of [6, 3, 0]) s += r(4 << shift, 'r') + r(2 << shift, 'w') + r(1 << shift, 'x');
  return s;
}

/** Native entry -> EntryInfo (E2B's shape plus ids). */
function entryInfo(e) {
  return {
    name: e.name,
    type: TYPES[e.type] || 'other',
    path: e.path,
    size: e.size,
    mode: e.mode,
    permissions: permissions(e.mode),
    owner: e.owner,
    group: e.group,
    uid: e.uid,
    gid: e.gid,
    modifiedTime: new Date(e.mtimeMs),
    symlinkTarget: e.symlinkTarget === null ? undefined : e.symlinkTarget,
  };
}

function baseName(p) {
  const parts = String(p).split('/').filter(Boolean);
  return parts.length ? parts[parts.length - 1] : '/';
}

function isStreamLike(d) {
  return (
    d &&
    typeof d === 'object' &&
    (typeof d.getReader === 'function' || typeof d[Symbol.asyncIterator] === 'function') &&
    !ArrayBuffer.isView(d)
  );
}

/** A running directory watch. */
class WatchHandle {
  /** @internal */
  constructor() {
    this._handle = undefined;
    this._stopped = false;
  }
  /** Stops watching (resolves once the watch is closed in the guest connection). */
  async stop() {
    this._stopped = true;
    if (this._handle) await native.pumpClose(this._handle);
  }
}

class Filesystem {
  /** @internal */
  constructor(sandbox) {
    this._sandbox = sandbox;
  }

  get _box() {
    return this._sandbox._box;
  }

  /**
   * Reads a file. format 'text' (default, UTF-8 string), 'bytes' (Uint8Array), 'blob' (Blob)
   * or 'stream' (a web ReadableStream<Uint8Array> reading in bounded memory; with offset /
   * length for a part).
   */
  async read(path, opts = {}) {
    const format = opts.format || 'text';
    if (format === 'stream') return this._readStream(path, opts);
    let buf;
    if (opts.offset || opts.length) {
      const chunks = [];
      for await (const c of await this._readStream(path, opts)) chunks.push(c);
      buf = Buffer.concat(chunks);
    } else {
      buf = await native.readFile(this._box, path, opts.maxBytes);
    }
    switch (format) {
      case 'text':
        return buf.toString('utf8');
      case 'bytes':
        return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
      case 'blob':
        return new Blob([buf]);
      default:
        throw new InvalidArgumentError(`format must be 'text', 'bytes', 'blob' or 'stream', not ${format}`);
    }
  }

  async _readStream(path, opts) {
    const { handle } = await native.fileOpen(this._box, path, opts.offset, opts.length);
    let done = false;
    const finish = () => {
      if (!done) {
        done = true;
        try {
          native.fileClose(handle);
        } catch {
          // busy only if a read is in flight, which pull() awaits first
        }
      }
    };
    return new ReadableStream({
      async pull(controller) {
        let chunk;
        try {
          chunk = await native.fileRead(handle, STREAM_CHUNK);
        } catch (e) {
          finish();
          controller.error(e);
          return;
        }
        if (chunk.length === 0) {
          finish();
          controller.close();
          return;
        }
        controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
      },
      cancel() {
        finish();
      },
    });
  }

  /**
   * Writes a file (creating parent directories, replacing it atomically). data: string,
   * Uint8Array/Buffer, ArrayBuffer, Blob, a web ReadableStream or any async iterable of
   * chunks (streamed in bounded memory). Or an array of {path, data} for several files.
   * opts: mode (default 0o644), user (owner), append. Resolves with {name, path, type}
   * (an array of them for an array).
   */
  async write(pathOrFiles, data, opts = {}) {
    if (Array.isArray(pathOrFiles)) {
      const res = [];
      const o = data && !Array.isArray(data) && typeof data === 'object' ? data : {};
      for (const f of pathOrFiles) res.push(await this.write(f.path, f.data, { ...o, ...(f.mode ? { mode: f.mode } : {}) }));
      return res;
    }
    const path = pathOrFiles;
    if (typeof Blob !== 'undefined' && data instanceof Blob) data = data.stream();
    if (isStreamLike(data) || opts.user !== undefined || opts.append) {
      await this._writeStream(path, data, opts);
    } else {
      if (data === undefined || data === null) throw new InvalidArgumentError('data is required');
      await native.writeFile(this._box, path, data, opts.mode);
    }
    return { name: baseName(path), path, type: 'file' };
  }

  async _writeStream(path, data, opts) {
    const { handle } = await native.fileCreate(this._box, path, { mode: opts.mode, user: opts.user, append: !!opts.append });
    try {
      if (isStreamLike(data)) {
        const iter = typeof data.getReader === 'function' && !data[Symbol.asyncIterator] ? readerIterator(data) : data;
        for await (const chunk of iter) {
          if (chunk === undefined || chunk === null) continue;
          await native.fileWrite(handle, typeof chunk === 'string' ? chunk : chunk instanceof ArrayBuffer ? chunk : toBytes(chunk));
        }
      } else if (data !== undefined && data !== null) {
        await native.fileWrite(handle, data);
      }
      await native.fileCommit(handle);
    } catch (e) {
      try {
        native.fileClose(handle);
      } catch {
        // already released by a failed commit
      }
      throw e;
    }
  }

  /** Lists a directory, depth levels deep (default 1: its entries). */
  async list(path, { depth = 1 } = {}) {
    return (await native.list(this._box, path, depth)).map(entryInfo);
  }

  /** Whether the path exists. */
  async exists(path) {
    return native.exists(this._box, path);
  }

  /** Describes a path (without following a final symlink). NotFoundError if absent. */
  async getInfo(path) {
    return entryInfo(await native.stat(this._box, path));
  }

  /** Removes a file, symlink or directory (recursively by default). */
  async remove(path, { recursive = true } = {}) {
    await native.remove(this._box, path, recursive);
  }

  /** Renames (moves) within the guest; resolves with the EntryInfo of the new path. */
  async rename(oldPath, newPath) {
    await native.rename(this._box, oldPath, newPath);
    return this.getInfo(newPath);
  }

  /** mkdir -p. Resolves true when created, false when the directory already existed. */
  async makeDir(path, { mode } = {}) {
    return native.mkdir(this._box, path, mode);
  }

  /**
   * Watches a directory (and its subdirectories with recursive). onEvent({name, type}) gets
   * 'create' | 'write' | 'remove' | 'rename' | 'chmod' | 'overflow' events; onExit(err?) when
   * the watch ends. Resolves once the watch is active, with a handle whose stop() ends it.
   */
  async watchDir(path, onEvent, { recursive = false, onExit } = {}) {
    if (typeof onEvent !== 'function') throw new InvalidArgumentError('onEvent must be a function');
    const w = new WatchHandle();
    let error;
    const cb = (kind, a, b) => {
      if (kind === 5) onEvent({ name: b, type: WATCH_OPS[a] || String(a) });
      else if (kind === 4) error = a;
      else if (kind === 6 && onExit) onExit(w._stopped ? undefined : error);
    };
    const res = await native.watchOpen(this._box, path, recursive, cb);
    w._handle = res.handle;
    return w;
  }

  /**
   * Copies a host file or directory tree into the guest (dst: the new guest path). Modes and
   * symlinks are kept; an existing directory is merged into. onProgress(bytes, files) is
   * called as it goes; returning false cancels (InterruptedError).
   */
  async copyIn(hostPath, guestPath, { onProgress } = {}) {
    await native.copyIn(this._box, hostPath, guestPath, onProgress);
  }

  /** Copies a guest file or tree out to the host (dst: the new host path). */
  async copyOut(guestPath, hostPath, { onProgress } = {}) {
    await native.copyOut(this._box, guestPath, hostPath, onProgress);
  }
}

function toBytes(chunk) {
  if (ArrayBuffer.isView(chunk)) return chunk;
  if (chunk instanceof ArrayBuffer) return chunk;
  return Buffer.from(String(chunk));
}

async function* readerIterator(stream) {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

module.exports = { Filesystem, WatchHandle, entryInfo };
