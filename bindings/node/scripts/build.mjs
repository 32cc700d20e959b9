#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
// Builds the native addon (src/addon.c) with the system C compiler: no node-gyp, no downloads.
//
// Usage: node scripts/build.mjs [--out FILE] [--optional] [--quiet]
//
// Node-API headers, first found of: $SBX_NODE_HEADERS (a directory; "npm": only the npm
// package), the npm package node-api-headers (an
// optional dependency), the include/node directory of the running node (Debian's nodejs or
// libnode-dev, official tarballs), /usr/include/node, /usr/local/include/node; when none is
// there, node-api-headers is installed from the npm registry.
// libsandbox (sandbox.h + libsandbox.so), first found of: $SBX_LIBRARY_DIR (with
// $SBX_INCLUDE_DIR, else the repository's include/ or pkg-config's), pkg-config libsandbox
// (installed library), the repository's build tree (../../build).
// The addon links against libsandbox.so with an RPATH to the directory it was found in, so it
// loads without LD_LIBRARY_PATH; rebuild (npm rebuild) after moving the library.
// --optional: a missing compiler, header or library is reported and the script exits 0 (used
// by the CMake build, where the tests then skip).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkgDir = path.resolve(here, '..');
const repoDir = path.resolve(pkgDir, '../..');
const args = process.argv.slice(2);
const optional = args.includes('--optional');
const quiet = args.includes('--quiet');
const outIdx = args.indexOf('--out');
const out = outIdx >= 0 ? path.resolve(args[outIdx + 1]) : path.join(pkgDir, 'build', 'Release', 'sandbox.node');

function log(msg) {
  if (!quiet) console.error(`libsandbox-node: ${msg}`);
}

function giveUp(msg) {
  console.error(`libsandbox-node: ${msg}`);
  process.exit(optional ? 0 : 1);
}

function hasHeader(dir, name) {
  return !!dir && existsSync(path.join(dir, name));
}

function pkgConfig(...a) {
  try {
    return execFileSync('pkg-config', a, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

function findNodeHeaders() {
  const candidates = [];
  const only = process.env.SBX_NODE_HEADERS;
  if (only && only !== 'npm') candidates.push(only);
  try {
    const require = createRequire(path.join(pkgDir, 'package.json'));
    candidates.push(path.join(path.dirname(require.resolve('node-api-headers/package.json')), 'include'));
  } catch {
    // not installed: fall back to the headers of the node installation
  }
  if (only !== 'npm') {
    candidates.push(path.resolve(path.dirname(process.execPath), '..', 'include', 'node'));
    candidates.push('/usr/include/node', '/usr/local/include/node');
  }
  return candidates.find((d) => hasHeader(d, 'node_api.h') && hasHeader(d, 'js_native_api.h'));
}

function findLibsandbox() {
  const env = process.env.SBX_LIBRARY_DIR;
  const repoInclude = path.join(repoDir, 'include');
  if (env) {
    if (!existsSync(path.join(env, 'libsandbox.so')))
      giveUp(`SBX_LIBRARY_DIR=${env} has no libsandbox.so`);
    const inc = [process.env.SBX_INCLUDE_DIR, repoInclude, pkgConfig('--variable=includedir', 'libsandbox')]
      .find((d) => hasHeader(d, 'sandbox.h'));
    if (!inc) giveUp('sandbox.h not found: set SBX_INCLUDE_DIR');
    return { libDir: env, incDir: inc, how: '$SBX_LIBRARY_DIR' };
  }
  const libDir = pkgConfig('--variable=libdir', 'libsandbox');
  const incDir = pkgConfig('--variable=includedir', 'libsandbox');
  if (libDir && existsSync(path.join(libDir, 'libsandbox.so')) && hasHeader(incDir, 'sandbox.h'))
    return { libDir, incDir, how: 'pkg-config' };
  const build = path.join(repoDir, 'build');
  if (existsSync(path.join(build, 'libsandbox.so')) && hasHeader(repoInclude, 'sandbox.h'))
    return { libDir: build, incDir: repoInclude, how: 'the build tree' };
  return null;
}

// No headers anywhere (e.g. Debian's nodejs without libnode-dev, and npm did not install the
// optional dependency because the package is linked from a folder): fetch node-api-headers
// from the npm registry into this package.
function fetchHeaders() {
  const npmCli = process.env.npm_execpath;
  const cmd = npmCli && npmCli.endsWith('.js') ? process.execPath : 'npm';
  const a = [...(cmd === process.execPath ? [npmCli] : []),
    'install', '--no-save', '--no-package-lock', '--ignore-scripts', '--no-audit', '--no-fund', 'node-api-headers@^1.1.0'];
  log('Node-API headers not found: installing node-api-headers from the npm registry');
  spawnSync(cmd, a, { cwd: pkgDir, stdio: quiet ? 'ignore' : 'inherit' });
  return findNodeHeaders();
}

const napiDir = findNodeHeaders() || (optional ? null : fetchHeaders());
if (!napiDir)
  giveUp('Node-API headers not found: run `npm install` in bindings/node (fetches node-api-headers), or set SBX_NODE_HEADERS');
const sbx = findLibsandbox();
if (!sbx)
  giveUp('libsandbox not found: build it (cmake --build build), install it (pkg-config libsandbox), or set SBX_LIBRARY_DIR');

const src = path.join(pkgDir, 'src', 'addon.c');
const cc = process.env.CC || 'cc';
const flags = [
  '-std=gnu11', '-O2', '-g', '-fPIC', '-shared', '-fvisibility=hidden',
  '-Wall', '-Wextra', '-Wno-unused-parameter', '-Wno-missing-field-initializers',
  `-I${napiDir}`, `-I${sbx.incDir}`,
  src, '-o', out,
  `-L${sbx.libDir}`, '-lsandbox', `-Wl,-rpath,${sbx.libDir}`, '-pthread',
];

// Up to date? (the CMake build calls this on every build)
const lib = path.join(sbx.libDir, 'libsandbox.so');
const hdr = path.join(sbx.incDir, 'sandbox.h');
if (existsSync(out)) {
  const t = statSync(out).mtimeMs;
  if ([src, lib, hdr, fileURLToPath(import.meta.url)].every((f) => statSync(f).mtimeMs <= t)) {
    log(`${path.relative(process.cwd(), out) || out} is up to date`);
    process.exit(0);
  }
}

mkdirSync(path.dirname(out), { recursive: true });
log(`building with Node-API headers from ${napiDir}, libsandbox from ${sbx.how} (${sbx.libDir})`);
const r = spawnSync(cc, flags, { stdio: 'inherit' });
if (r.error) giveUp(`cannot run the C compiler ${cc}: ${r.error.message}`);
if (r.status !== 0) {
  console.error('libsandbox-node: compiling the addon failed');
  process.exit(1);
}
writeFileSync(path.join(path.dirname(out), 'libsandbox-location.json'),
  JSON.stringify({ libDir: sbx.libDir, includeDir: sbx.incDir, found: sbx.how, nodeApiHeaders: napiDir }, null, 2) + '\n');
log(`built ${out}`);
