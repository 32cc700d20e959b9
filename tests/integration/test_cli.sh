#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The sbx CLI end to end in real guests: tests/integration/test_cli.sh SCENARIO PATH-TO-SBX
#
# Scenarios (one ctest case each; every sbx command boots its own guest, so each scenario
# keeps its boots few): run, stdin, copy, shell, ls, net, snapshot, pause, template_ls,
# template_build, code. Exit 0: passed, 1: failed, 77: skipped.
set -uo pipefail

scenario=${1:?usage: test_cli.sh SCENARIO SBX}
SBX=${2:?usage: test_cli.sh SCENARIO SBX}
# Small guests, and patience: inside the emulated KVM host everything is slow.
BOOT=(--memory 256 --boot-timeout 120)
PY=/usr/bin/python3

T=$(mktemp -d /tmp/sbx-cli-XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT

fail() {
    echo "FAIL [$scenario]: $*" >&2
    exit 1
}
say() { echo "--- $*" >&2; }

# Runs sbx (with the caller's stdin), capturing stdout, stderr and status into $T/out, $T/err
# and $rc.
rc=0
sbx() {
    "$SBX" "$@" >"$T/out" 2>"$T/err"
    rc=$?
}
expect_rc() { # want description
    [ "$rc" -eq "$1" ] || fail "$2: exit status $rc, expected $1; stdout: $(head -c 2000 "$T/out"); stderr: $(head -c 2000 "$T/err")"
}
expect_out() { # exact-stdout description
    [ "$(cat "$T/out")" = "$1" ] || fail "$2: stdout '$(head -c 2000 "$T/out")', expected '$1' (stderr: $(head -c 2000 "$T/err"))"
}
expect_err_has() { # substring description
    grep -qF -- "$1" "$T/err" || fail "$2: stderr lacks '$1': $(head -c 2000 "$T/err")"
}

need_python() {
    [ -x "$PY" ] || { echo "skip: $PY is needed to drive a terminal" >&2; exit 77; }
}

case "$scenario" in
run)
    say "usage errors: exit 125 with a message, before any boot"
    sbx run
    expect_rc 125 "sbx run without a command"
    expect_err_has "sbx run: no command given" "sbx run without a command"
    sbx run --no-such-option -- true
    expect_rc 125 "an unknown option"
    expect_err_has "unknown option '--no-such-option'" "an unknown option"
    sbx run --cpus 0 -- true
    expect_rc 125 "--cpus 0"
    sbx --version
    expect_rc 0 "--version"
    grep -qE '^sbx [0-9]+\.[0-9]+\.[0-9]+$' "$T/out" || fail "--version printed '$(cat "$T/out")'"

    say "sbx run -- echo hi"
    sbx run "${BOOT[@]}" -- echo hi
    expect_rc 0 "echo hi"
    expect_out "hi" "echo hi"
    [ ! -s "$T/err" ] || fail "echo hi wrote to stderr: $(cat "$T/err")"

    say "env, cwd, user, stderr, exit status"
    sbx run "${BOOT[@]}" --env A=1 -e B='two words' --cwd /tmp --user root -- \
        sh -c 'echo "$A|$B|$(pwd)|$(id -u)"; echo to-stderr >&2; exit 3'
    expect_rc 3 "sh -c 'exit 3'"
    expect_out "1|two words|/tmp|0" "env/cwd/user"
    [ "$(cat "$T/err")" = "to-stderr" ] || fail "stderr was '$(cat "$T/err")'"

    say "a single word with shell syntax runs in the shell; the default user is user"
    sbx run "${BOOT[@]}" 'echo a | tr a b; echo "$HOME $(id -un)"; exit 4'
    expect_rc 4 "shell line"
    expect_out "$(printf 'b\n/home/user user')" "shell line"

    say "a missing program: 127"
    sbx run "${BOOT[@]}" -- no-such-program-here
    expect_rc 127 "missing program"
    ;;

stdin)
    say "binary stdin (with NULs) reaches the command intact"
    head -c 1000000 /dev/urandom >"$T/in"
    printf '\0\0\377end' >>"$T/in"
    want=$(sha256sum <"$T/in" | cut -d' ' -f1)
    sbx run "${BOOT[@]}" -- sha256sum <"$T/in"
    expect_rc 0 "sha256sum of stdin"
    [ "$(cut -d' ' -f1 "$T/out")" = "$want" ] || fail "checksum '$(cat "$T/out")', expected $want"

    say "--timeout kills the command: 124"
    sbx run "${BOOT[@]}" --timeout 2 -- sh -c 'echo started; sleep 60; echo not-reached' </dev/null
    expect_rc 124 "--timeout 2"
    expect_out "started" "--timeout 2"
    expect_err_has "did not finish within 2 s" "--timeout 2"

    say "output is streamed: a closed stdout stops the command (141), long before it ends"
    start=$(date +%s)
    "$SBX" run "${BOOT[@]}" -- sh -c 'while :; do echo y; done' </dev/null 2>"$T/err" | head -n 1 >"$T/out"
    rcs=("${PIPESTATUS[@]}")
    rc=${rcs[0]}
    expect_rc 141 "a writer into head -1"
    expect_out "y" "a writer into head -1"
    [ $(($(date +%s) - start)) -lt 100 ] || fail "the endless writer was not stopped promptly"

    say "stdin larger than the limit: 125 with a hint, no boot"
    head -c $((64 * 1024 * 1024 + 1)) /dev/zero >"$T/big"
    sbx run "${BOOT[@]}" -- true <"$T/big"
    expect_rc 125 "64 MiB + 1 of stdin"
    expect_err_has "--copy-in" "64 MiB + 1 of stdin"
    ;;

copy)
    say "--copy-in a tree, change it, --copy-out it and one file into a directory"
    mkdir -p "$T/src/sub" "$T/src/empty" "$T/dir"
    echo "alpha" >"$T/src/a.txt"
    head -c 300000 /dev/urandom >"$T/src/sub/b.bin"
    printf '#!/bin/sh\necho script-ran\n' >"$T/src/run.sh"
    chmod 755 "$T/src/run.sh"
    chmod 640 "$T/src/a.txt"
    ln -s a.txt "$T/src/link"
    sbx run "${BOOT[@]}" --copy-in "$T/src:src" --copy-out "src:$T/out-tree" \
        --copy-out "src/sub/new.txt:$T/dir/" -- \
        sh -c 'cd src && cat link && ./run.sh && test -d empty && echo new >sub/new.txt &&
               stat -c %a a.txt && sha256sum <sub/b.bin | cut -d" " -f1'
    expect_rc 0 "copy round trip"
    expect_out "$(printf 'alpha\nscript-ran\n640\n%s' "$(sha256sum <"$T/src/sub/b.bin" | cut -d' ' -f1)")" \
        "the command saw the copied tree"
    o="$T/out-tree"
    cmp "$T/src/a.txt" "$o/a.txt" || fail "a.txt differs after the round trip"
    cmp "$T/src/sub/b.bin" "$o/sub/b.bin" || fail "b.bin differs after the round trip"
    [ "$(cat "$o/sub/new.txt")" = "new" ] || fail "the file made in the guest is not in the copy"
    [ "$(stat -c %a "$o/run.sh")" = 755 ] || fail "run.sh lost its mode: $(stat -c %a "$o/run.sh")"
    [ "$(stat -c %a "$o/a.txt")" = 640 ] || fail "a.txt lost its mode: $(stat -c %a "$o/a.txt")"
    [ "$(readlink "$o/link")" = "a.txt" ] || fail "the symlink did not survive"
    [ -d "$o/empty" ] || fail "the empty directory did not survive"
    [ "$(cat "$T/dir/new.txt" 2>/dev/null)" = "new" ] || fail "--copy-out into an existing directory"

    say "a failed --copy-out: 125 and the command's status said"
    sbx run "${BOOT[@]}" --copy-out "no-such-file:$T/x" -- sh -c 'exit 6'
    expect_rc 125 "copy-out of a missing file"
    expect_err_has "exited with status 6" "copy-out of a missing file"

    say "sbx cp both ways"
    sbx cp "${BOOT[@]}" guest:/etc/os-release "$T/dir/"
    expect_rc 0 "sbx cp guest:/etc/os-release DIR/"
    grep -q '^ID=' "$T/dir/os-release" || fail "os-release was not copied out"
    expect_err_has "copied guest:/etc/os-release to $T/dir/os-release (1 file" "the cp summary"
    sbx cp "${BOOT[@]}" "$T/src" :/tmp/
    expect_rc 0 "sbx cp DIR :/tmp/"
    expect_err_has "copied $T/src to guest:/tmp/src (4 files" "the cp summary"
    expect_err_has "sbx run --copy-in" "the cp note"
    sbx cp "$T/src" "$T/elsewhere"
    expect_rc 125 "sbx cp without a guest side"
    ;;

shell)
    need_python
    say "sbx shell through a terminal: size, resize, exit status, terminal restored"
    SBX="$SBX" BOOT="${BOOT[*]}" "$PY" - <<'PY' || fail "the terminal session (see above)"
import fcntl, os, re, select, struct, sys, termios, time

sbx, boot = os.environ["SBX"], os.environ["BOOT"].split()

def spawn(argv, rows, cols):
    m, s = os.openpty()
    fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    pid = os.fork()
    if pid == 0:
        os.setsid()
        fcntl.ioctl(s, termios.TIOCSCTTY, 0)
        for fd in range(3):
            os.dup2(s, fd)
        os.execv(argv[0], argv)
    return pid, m, s

buf = b""
def expect(m, pattern, timeout=120):
    global buf
    end = time.time() + timeout
    while time.time() < end:
        hit = re.search(pattern, buf)
        if hit:
            buf = buf[hit.end():]
            return hit
        r, _, _ = select.select([m], [], [], 0.5)
        if r:
            try:
                buf += os.read(m, 65536)
            except OSError:
                break
    sys.exit(f"timed out waiting for {pattern!r}; terminal output: {buf[-3000:]!r}")

pid, m, s = spawn([sbx, "shell"] + boot, 30, 100)
before = termios.tcgetattr(s)
os.write(m, b"echo SYNC-$((40+2))\r")
expect(m, rb"SYNC-42")
# raw mode while the shell runs: no echo, no canonical mode on our side
lflag = termios.tcgetattr(s)[3]
if lflag & (termios.ECHO | termios.ICANON):
    sys.exit("the local terminal is not in raw mode during the session")
os.write(m, b"stty size\r")
expect(m, rb"\b30 100\r?\n")
fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # SIGWINCH to sbx
time.sleep(1)
os.write(m, b"stty size; exit 7\r")
expect(m, rb"\b40 120\r?\n")
end = time.time() + 60
while time.time() < end:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    r, _, _ = select.select([m], [], [], 0.2)
    if r:
        try:
            buf += os.read(m, 65536)
        except OSError:
            pass
else:
    sys.exit("sbx shell did not exit after `exit 7`")
if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 7:
    sys.exit(f"sbx shell: status {status:#x}, expected exit 7; output {buf[-2000:]!r}")
if termios.tcgetattr(s) != before:
    sys.exit("the local terminal was not restored")
print("terminal session ok")
PY

    say "sbx shell with stdin from a pipe: typed in, then Ctrl-D"
    printf 'echo piped-$((6*7))\nexit 5\n' | "$SBX" shell "${BOOT[@]}" >"$T/out" 2>"$T/err"
    rc=$?
    expect_rc 5 "piped shell"
    grep -q "piped-42" "$T/out" || fail "piped shell output: $(head -c 3000 "$T/out")"
    ;;

ls)
    need_python
    say "sbx ls sees a running sandbox (table, JSON, -q); Ctrl-C stops it with 130"
    # A registry of our own, so other sandboxes on this machine do not interfere.
    export XDG_RUNTIME_DIR="$T/run"
    mkdir -m 700 "$XDG_RUNTIME_DIR"
    sbx ls
    expect_rc 0 "sbx ls with nothing running"
    expect_out "ID  PID  AGE  CPUS  MEM  ROOTFS  METADATA" "sbx ls with nothing running"
    SBX="$SBX" BOOT="${BOOT[*]}" "$PY" - <<'PY' || fail "sbx ls / Ctrl-C (see above)"
import fcntl, json, os, select, subprocess, sys, termios, time

sbx, boot = os.environ["SBX"], os.environ["BOOT"].split()
m, s = os.openpty()
pid = os.fork()
if pid == 0:
    os.setsid()
    fcntl.ioctl(s, termios.TIOCSCTTY, 0)
    for fd in range(3):
        os.dup2(s, fd)
    os.execv(sbx, [sbx, "run", "--metadata", "purpose=cli-test", "--metadata", "n=1"] + boot
             + ["--", "sleep", "300"])

def ls(*args):
    return subprocess.run([sbx, "ls", *args], capture_output=True, text=True, check=True).stdout

row = None
end = time.time() + 180
while time.time() < end and row is None:
    for line in ls().splitlines()[1:]:
        if "purpose=cli-test" in line:
            row = line.split()
    time.sleep(0.5)
if row is None:
    sys.exit("sbx ls never showed the sandbox")
head = ls().splitlines()[0].split()
if head != ["ID", "PID", "AGE", "CPUS", "MEM", "ROOTFS", "METADATA"]:
    sys.exit(f"header {head}")
sid = row[0]
if int(row[1]) != pid or row[3] != "1" or row[4] != "256MiB" or row[6] != "purpose=cli-test,n=1":
    sys.exit(f"row {row}, expected pid {pid}, 1 cpu, 256MiB, the metadata")
if not row[5].endswith(".ext4"):
    sys.exit(f"rootfs column {row[5]}")
entries = [e for e in json.loads(ls("--json")) if e["id"] == sid]
if len(entries) != 1:
    sys.exit(f"--json lacks {sid}")
e = entries[0]
if e["pid"] != pid or e["metadata"] != {"purpose": "cli-test", "n": "1"} or e["ends"] is not None \
        or e["memory_mib"] != 256 or not e["created"].endswith("Z"):
    sys.exit(f"--json entry {e}")
if sid not in ls("-q").split():
    sys.exit("-q lacks the id")

os.write(m, b"\x03")  # Ctrl-C: SIGINT to sbx, the terminal's foreground process
out, end = b"", time.time() + 60
while time.time() < end:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    r, _, _ = select.select([m], [], [], 0.2)
    if r:
        out += os.read(m, 65536)
else:
    sys.exit("sbx run did not stop after Ctrl-C")
while select.select([m], [], [], 0.2)[0]:
    try:
        out += os.read(m, 65536)
    except OSError:
        break
if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 130:
    sys.exit(f"status {status:#x} after Ctrl-C, expected exit 130; output {out!r}")
if b"interrupted" not in out:
    sys.exit(f"no 'interrupted' message: {out!r}")
if sid in ls("-q").split():
    sys.exit("the stopped sandbox is still listed")
print("ls and Ctrl-C ok")
PY
    ;;

net)
    need_python
    say "network options: a bad rule is named before any boot"
    sbx run --allow-out 10.0.0.0/99 -- true
    expect_rc 125 "a bad --allow-out"
    expect_err_has "10.0.0.0/99" "a bad --allow-out"

    say "--no-network: only loopback"
    sbx run "${BOOT[@]}" --no-network -- ls /sys/class/net
    expect_rc 0 "--no-network"
    expect_out "lo" "--no-network"

    say "a web server on this machine through the gateway (--host-loopback); --block-internet"
    mkdir "$T/www" && echo "from the host" >"$T/www/index.html"
    "$PY" -u -m http.server 0 --bind 127.0.0.1 --directory "$T/www" >"$T/http.log" 2>&1 &
    web=$!
    port=
    for _ in $(seq 100); do
        port=$(sed -nE 's/.*port ([0-9]+).*/\1/p' "$T/http.log" | head -1)
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { kill $web; fail "the host web server did not start: $(cat "$T/http.log")"; }
    get="exec 3<>/dev/tcp/10.0.2.2/$port && printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' >&3 && tail -1 <&3"
    sbx run "${BOOT[@]}" --host-loopback -- bash -c "$get"
    expect_rc 0 "a fetch through the NAT"
    expect_out "from the host" "a fetch through the NAT"
    sbx run "${BOOT[@]}" --host-loopback --block-internet -- bash -c "$get"
    [ "$rc" -ne 0 ] || { kill $web; fail "--block-internet let the fetch through"; }
    kill $web

    say "-p: a server in the guest reached from here"
    "$SBX" run "${BOOT[@]}" --no-network -p 8000 -- \
        python3 -c 'import http.server as h; s=h.HTTPServer(("127.0.0.1", 8000), h.SimpleHTTPRequestHandler); s.handle_request()' \
        >"$T/out" 2>"$T/err" &
    srv=$!
    SBX_ERR="$T/err" "$PY" - <<'PY' || { kill $srv; fail "-p (see above)"; }
import os, re, time, urllib.request
deadline = time.time() + 200
addr = None
while time.time() < deadline:
    m = re.search(r"reachable at (\S+)", open(os.environ["SBX_ERR"]).read())
    if m:
        addr = m.group(1)
        try:
            r = urllib.request.urlopen(f"http://{addr}/", timeout=10)
            assert r.status == 200, r.status
            print("fetched", addr)
            break
        except OSError:
            pass
    time.sleep(0.5)
else:
    raise SystemExit(f"no answer through -p ({addr})")
PY
    wait $srv
    rc=$?
    expect_rc 0 "the guest server after one request"
    ;;
snapshot)
    # A store of our own; nothing may land in the real one either.
    export XDG_DATA_HOME="$T/xdg"
    unset SBX_TEMPLATE_DIR
    S=(--template-dir "$T/store")
    say "usage errors: before any boot"
    sbx run --template x --memory 256 -- true
    expect_rc 125 "--template with --memory"
    expect_err_has "--template makes the sandbox from a template" "--template with --memory"
    expect_err_has "drop --memory" "--template with --memory"
    sbx run --rootfs test --template x -- true
    expect_rc 125 "--template with --rootfs"
    expect_err_has "drop --rootfs" "--template with --rootfs"
    sbx run --snapshot-to 'Bad Name' -- true
    expect_rc 125 "a bad --snapshot-to name"
    expect_err_has "neither a template name" "a bad --snapshot-to name"
    mkdir "$T/exists"
    sbx run --snapshot-to "$T/exists" -- true
    expect_rc 125 "--snapshot-to an existing directory"
    expect_err_has "already exists" "--snapshot-to an existing directory"
    sbx run "${S[@]}" --template no-such-template -- true
    expect_rc 125 "a missing template"
    expect_err_has "cannot make a sandbox from template no-such-template" "a missing template"
    expect_err_has "is --rootfs NAME, not --template" "a missing template"

    say "run --snapshot-to NAME keeps files and running processes"
    sbx run "${BOOT[@]}" "${S[@]}" --snapshot-to snap1 -- sh -c \
        'echo kept >/tmp/f; setsid sh -c "while :; do sleep 1; done" </dev/null >/dev/null 2>&1 &
         echo $! >/tmp/pid; echo made'
    expect_rc 0 "--snapshot-to snap1"
    expect_out "made" "--snapshot-to snap1"
    expect_err_has "saved the sandbox as template snap1" "--snapshot-to snap1"

    say "run --template NAME, twice: each starts from the snapshot, not from the other"
    sbx run --boot-timeout 120 "${S[@]}" --template snap1 -- \
        sh -c 'cat /tmp/f; kill -0 "$(cat /tmp/pid)" && echo alive; echo changed >/tmp/f'
    expect_rc 0 "--template snap1"
    expect_out "$(printf 'kept\nalive')" "--template snap1"
    SBX_TEMPLATE_DIR="$T/store" "$SBX" run --boot-timeout 120 --template snap1 -- cat /tmp/f \
        >"$T/out" 2>"$T/err"
    rc=$?
    expect_rc 0 "--template snap1 (store from \$SBX_TEMPLATE_DIR)"
    expect_out "kept" "--template snap1, second sandbox"

    say "a failed command is not saved"
    sbx run "${BOOT[@]}" "${S[@]}" --snapshot-to snap2 -- sh -c 'exit 3'
    expect_rc 3 "--snapshot-to with exit 3"
    expect_err_has "not saving snap2: the command failed" "--snapshot-to with exit 3"
    sbx run --boot-timeout 120 "${S[@]}" --template snap2 -- true
    expect_rc 125 "the unsaved snap2"

    say "--snapshot-to PATH, --template PATH"
    sbx run "${BOOT[@]}" --snapshot-to "$T/snapdir" -- sh -c 'echo by-path >/tmp/g'
    expect_rc 0 "--snapshot-to PATH"
    expect_err_has "saved the sandbox to $T/snapdir" "--snapshot-to PATH"
    [ -d "$T/snapdir" ] || fail "--snapshot-to PATH made no directory"
    sbx run --boot-timeout 120 --template "$T/snapdir" -- cat /tmp/g
    expect_rc 0 "--template PATH"
    expect_out "by-path" "--template PATH"
    ;;

pause)
    say "usage errors: before any boot"
    sbx resume
    expect_rc 125 "resume without a path"
    expect_err_has "which paused sandbox" "resume without a path"
    sbx resume "$T/p"
    expect_rc 125 "resume without a command"
    expect_err_has "no command given" "resume without a command"
    sbx resume "$T/p" --rootfs base -- true
    expect_rc 125 "resume --rootfs"
    expect_err_has "does not apply to 'sbx resume'" "resume --rootfs"
    sbx resume "$T/p" --pause --pause-to "$T/q" -- true
    expect_rc 125 "--pause with --pause-to"
    mkdir "$T/exists"
    sbx run --pause-to "$T/exists" -- true
    expect_rc 125 "--pause-to an existing directory"
    expect_err_has "already exists" "--pause-to an existing directory"
    sbx resume "$T/nothing" -- true
    expect_rc 125 "resume of nothing"
    expect_err_has "cannot resume the sandbox paused to $T/nothing" "resume of nothing"

    say "run --pause-to: files and a counting process go to disk"
    sbx run "${BOOT[@]}" --pause-to "$T/p" -- sh -c 'echo one >state
        setsid sh -c "n=0; while :; do n=\$((n+1)); echo \$n >count; sleep 0.2; done" \
            </dev/null >/dev/null 2>&1 &
        while [ ! -s count ]; do sleep 0.1; done; echo started'
    expect_rc 0 "run --pause-to"
    expect_out "started" "run --pause-to"
    expect_err_has "paused the sandbox to $T/p" "run --pause-to"
    [ -d "$T/p" ] || fail "run --pause-to made no directory"

    say "resume --pause: the files are there, the process still counts; paused again"
    sbx resume "$T/p" --boot-timeout 120 --pause -- sh -c 'cat state; echo two >>state
        a=$(cat count); sleep 2; b=$(cat count); [ "$b" -gt "$a" ] && echo counting'
    expect_rc 0 "resume --pause"
    expect_out "$(printf 'one\ncounting')" "resume --pause"
    [ -d "$T/p" ] || fail "resume --pause did not pause to $T/p again"

    say "resume without --pause: the command's status; the sandbox and PATH are gone"
    sbx resume "$T/p" --boot-timeout 120 -- sh -c 'cat state; exit 4'
    expect_rc 4 "resume, exit 4"
    expect_out "$(printf 'one\ntwo')" "resume, exit 4"
    [ ! -e "$T/p" ] || fail "$T/p is still there after the final resume"
    ;;

template_ls)
    export XDG_DATA_HOME="$T/xdg"
    unset SBX_TEMPLATE_DIR
    S=(--template-dir "$T/store")
    head="NAME  KIND  VCPUS  MEMORY  DISK  STEPS  CREATED  SIZE"
    say "an empty store: a header, []"
    sbx template ls "${S[@]}"
    expect_rc 0 "template ls of an empty store"
    expect_out "$head" "template ls of an empty store"
    sbx template ls "${S[@]}" --json
    expect_rc 0 "template ls --json of an empty store"
    expect_out "[]" "template ls --json of an empty store"

    say "a snapshot and an unusable entry are listed"
    sbx run "${BOOT[@]}" "${S[@]}" --snapshot-to snap1 -- true
    expect_rc 0 "--snapshot-to snap1"
    mkdir -p "$T/store/templates/broken"
    echo '{"format": 1, "kind": ' >"$T/store/templates/broken/manifest.json"
    sbx template ls "${S[@]}"
    expect_rc 0 "template ls"
    [ "$(head -1 "$T/out" | tr -s ' ')" = "$(echo "$head" | tr -s ' ')" ] ||
        fail "template ls header: $(head -1 "$T/out")"
    grep -qE '^snap1 +snapshot +1 +256MiB +(-|[0-9]+MiB) +- +[0-9]+[smhd] ago +[0-9.]+([KMGT]iB|B)$' "$T/out" ||
        fail "template ls row of snap1: $(cat "$T/out")"
    grep -qE '^broken +cannot be used: .+' "$T/out" || fail "template ls row of broken: $(cat "$T/out")"
    [ "$(wc -l <"$T/out")" -eq 3 ] || fail "template ls: $(cat "$T/out")"
    sbx template ls "${S[@]}" -q
    expect_out "$(printf 'broken\nsnap1')" "template ls -q"
    "$SBX" template ls "${S[@]}" --json >"$T/out" 2>"$T/err" || fail "template ls --json: $(cat "$T/err")"
    "$PY" - "$T/out" <<'PY' || fail "template ls --json (see above): $(cat "$T/out")"
import json, sys
l = json.load(open(sys.argv[1]))
assert [t["name"] for t in l] == ["broken", "snap1"], l
b, s = l
assert b["error"], b
assert s["kind"] == "snapshot" and s["vcpus"] == 1 and s["memory_mib"] == 256, s
assert s["error"] is None and s["memory_bytes"] > 0 and s["created"].endswith("Z"), s
PY

    say "template rm"
    sbx template rm "${S[@]}" snap1
    expect_rc 0 "template rm snap1"
    sbx template ls "${S[@]}" -q
    expect_out "broken" "template ls -q after rm"
    sbx template rm "${S[@]}" no-such-template
    expect_rc 125 "template rm of a missing template"
    expect_err_has "cannot remove template no-such-template" "template rm of a missing template"
    ;;

template_build)
    export XDG_DATA_HOME="$T/xdg"
    unset SBX_TEMPLATE_DIR
    S=(--template-dir "$T/store")
    say "usage errors"
    sbx template build --name tiny
    expect_rc 125 "template build without -f"
    sbx template build -f "$T/none" --name 'Bad Name'
    expect_rc 125 "template build with a bad name"
    sbx template frobnicate
    expect_rc 125 "an unknown template subcommand"
    expect_err_has "no subcommand 'frobnicate'" "an unknown template subcommand"

    say "template build of a tiny file"
    printf 'FROM base\nRUN echo hi > /hello\n' >"$T/Dockerfile"
    sbx template build "${S[@]}" -f "$T/Dockerfile" --name tiny --memory 256
    expect_rc 0 "template build"
    expect_err_has "[1/1] RUN echo hi > /hello" "template build"
    expect_err_has "built template tiny" "template build"

    say "run --template tiny"
    sbx run --boot-timeout 120 "${S[@]}" --template tiny -- cat /hello
    expect_rc 0 "run --template tiny"
    expect_out "hi" "run --template tiny"

    say "an unchanged file again: the step is cached"
    sbx template build "${S[@]}" -f "$T/Dockerfile" --name tiny --memory 256
    expect_rc 0 "the second build"
    expect_err_has "[1/1] cached RUN echo hi > /hello" "the second build"
    sbx template ls "${S[@]}"
    grep -qE '^tiny +template +1 +256MiB ' "$T/out" || fail "template ls: $(cat "$T/out")"

    say "template rm tiny: gone"
    sbx template rm "${S[@]}" tiny
    expect_rc 0 "template rm tiny"
    sbx run --boot-timeout 120 "${S[@]}" --template tiny -- true
    expect_rc 125 "run --template of a removed template"
    ;;
code)
    # The code-interpreter template of the test store ($SBX_CODE_STORE, shared with the C and
    # binding tests): built here unless it is up to date (then the build is a cache hit).
    cache=${SBX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/libsandbox}
    if [ ! -r "$cache/code.ext4" ]; then
        echo "skip: $cache/code.ext4 is missing (make images builds it)" >&2
        exit 77
    fi
    store=${SBX_CODE_STORE:-$T/code-store}
    repo=$(cd "$(dirname "$0")/../.." && pwd)
    S=(--template-dir "$store" --boot-timeout 120)
    say "usage errors: before any boot"
    sbx code "$T/a.py" "$T/b.py"
    expect_rc 125 "two files"
    expect_err_has "one FILE at most" "two files"
    sbx code --out-dir "$T/none" "$T/a.py"
    expect_rc 125 "a missing --out-dir"
    expect_err_has "--out-dir $T/none" "a missing --out-dir"

    say "the code-interpreter template"
    sbx template build --template-dir "$store" -f "$repo/guest/interpreter/Dockerfile" \
        --name code-interpreter --ready-timeout 600
    expect_rc 0 "template build"

    say "a cell from a file: streamed output, a figure saved as a PNG, the main result last"
    cat >"$T/cell.py" <<'PY'
import matplotlib.pyplot as plt
print('hello from the cell')
plt.plot([1, 3, 2])
plt.show()
6 * 7
PY
    mkdir "$T/plots"
    sbx code "${S[@]}" --out-dir "$T/plots" "$T/cell.py"
    expect_rc 0 "the cell"
    [ "$(tail -n 1 "$T/out")" = 42 ] || fail "the main result is not last: $(cat "$T/out")"
    grep -qx "hello from the cell" "$T/out" || fail "the cell's output: $(cat "$T/out")"
    grep -qx "$T/plots/result-1.png" "$T/out" || fail "the figure's path: $(cat "$T/out")"
    "$PY" - "$T/plots/result-1.png" <<'PY' || fail "result-1.png (see above)"
import struct, sys
png = open(sys.argv[1], "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR", png[:16]
assert struct.unpack(">II", png[16:24]) == (640, 480), struct.unpack(">II", png[16:24])
PY

    say "an exception: the traceback on stderr, exit 1"
    printf 'def f():\n    return 1 / 0\nf()\n' >"$T/raise.py"
    sbx code "${S[@]}" "$T/raise.py"
    expect_rc 1 "an exception"
    expect_err_has "ZeroDivisionError: division by zero" "an exception"
    expect_err_has "in f" "an exception"

    say "bash from stdin: the cell's status"
    printf 'echo from bash\n(exit 3)\n' >"$T/cell.sh"
    sbx code "${S[@]}" --language bash <"$T/cell.sh"
    expect_rc 3 "a bash cell"
    expect_out "from bash" "a bash cell"

    say "--json: the whole execution, no files saved (here: in the current directory)"
    cd "$T" || fail "cd $T"
    sbx code "${S[@]}" --json "$T/cell.py"
    expect_rc 0 "--json"
    "$PY" - "$T/out" <<'PY' || fail "--json (see above): $(head -c 2000 "$T/out")"
import json, sys
e = json.load(open(sys.argv[1]))
assert e["stdout"] == "hello from the cell\n" and e["error"] is None, e
fig, main = e["results"]
assert not fig["is_main_result"] and fig["data"]["image/png"].startswith("iVBORw0KGgo"), fig
assert main["is_main_result"] and main["data"]["text/plain"] == "42", main
assert e["context"] == "python" and e["exit_code"] is None and not e["timed_out"], e
PY
    [ ! -e "$T/result-1.png" ] || fail "--json saved a file"
    ;;
*)
    echo "unknown scenario $scenario" >&2
    exit 2
    ;;
esac
echo "ok [$scenario]" >&2
exit 0
