#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The README's install command works offline: pip builds and installs the package from a copy
# of bindings/python (no PyPI, no build isolation) and the installed copy loads libsandbox.
#     install_check.sh PYTHON LIBSANDBOX_SO
set -euo pipefail
py=${1:?usage: install_check.sh PYTHON LIBSANDBOX_SO} lib=${2:?usage: install_check.sh PYTHON LIBSANDBOX_SO}
src=$(cd "$(dirname "$0")/.." && pwd)
"$py" -m pip --version >/dev/null 2>&1 || { echo "skip: no pip for $py (Debian: python3-pip)"; exit 77; }
T=$(mktemp -d /tmp/sbx-pyinstall-XXXXXX)
trap 'rm -rf "$T"' EXIT
cp -r "$src" "$T/pkg" # pip builds in the source tree: keep the checkout clean
rm -rf "$T/pkg/build" "$T/pkg"/*.egg-info
PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
  "$py" -m pip install -q --no-build-isolation --no-index --target "$T/site" "$T/pkg"
cd "$T"
out=$(PYTHONPATH="$T/site" SBX_LIBRARY="$lib" "$py" -c '
import libsandbox, os
assert os.path.dirname(libsandbox.__file__).startswith(os.environ["PYTHONPATH"]), libsandbox.__file__
print(libsandbox.library_path())
print(libsandbox.Sandbox.__name__, libsandbox.SandboxException.__name__)')
echo "$out"
[ "$(echo "$out" | head -n 1)" = "$(readlink -f "$lib")" ] || [ "$(echo "$out" | head -n 1)" = "$lib" ] ||
  { echo "FAIL: the installed package loaded $(echo "$out" | head -n 1), not $lib"; exit 1; }
echo "ok: installed offline and loaded $lib"
