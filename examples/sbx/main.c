// SPDX-License-Identifier: Apache-2.0
/* sbx: the command line tool of libsandbox: options, help, signals and the shared helpers. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sbx.h"

/* --- help ---------------------------------------------------------------------------------- */

static const char help_main[] =
    "sbx: run commands in throwaway, hardware-isolated Linux sandboxes (KVM microVMs).\n"
    "\n"
    "Usage: sbx [OPTIONS] COMMAND [ARGS...]\n"
    "\n"
    "Every sbx command that needs a sandbox boots a new one inside its own process (or makes\n"
    "it from a template) and destroys it when it exits. There is no daemon: nothing done in a\n"
    "sandbox outlives the sbx command that made it, unless you keep it: --snapshot-to saves\n"
    "it as a template, --pause-to writes it to disk for `sbx resume`.\n"
    "\n"
    "Commands:\n"
    "  run       run a command in a new sandbox, stream its output, exit with its status\n"
    "  shell     an interactive terminal (login shell) in a new sandbox\n"
    "  cp        copy files and directory trees between this machine and a new sandbox\n"
    "  resume    bring back a sandbox paused with --pause-to and run a command in it\n"
    "  template  build, list and remove templates: sbx template build|ls|rm\n"
    "  code      run Python, JavaScript or bash code like a notebook cell (code interpreter)\n"
    "  ls        list the sandboxes running on this machine (made by any program)\n"
    "  help      help for a command (same as sbx COMMAND --help)\n"
    "\n"
    "Options of every command that boots a sandbox (before or after COMMAND):\n"
    "  --rootfs NAME|PATH    root filesystem: an image name from the image directory (\"base\":\n"
    "                        Debian 12 with bash and python3; \"test\": busybox) or a path to\n"
    "                        an ext4 image [base]\n"
    "  --template NAME|PATH  make the sandbox from a template (`sbx template ls`) or a saved\n"
    "                        snapshot instead of booting: it starts in milliseconds, with the\n"
    "                        template's files and running processes. The template fixes the\n"
    "                        root filesystem, kernel, vCPUs and memory\n"
    "  --template-dir DIR    the template store [$SBX_TEMPLATE_DIR, else\n"
    "                        $XDG_DATA_HOME/libsandbox/templates, else\n"
    "                        ~/.local/share/libsandbox/templates]\n"
    "  --kernel PATH         guest kernel, vmlinux or bzImage [$SBX_KERNEL, else vmlinux from\n"
    "                        the image directory]\n"
    "  --cpus N, --cpu N     virtual CPUs, 1 to 64 [1]\n"
    "  --memory MIB          guest memory in MiB, 64 to 65536; 2G means 2048 [512]\n"
    "  --metadata KEY=VALUE  a label, shown by `sbx ls` (repeatable)\n"
    "  --boot-timeout S      give up when the guest has not booted within S seconds [30]\n"
    "  -v, --verbose         copy the guest's console to stderr and say what sbx does\n"
    "\n"
    "Network (docs/networking.md): the sandbox has eth0 behind a NAT with internet access.\n"
    "  --no-network          no network device, only loopback\n"
    "  --block-internet      block every destination not allowed with --allow-out\n"
    "  --allow-out RULE      always allow RULE: an address, a CIDR (10.0.0.0/8), a domain\n"
    "                        (example.com, *.example.com), optionally :PORT or :LOW-HIGH;\n"
    "                        wins over --deny-out (repeatable)\n"
    "  --deny-out RULE       block RULE unless allowed (repeatable)\n"
    "  --add-host NAME=IP    answer NAME with IP in the sandbox's DNS (repeatable)\n"
    "  --host-loopback       let the gateway 10.0.2.2 reach this machine's 127.0.0.1\n"
    "  --tap NAME --tap-address IP/PREFIX --tap-gateway IP [--tap-dns IP]\n"
    "                        use the existing TAP device NAME instead of the NAT\n"
    "\n"
    "  -h, --help            this help; `sbx COMMAND --help` for a command's\n"
    "  --version             the version of sbx (that of libsandbox)\n"
    "\n"
    "Exit status: `run` and `shell` exit with the command's status (128+N when signal N\n"
    "killed it, 124 when --timeout did, 130 after Ctrl-C). 125 means sbx itself failed (bad\n"
    "usage, no usable KVM, a missing image, a failed copy); the reason is on stderr as\n"
    "\"sbx: ...\".\n"
    "\n"
    "Examples:\n"
    "  sbx run -- uname -a\n"
    "  sbx run 'ls / | wc -l'                   # one word with a | : run by the shell\n"
    "  echo 'print(6 * 7)' | sbx run python3    # stdin goes to the command\n"
    "  sbx run --copy-in ./proj:proj --copy-out proj/out:./out -- make -C proj\n"
    "  sbx shell --cpus 2 --memory 1G\n"
    "  sbx ls\n"
    "\n"
    "Templates and snapshots (docs/templates.md):\n"
    "  sbx template build -f Dockerfile --name tools  # FROM base, RUN apt-get install ...\n"
    "  sbx run --template tools -- curl --version      # from the template, in milliseconds\n"
    "  sbx run --snapshot-to data -- sh -c 'CMD'       # when CMD succeeded, save it as data\n"
    "  sbx run --pause-to ./box -- CMD                 # pause it to ./box, not destroy it\n"
    "  sbx resume ./box --pause -- CMD                 # bring it back, run CMD, pause again\n"
    "\n"
    "Code interpreter (docs/code-interpreter.md):\n"
    "  sbx template build -f guest/interpreter/Dockerfile --name code-interpreter  # once\n"
    "  echo 'import numpy as np; np.arange(10).sum()' | sbx code                   # 45\n"
    "\n"
    "Images (kernel, root filesystems) are looked up in $SBX_CACHE_DIR, else\n"
    "$XDG_CACHE_HOME/libsandbox, else ~/.cache/libsandbox; `make images` builds them.\n";

static const char help_run[] =
    "Usage: sbx run [OPTIONS] [--] CMD [ARG...]\n"
    "       sbx run [OPTIONS] -c 'SHELL COMMAND LINE'\n"
    "\n"
    "Boots a new sandbox, runs CMD in it, streams CMD's stdout and stderr here as they come,\n"
    "destroys the sandbox and exits with CMD's exit status. On the base image CMD runs as\n"
    "`user` in its home directory (/home/user).\n"
    "\n"
    "How CMD runs:\n"
    "  - several words run as an argv, with no shell:    sbx run ls -l /\n"
    "  - a single word that contains a space, a tab or one of  | & ; < > ( ) $ ` \\ \" ' * ? [ ~\n"
    "    is a shell command line, run with the guest's `bash -l -c` (`sh -c` without bash):\n"
    "                                                     sbx run 'ls / | wc -l'\n"
    "  - -c STRING is always a shell command line:        sbx run -c 'cd /tmp && pwd'\n"
    "  Options go before CMD: everything from CMD on is CMD's. Write -- before a CMD that\n"
    "  starts with '-'. CMD is looked up in the guest's PATH; 127: not found, 126: not\n"
    "  executable.\n"
    "\n"
    "Standard input: when sbx's stdin is a pipe or a file, it is read to its end first (at\n"
    "most 64 MiB; use --copy-in for more) and given to CMD. When it is a terminal (or with\n"
    "--no-stdin), CMD's stdin is empty: CMD cannot be interactive (use `sbx shell`).\n"
    "\n"
    "Options:\n"
    "  -e, --env KEY=VALUE    environment variable for CMD (repeatable); `-e KEY` passes this\n"
    "                         machine's value of KEY\n"
    "  -w, --cwd DIR          working directory [the user's home]\n"
    "  -u, --user USER        user name or uid in the guest [`user` if the image has one,\n"
    "                         else root]\n"
    "  --timeout S            kill CMD and every process of its process group after S seconds\n"
    "                         (decimals allowed) and exit 124 [no limit]\n"
    "  --copy-in HOST:GUEST   copy a file or directory tree into the sandbox before CMD runs\n"
    "                         (repeatable)\n"
    "  --copy-out GUEST:HOST  copy one out after CMD ran, whatever its status (repeatable)\n"
    "  -p, --publish [HOSTPORT:]GUESTPORT\n"
    "                         make TCP port GUESTPORT of the sandbox reachable on this machine\n"
    "                         at 127.0.0.1:HOSTPORT while CMD runs (repeatable); without\n"
    "                         HOSTPORT a free port is picked. The mapping is printed to stderr.\n"
    "                         ADDR:HOSTPORT:GUESTPORT listens on ADDR instead (0.0.0.0: every\n"
    "                         interface, so other machines can connect: no authentication).\n"
    "                         Services that listen only on the guest's 127.0.0.1 work too.\n"
    "  -c STRING              run STRING with the guest's shell (instead of CMD)\n"
    "  --no-stdin             do not read stdin; CMD's stdin is empty\n"
    "  --snapshot-to NAME|PATH\n"
    "                         when CMD exited with status 0 (after the copy-outs), save the\n"
    "                         sandbox with its files and running processes as the template\n"
    "                         NAME in the template store (replacing one of that name), or as\n"
    "                         the snapshot directory PATH (a path has a '/', like ./snap; it\n"
    "                         must not exist). `sbx run --template NAME|PATH` starts from it.\n"
    "                         When CMD failed nothing is saved\n"
    "  --pause-to PATH        in the end pause the sandbox to the new directory PATH (memory,\n"
    "                         processes, disk) instead of destroying it, whatever CMD's status,\n"
    "                         also after Ctrl-C (a second Ctrl-C abandons it); `sbx resume\n"
    "                         PATH` brings it back. Both may be given: snapshot, then pause\n"
    "  and the sandbox options of `sbx --help` (--rootfs, --template, --cpus, --memory, ...)\n"
    "\n"
    "Copies: the first ':' separates the two paths. Guest paths are absolute or relative to\n"
    "the user's home. Like cp: when the destination is an existing directory or ends with\n"
    "'/', the source goes into it under its own name; otherwise the destination is the new\n"
    "name. Directories are copied recursively with modes and symlinks; a source that is\n"
    "itself a symlink is followed.\n"
    "\n"
    "Exit status: CMD's; 128+N if signal N killed it; 124 on --timeout; 130 after Ctrl-C\n"
    "(which stops CMD and the sandbox); 141 if sbx's stdout was closed (a broken pipe); 125 if\n"
    "sbx failed (no sandbox, an unknown user or directory, a failed copy: see stderr).\n"
    "\n"
    "Examples:\n"
    "  sbx run -- echo hello\n"
    "  sbx run -e NAME=world -c 'echo hello $NAME'\n"
    "  sbx run --user root --cwd /etc -- ls\n"
    "  sbx run --timeout 10 -- python3 -c 'while True: pass'; echo $?     # 124\n"
    "  tar c src | sbx run -- tar x -v\n"
    "  sbx run --copy-in ./src:src --copy-out src/build:./build -- make -C src\n"
    "  sbx run -p 8000:8000 -- python3 -m http.server 8000   # http://127.0.0.1:8000/\n"
    "  sbx run -u root --snapshot-to tools -- sh -c 'apt-get update && apt-get install -y curl'\n"
    "  sbx run --template tools -- curl --version\n"
    "  sbx run --pause-to ./box -- git clone https://github.com/octocat/Hello-World.git\n"
    "  sbx resume ./box --pause -- ls Hello-World\n";

static const char help_shell[] =
    "Usage: sbx shell [OPTIONS] [--] [CMD [ARG...]]\n"
    "\n"
    "Boots a new sandbox and opens an interactive terminal in it running the user's login\n"
    "shell (`bash -l`, else `sh -l`), or CMD (the same rules as `sbx run`; try `top`). Your\n"
    "terminal is switched to raw mode, so every key (Ctrl-C, Ctrl-Z, arrows) goes to the\n"
    "sandbox; it is restored when sbx ends, however it ends. Window size changes are passed\n"
    "on. Leave with `exit` or Ctrl-D: sbx exits with the shell's status and the sandbox is\n"
    "destroyed, with everything done in it.\n"
    "\n"
    "When stdin is not a terminal, what it gives is typed into the sandbox's terminal as it\n"
    "comes; once it ends, Ctrl-D (end of input) is typed every second until the shell exits:\n"
    "    echo 'uname -a; exit 3' | sbx shell\n"
    "\n"
    "Options:\n"
    "  -e, --env KEY=VALUE    environment variable (repeatable); TERM is xterm-256color\n"
    "  -w, --cwd DIR          working directory [the user's home]\n"
    "  -u, --user USER        user name or uid [`user` if the image has one, else root]\n"
    "  --snapshot-to NAME|PATH\n"
    "                         when the shell ended by itself (exit, Ctrl-D), save the sandbox\n"
    "                         as a template or snapshot, as `sbx run --snapshot-to` does: set\n"
    "                         it up by hand, then start sandboxes from it with --template\n"
    "  --pause-to PATH        in the end pause the sandbox to PATH instead of destroying it\n"
    "                         (`sbx resume PATH`)\n"
    "  and the sandbox options of `sbx --help` (--rootfs, --template, --cpus, --memory, ...)\n"
    "\n"
    "Examples:\n"
    "  sbx shell\n"
    "  sbx shell --snapshot-to mytools        # install things, exit; then --template mytools\n"
    "  sbx shell --user root\n"
    "  sbx shell --rootfs test -- sh\n";

static const char help_cp[] =
    "Usage: sbx cp [OPTIONS] SRC DST\n"
    "\n"
    "Copies a file or a directory tree (recursively, with modes and symlinks) between this\n"
    "machine and a sandbox. Write the sandbox's side as guest:PATH (or :PATH); guest paths\n"
    "are absolute or relative to the user's home. Like cp, a DST that is an existing\n"
    "directory or ends with '/' receives SRC under its own name. A SRC that is a symlink is\n"
    "followed (like cp -H); symlinks inside a tree are copied as symlinks. DST `-` writes a\n"
    "guest file to stdout. A progress line shows on a terminal when a copy takes a while.\n"
    "\n"
    "Read this first: like every sbx command, `sbx cp` boots a sandbox of its own and\n"
    "destroys it when it is done (there is no daemon, and sbx cannot reach a sandbox of\n"
    "another process). So:\n"
    "  - guest -> host gets files out of a fresh image:     sbx cp guest:/etc/os-release .\n"
    "  - host -> guest copies into a throwaway sandbox: it checks that the copy works and\n"
    "    tells what it copied, and then the copy is gone. To work on files in a sandbox,\n"
    "    copy them in and out as part of `sbx run`:\n"
    "        sbx run --copy-in ./proj:proj --copy-out proj/dist:./dist -- make -C proj\n"
    "\n"
    "Options: the sandbox options of `sbx --help` (--rootfs, --verbose, ...).\n"
    "\n"
    "Examples:\n"
    "  sbx cp guest:/etc/os-release -\n"
    "  sbx cp --rootfs ./my.ext4 guest:/opt/app ./app-from-image\n"
    "  sbx cp ./data guest:/tmp/\n";

static const char help_ls[] =
    "Usage: sbx ls [--json] [-q]\n"
    "\n"
    "Lists the sandboxes running on this machine for this user, whichever program created\n"
    "them (other sbx commands, or any program using libsandbox): every sandbox registers\n"
    "itself in $XDG_RUNTIME_DIR/libsandbox (else /tmp/libsandbox-UID) while it runs.\n"
    "\n"
    "Columns: ID, PID (the process the sandbox runs in), AGE, CPUS, MEM (MiB), ROOTFS (the\n"
    "image it booted), METADATA (its labels, from --metadata or sbx_options.metadata).\n"
    "\n"
    "Options:\n"
    "  --json       a JSON array of {\"id\", \"pid\", \"created\", \"ends\" (null: no lifetime),\n"
    "               \"cpus\", \"memory_mib\", \"rootfs\", \"metadata\": {KEY: VALUE}}; times\n"
    "               are RFC 3339, UTC\n"
    "  -q, --quiet  only the IDs, one a line\n";

static const char help_resume[] =
    "Usage: sbx resume PATH [OPTIONS] [--] CMD [ARG...]\n"
    "       sbx resume PATH [OPTIONS] -c 'SHELL COMMAND LINE'\n"
    "\n"
    "Brings back the sandbox that `sbx run --pause-to PATH` (or `sbx shell --pause-to`, or a\n"
    "program's sbx_pause()) wrote to the directory PATH, with its files, running processes,\n"
    "environment and metadata, runs CMD in it as `sbx run` does (the same rules, output and\n"
    "exit status), and then destroys it; with --pause it is paused to PATH again instead.\n"
    "The guest's clock is set to the current time.\n"
    "\n"
    "PATH is consumed: it is removed as soon as the sandbox is back (and written anew by\n"
    "--pause), so a paused sandbox is resumed once. When it cannot be brought back, PATH is\n"
    "left as it was. To discard a paused sandbox, remove its directory (rm -r PATH).\n"
    "\n"
    "Options:\n"
    "  --pause                pause the sandbox to PATH again after CMD, whatever CMD's status,\n"
    "                         also after Ctrl-C (a second Ctrl-C abandons it)\n"
    "  --pause-to DIR         pause it to the new directory DIR instead\n"
    "  --snapshot-to NAME|PATH  save it as a template when CMD succeeded (see `sbx run --help`)\n"
    "  the command options of `sbx run` (-e, -w, -u, --timeout, -c, --no-stdin, --copy-in,\n"
    "  --copy-out, -p), and --boot-timeout, --verbose, --template-dir.\n"
    "  --block-internet, --allow-out RULE, --deny-out RULE: the egress policy of the resumed\n"
    "  sandbox (it is not kept in PATH: without these the internet is open).\n"
    "  vCPUs, memory, root filesystem, network devices and metadata are the sandbox's own: the\n"
    "  options that set them do not apply.\n"
    "\n"
    "Exit status: CMD's, as for `sbx run`; 125 if sbx failed (the sandbox could not be resumed\n"
    "or paused again: see stderr).\n"
    "\n"
    "Examples:\n"
    "  sbx run --pause-to ./box -- sh -c 'echo 1 > counter'\n"
    "  sbx resume ./box --pause -- sh -c 'echo $(( $(cat counter) + 1 )) > counter'\n"
    "  sbx resume ./box -- cat counter       # 2; the sandbox is gone afterwards\n";

static const char help_template[] =
    "Usage: sbx template build -f FILE --name NAME [OPTIONS]\n"
    "       sbx template ls [--json] [-q]\n"
    "       sbx template rm NAME...\n"
    "\n"
    "A template is a snapshot of a booted, ready sandbox: `sbx run --template NAME` (and\n"
    "sbx_create() with options.template_name) maps it copy-on-write instead of booting, so a\n"
    "sandbox from it starts in milliseconds with the template's files and running processes.\n"
    "Templates live in a local store (--template-dir, below). docs/templates.md has the details.\n"
    "\n"
    "sbx template build: builds the template NAME from FILE, a Dockerfile subset: FROM (base,\n"
    "another image of the image directory, a template of the store, or an ext4 image path),\n"
    "RUN, COPY, ADD, ENV, WORKDIR, USER, ARG, LABEL, CMD. Each RUN runs in a builder sandbox\n"
    "(with network) on the layers of the steps before it; the result of every step is cached,\n"
    "so a build that changes only the last steps runs only those, and building an unchanged\n"
    "file does no work. Then the template boots, runs its start command, waits until it is\n"
    "ready, and is saved with its processes running; a template of that name is replaced once\n"
    "the new one is complete. RUN output streams here as it comes (stdout to stdout, stderr to\n"
    "stderr); progress lines go to stderr (a live status line on a terminal).\n"
    "  -f, --file FILE        the definition (`-f -`: read it from stdin)\n"
    "  --name NAME            the template's name: [a-z0-9][a-z0-9._-]*, at most 63\n"
    "  --context DIR          where COPY and ADD take files from [FILE's directory; with -f -,\n"
    "                         the current directory]\n"
    "  --build-arg NAME=VALUE a value for an ARG (repeatable)\n"
    "  --tag TAG              a tag of this build (repeatable)\n"
    "  --cpus N, --cpu N      vCPUs of the template's sandboxes [1, or the FROM template's]\n"
    "  --memory MIB           their memory in MiB, or like 2G [512, or the FROM template's]\n"
    "  --disk MIB             the root disk's size in MiB, or like 10G; the filesystem grows to\n"
    "                         it [the image's size]\n"
    "  --start-cmd CMD        a shell command started after the last step and left running in\n"
    "                         the template (a server, say) [LABEL sbx.start, else CMD]\n"
    "  --ready SPEC           when the template is ready to be saved: cmd:COMMAND (exits 0),\n"
    "                         port:N (a TCP port listens), file:PATH (exists), delay:MS\n"
    "                         [LABEL sbx.ready, else at once]\n"
    "  --ready-timeout S      give up when not ready after S seconds [120]\n"
    "  --step-timeout S       give up on a RUN step after S seconds [1800]\n"
    "  --no-cache             run every step, even those whose result is cached\n"
    "  --host-loopback        RUN steps may reach this machine's 127.0.0.1 at 10.0.2.2\n"
    "  --kernel PATH          the guest kernel (as for every command)\n"
    "\n"
    "sbx template ls: the templates of the store, by name. KIND is `template` (built from a\n"
    "file) or `snapshot` (saved with --snapshot-to); VCPUS, MEMORY and DISK are what its\n"
    "sandboxes get (DISK `-`: the image's size); STEPS the number of instructions (how many\n"
    "came from the cache in its last build); SIZE what its snapshot takes on this machine\n"
    "(memory and disk changes; shared cached layers not counted). Entries that cannot be used\n"
    "are listed with the reason.\n"
    "  --json                 a JSON array of {\"name\", \"kind\", \"parent\", \"vcpus\",\n"
    "                         \"memory_mib\", \"disk_mib\", \"steps\", \"cached_steps\",\n"
    "                         \"created\", \"memory_bytes\", \"disk_bytes\", \"tags\": [...],\n"
    "                         \"error\" (null, or why it cannot be used)}\n"
    "  -q, --quiet            only the names, one a line\n"
    "\n"
    "sbx template rm: removes templates (and cached layers that nothing else uses). Sandboxes\n"
    "made from them keep working.\n"
    "\n"
    "Every subcommand takes --template-dir DIR: the store [$SBX_TEMPLATE_DIR, else\n"
    "$XDG_DATA_HOME/libsandbox/templates, else ~/.local/share/libsandbox/templates].\n"
    "\n"
    "Exit status: 0, or 125 when something failed (a failed RUN step: its exit status and\n"
    "last output lines are on stderr).\n"
    "\n"
    "Example:\n"
    "  printf 'FROM base\\nRUN apt-get update && apt-get install -y curl\\n' > Dockerfile\n"
    "  sbx template build -f Dockerfile --name tools\n"
    "  sbx run --template tools -- curl --version\n"
    "  sbx template ls\n"
    "  sbx template rm tools\n";

static const char help_code[] =
    "Usage: sbx code [OPTIONS] [FILE | -]\n"
    "\n"
    "Runs code like a notebook cell in a new sandbox of the code-interpreter template, whose\n"
    "Python, JavaScript and bash interpreters are already running (docs/code-interpreter.md).\n"
    "The code comes from FILE, or from stdin (`-`, or no FILE when stdin is not a terminal).\n"
    "Its stdout and stderr stream here as they come, and each result is shown as it comes,\n"
    "the value of the last expression last: a figure, image or PDF is saved as the file\n"
    "result-N.png (.jpg, .svg, .pdf; N counts the results) and its path printed, any other\n"
    "result is printed as text. When the code raises, its traceback goes to stderr. The\n"
    "sandbox is destroyed in the end.\n"
    "\n"
    "Build the template once (`make images` builds the code image it starts from):\n"
    "  sbx template build -f guest/interpreter/Dockerfile --name code-interpreter\n"
    "\n"
    "Options:\n"
    "  --language LANGUAGE    python, javascript or bash [python]\n"
    "  --context ID           run in this context of the template instead (the default ones\n"
    "                         are python, javascript and bash)\n"
    "  --out-dir DIR          where result files go [the current directory]\n"
    "  --json                 print the whole execution as one JSON object instead: {\"results\":\n"
    "                         [{\"is_main_result\", \"data\": {MIME: DATA}}], \"stdout\",\n"
    "                         \"stderr\", \"error\" (null or {\"name\", \"value\",\n"
    "                         \"traceback\"}), \"execution_count\", \"interrupted\",\n"
    "                         \"timed_out\", \"restarted\", \"exit_code\" (bash, else null),\n"
    "                         \"context\"}; images and PDFs in base64, no files saved\n"
    "  -e, --env KEY=VALUE    environment variable for the code (repeatable)\n"
    "  --timeout S            interrupt the code after S seconds and exit 124 [no limit]\n"
    "  --template NAME|PATH   the template to use [code-interpreter]\n"
    "  --template-dir DIR     the template store (see `sbx --help`)\n"
    "  --block-internet, --allow-out RULE, --deny-out RULE, --metadata KEY=VALUE,\n"
    "  --boot-timeout S, -v   as for every command (`sbx --help`)\n"
    "\n"
    "Exit status: 0; 1 when the code raised (a Python exception, a thrown JavaScript error);\n"
    "for bash the status of the cell's last command; 124 on --timeout; 130 after Ctrl-C; 125\n"
    "if sbx failed (no such template, no interpreter in it, a result file not written: see\n"
    "stderr).\n"
    "\n"
    "Examples:\n"
    "  echo 'import sys; sys.version' | sbx code\n"
    "  sbx code analysis.py --out-dir plots          # figures as plots/result-N.png\n"
    "  sbx code --language javascript script.js\n"
    "  echo 'ls /; exit 3' | sbx code --language bash; echo $?   # 3\n"
    "  sbx code --json cell.py\n";

/* --- messages ------------------------------------------------------------------------------ */

void msg(const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "sbx: %s\n", buf);
}

int usage_error(const struct cli *a, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (a && a->name)
        fprintf(stderr, "sbx %s: %s\nTry 'sbx %s --help'.\n", a->name, buf, a->name);
    else
        fprintf(stderr, "sbx: %s\nTry 'sbx --help'.\n", buf);
    return EXIT_SBX;
}

int lib_error(const sbx *sb, int rc, const char *what)
{
    const char *m = sb ? sbx_errmsg(sb) : "";
    msg("%s: %s", what, m && *m ? m : sbx_strerror(rc));
    if (rc == SBX_ENOKVM)
        fprintf(stderr, "hint: this machine's KVM cannot boot the guest; README.md, \"Machines "
                        "whose /dev/kvm cannot boot a standard guest\", says what to do\n");
    else if (rc == SBX_EIMAGE)
        fprintf(stderr, "hint: `make images` builds the guest kernel and root filesystems; "
                        "--rootfs takes an image name or the path of an ext4 image\n");
    return EXIT_SBX;
}

int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int read_all_fd(int fd, size_t max, char **out, size_t *len)
{
    size_t cap = 0, n = 0;
    char *buf = NULL;
    *out = NULL;
    *len = 0;
    for (;;) {
        if (n == cap) {
            if (cap > max) { /* one byte beyond the limit was read: too big */
                free(buf);
                errno = EFBIG;
                return -1;
            }
            cap = cap ? cap * 2 : 65536;
            if (cap > max + 1)
                cap = max + 1;
            char *grown = realloc(buf, cap + 1); /* + the terminating NUL */
            if (!grown) {
                free(buf);
                errno = ENOMEM;
                return -1;
            }
            buf = grown;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > max) {
        free(buf);
        errno = EFBIG;
        return -1;
    }
    if (!buf && !(buf = malloc(1))) {
        errno = ENOMEM;
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

const char *human_bytes(uint64_t n, char buf[32])
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (n < 1024) {
        snprintf(buf, 32, "%llu B", (unsigned long long)n);
        return buf;
    }
    double v = (double)n / 1024;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024;
        u++;
    }
    snprintf(buf, 32, v < 10 ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- signals ------------------------------------------------------------------------------- */

/*
 * sbx blocks the signals it handles before the library creates any thread (threads inherit
 * the mask), and one thread of its own takes them with sigwait(). So no library thread is
 * ever interrupted by them, and the handling code may use ordinary calls. A terminating
 * signal interrupts the sandbox's calls (sbx_interrupt), and the main thread then exits with
 * 128+signal; while no sandbox exists yet (booting), or at a second signal, sbx leaves at once
 * (the VM lives in this process, so it goes with it).
 */
static sigset_t sig_set;
static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static sbx *sig_sb;
static atomic_int sig_term;
static atomic_int sig_defer;
static int sig_pipe[2] = {-1, -1};
void (*volatile on_early_exit)(void);

static void *signal_thread(void *arg)
{
    (void)arg;
    for (;;) {
        int sig;
        if (sigwait(&sig_set, &sig) != 0)
            continue;
        unsigned char b = (unsigned char)sig;
        if (write(sig_pipe[1], &b, 1) < 0) {
            /* full: the main thread is behind; it re-reads the state anyway */
        }
        if (sig == SIGWINCH || sig == SIGCONT)
            continue;
        int expected = 0;
        int first = atomic_compare_exchange_strong(&sig_term, &expected, sig);
        pthread_mutex_lock(&sig_lock);
        sbx *sb = sig_sb;
        if (first && sb)
            sbx_interrupt(sb);
        pthread_mutex_unlock(&sig_lock);
        if (first && sb)
            continue;
        if (first && atomic_load(&sig_defer)) {
            static const char m[] = "\nsbx: finishing the pause first (again to abandon it)\n";
            if (write(2, m, sizeof(m) - 1) < 0) {
                /* nothing left to tell it to */
            }
            continue;
        }
        if (on_early_exit)
            on_early_exit();
        static const char m[] = "\nsbx: interrupted\n";
        if (write(2, m, sizeof(m) - 1) < 0) {
            /* nothing left to tell it to */
        }
        _exit(128 + sig);
    }
    return NULL;
}

void signals_start(void)
{
    /* A signal ignored on entry stays ignored: shells ignore SIGINT and SIGQUIT in
       background jobs, nohup ignores SIGHUP. */
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGCONT};
    sigemptyset(&sig_set);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct sigaction old;
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            continue;
        sigaddset(&sig_set, sigs[i]);
    }
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        msg("pipe: %s", strerror(errno));
        exit(EXIT_SBX);
    }
    pthread_sigmask(SIG_BLOCK, &sig_set, NULL);
    pthread_t t;
    if (pthread_create(&t, NULL, signal_thread, NULL) != 0) {
        msg("cannot start a thread");
        exit(EXIT_SBX);
    }
    pthread_detach(t);
}

void signals_set_sandbox(sbx *sb)
{
    /* After this returns with NULL, no sbx_interrupt() on the old handle is in progress, so
       it may be destroyed. */
    pthread_mutex_lock(&sig_lock);
    sig_sb = sb;
    pthread_mutex_unlock(&sig_lock);
}

void signals_defer(int on)
{
    atomic_store(&sig_defer, on);
}

int signals_pending(void)
{
    return atomic_load(&sig_term);
}

int signals_fd(void)
{
    return sig_pipe[0];
}

/* --- the sandbox --------------------------------------------------------------------------- */

/* Why sbx_create() or sbx_resume() failed, with a hint that fits how the sandbox was made. */
static int open_error(const struct cli *a, sbx *sb, int rc)
{
    char what[512];
    if (a->cmd == CMD_RESUME)
        snprintf(what, sizeof(what), "cannot resume the sandbox paused to %s", a->resume_path);
    else if (a->template_name)
        snprintf(what, sizeof(what), "cannot make a sandbox from template %s", a->template_name);
    else
        return lib_error(sb, rc, "cannot start a sandbox");
    const char *m = sb ? sbx_errmsg(sb) : "";
    msg("%s: %s", what, m && *m ? m : sbx_strerror(rc));
    if (rc == SBX_ENOKVM)
        return lib_error(NULL, rc, "(KVM)");
    if (a->cmd == CMD_RESUME && access(a->resume_path, F_OK) == 0)
        fprintf(stderr, "hint: %s is left as it was\n", a->resume_path);
    else if (a->cmd == CMD_CODE && rc == SBX_ENOENT)
        fprintf(stderr,
                "hint: build the template: sbx template build -f "
                "guest/interpreter/Dockerfile --name %s%s%s\n",
                a->template_name, a->template_dir ? " --template-dir " : "",
                a->template_dir ? a->template_dir : "");
    else if (a->template_name && rc == SBX_ENOENT)
        fprintf(stderr, "hint: a root filesystem image such as base is --rootfs NAME, not "
                        "--template\n");
    return EXIT_SBX;
}

int sandbox_open(const struct cli *a, sbx **out)
{
    sbx_options o = SBX_OPTIONS_INIT;
    o.boot_timeout_ms = a->boot_timeout_ms;
    o.net_policy.block_internet = a->block_internet;
    o.net_policy.allow_out = a->allow_out;
    o.net_policy.deny_out = a->deny_out;
    if (a->verbose)
        o.console_fd = 2;
    /* A resumed sandbox keeps its own resources, network devices and metadata; a template
       brings its kernel, root filesystem, vCPUs and memory (main() refuses those options). */
    if (a->cmd != CMD_RESUME) {
        o.kernel = a->kernel;
        o.rootfs = a->rootfs;
        o.template_name = a->template_name;
        o.template_dir = a->template_dir;
        o.vcpus = a->cpus;
        o.memory_mib = a->memory_mib;
        o.metadata = a->nmetadata ? a->metadata : NULL;
        o.network = a->no_network ? SBX_NET_NONE : a->tap[0] ? SBX_NET_TAP : SBX_NET_NAT;
        o.tap_name = a->tap[0];
        o.tap_address = a->tap[1];
        o.tap_gateway = a->tap[2];
        o.tap_dns = a->tap[3];
        o.hosts = a->hosts;
        o.host_loopback = a->host_loopback;
    }
    sbx *sb = NULL;
    double t0 = now_s();
    int rc = a->cmd == CMD_RESUME ? sbx_resume(&sb, a->resume_path, &o) : sbx_create(&sb, &o);
    if (rc != 0) {
        open_error(a, sb, rc);
        sbx_destroy(sb);
        *out = NULL;
        return EXIT_SBX;
    }
    if (a->verbose) {
        sbx_info info;
        const char *how = a->cmd == CMD_RESUME ? "resumed" : a->template_name ? "made" : "up";
        if (sbx_get_info(sb, &info) == 0)
            msg("sandbox %s is %s after %.3f s: %s, Linux %s, %u vCPUs, %u MiB", info.id, how,
                now_s() - t0, info.os_name[0] ? info.os_name : "unknown OS", info.kernel_release,
                info.vcpus, info.memory_mib);
    }
    *out = sb;
    return 0;
}

int template_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63 || strstr(name, ".."))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 (i > 0 && (c == '.' || c == '_' || c == '-'));
        if (!ok)
            return 0;
    }
    return 1;
}

/* A directory sbx_pause() or sbx_snapshot() is to create: it must not exist, and its parent
   must be a writable directory. Returns 0, or EXIT_SBX after saying why. */
static int new_dir_check(const char *opt, const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        msg("%s %s: it already exists (give a new path, or remove it first)", opt, path);
        return EXIT_SBX;
    }
    char *copy = strdup(path);
    if (!copy) {
        msg("out of memory");
        return EXIT_SBX;
    }
    /* The parent: what precedes the last '/' that is followed by a name. */
    size_t len = strlen(copy);
    while (len > 1 && copy[len - 1] == '/')
        copy[--len] = '\0';
    char *slash = strrchr(copy, '/');
    const char *parent = !slash ? "." : slash == copy ? "/" : (*slash = '\0', copy);
    int rc = 0;
    if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode)) {
        msg("%s %s: %s is not a directory", opt, path, parent);
        rc = EXIT_SBX;
    } else if (access(parent, W_OK | X_OK) != 0) {
        msg("%s %s: cannot create it in %s: %s", opt, path, parent, strerror(errno));
        rc = EXIT_SBX;
    }
    free(copy);
    return rc;
}

int snapshot_targets_check(const struct cli *a)
{
    if ((a->snapshot_to || a->pause_to) && a->tap[0])
        return usage_error(a, "a sandbox on a TAP device (--tap) cannot be %s",
                           a->pause_to ? "paused" : "snapshotted");
    if (a->snapshot_to) {
        if (strchr(a->snapshot_to, '/')) {
            if (new_dir_check("--snapshot-to", a->snapshot_to))
                return EXIT_SBX;
        } else if (!template_name_valid(a->snapshot_to)) {
            return usage_error(
                a,
                "--snapshot-to '%s' is neither a template name ([a-z0-9][a-z0-9._-]*, "
                "at most 63 characters) nor a path (write ./%s for a directory here)",
                a->snapshot_to, a->snapshot_to);
        }
    }
    /* resume --pause: PATH exists until the sandbox is back (sbx_resume removes it). */
    if (a->pause_to && !(a->cmd == CMD_RESUME && a->pause))
        return new_dir_check(a->pause ? "--pause" : "--pause-to", a->pause_to);
    return 0;
}

int sandbox_finish(const struct cli *a, sbx *sb, int status, int keep_ok)
{
    /* A sandbox whose guest died or stopped has nothing left to keep. */
    int running = sbx_state(sb) == SBX_STATE_RUNNING;
    if (a->snapshot_to && running) {
        if (!keep_ok) {
            msg("not saving %s: %s", a->snapshot_to,
                signals_pending()    ? "interrupted"
                : status == EXIT_SBX ? "sbx failed (see above)"
                                     : "the command failed");
        } else {
            double t0 = now_s();
            int rc = sbx_snapshot(sb, a->snapshot_to);
            if (rc != 0) {
                char what[512];
                snprintf(what, sizeof(what), "cannot save the sandbox as %s", a->snapshot_to);
                lib_error(sb, rc, what);
                if (status != 0)
                    msg("(the command itself exited with status %d)", status);
                status = EXIT_SBX;
            } else if (strchr(a->snapshot_to, '/')) {
                msg("saved the sandbox to %s in %.2f s (sbx run --template %s ...)", a->snapshot_to,
                    now_s() - t0, a->snapshot_to);
            } else {
                msg("saved the sandbox as template %s in %.2f s (sbx run --template %s ...)",
                    a->snapshot_to, now_s() - t0, a->snapshot_to);
            }
        }
    }
    if (a->pause_to) {
        if (!running) {
            msg("cannot pause the sandbox to %s: it no longer runs (%s)", a->pause_to,
                sbx_errmsg(sb));
            status = EXIT_SBX;
        } else {
            if (signals_pending())
                msg("pausing the sandbox to %s (Ctrl-C again abandons it)", a->pause_to);
            /* An interrupted pause would lose the sandbox: a first signal now only counts. */
            signals_set_sandbox(NULL);
            signals_defer(1);
            double t0 = now_s();
            int rc = sbx_pause(sb, a->pause_to);
            signals_defer(0);
            if (rc != 0) {
                char what[512];
                snprintf(what, sizeof(what), "cannot pause the sandbox to %s (its state is lost)",
                         a->pause_to);
                lib_error(sb, rc, what);
                if (status != 0 && status != EXIT_SBX)
                    msg("(the command itself exited with status %d)", status);
                status = EXIT_SBX;
            } else if (a->verbose || a->cmd != CMD_RESUME) {
                msg("paused the sandbox to %s in %.2f s (sbx resume %s -- CMD goes on)",
                    a->pause_to, now_s() - t0, a->pause_to);
            }
        }
    }
    signals_set_sandbox(NULL);
    sbx_destroy(sb);
    return status;
}

/* A single word with any of these is a shell command line (documented in `sbx run --help`). */
static int is_shell_line(const char *w)
{
    return strpbrk(w, " \t\n|&;<>()$`\\\"'*?[~") != NULL;
}

void command_from_words(const struct cli *a, sbx_exec_options *o)
{
    if (a->shell_cmd)
        o->cmd = a->shell_cmd;
    else if (a->nwords == 1 && is_shell_line(a->words[0]))
        o->cmd = a->words[0];
    else if (a->nwords > 0)
        o->argv = (const char *const *)a->words;
}

/* --- options ------------------------------------------------------------------------------- */

enum optid {
    O_HELP = 1,
    O_VERSION,
    O_KERNEL,
    O_ROOTFS,
    O_TEMPLATE,
    O_CPUS,
    O_MEMORY,
    O_METADATA,
    O_NO_NETWORK,
    O_BLOCK_INTERNET,
    O_ALLOW_OUT,
    O_DENY_OUT,
    O_ADD_HOST,
    O_HOST_LOOPBACK,
    O_TAP,
    O_TAP_ADDRESS,
    O_TAP_GATEWAY,
    O_TAP_DNS,
    O_BOOT_TIMEOUT,
    O_VERBOSE,
    O_ENV,
    O_CWD,
    O_USER,
    O_TIMEOUT,
    O_SHELL_CMD,
    O_NO_STDIN,
    O_COPY_IN,
    O_COPY_OUT,
    O_PUBLISH,
    O_JSON,
    O_QUIET,
    O_TEMPLATE_DIR,
    O_SNAPSHOT_TO,
    O_PAUSE_TO,
    O_PAUSE,
    O_FILE,
    O_NAME,
    O_CONTEXT,
    O_BUILD_ARG,
    O_TAG,
    O_DISK,
    O_START_CMD,
    O_READY,
    O_READY_TIMEOUT,
    O_STEP_TIMEOUT,
    O_NO_CACHE,
    O_LANGUAGE,
    O_CODE_CONTEXT,
    O_OUT_DIR,
};

#define BOOTS (CMD_RUN | CMD_SHELL | CMD_CP) /* a new sandbox: booted or from a template */
#define TPL   (CMD_TBUILD | CMD_TLS | CMD_TRM)
#define ALL   (BOOTS | CMD_LS | CMD_RESUME | TPL | CMD_CODE)
#define EXECS (CMD_RUN | CMD_RESUME)             /* run one command with streamed output */
#define KEEPS (CMD_RUN | CMD_SHELL | CMD_RESUME) /* may keep the sandbox in the end */

struct opt {
    const char *name; /* long name, or NULL */
    char short_name;  /* or 0 */
    const char *arg;  /* the value's name, NULL for a flag */
    int id;
    unsigned cmds; /* the commands it applies to (0: only before the command) */
};

static const struct opt options[] = {
    {"help", 'h', NULL, O_HELP, ALL},
    {"version", 0, NULL, O_VERSION, 0},
    {"kernel", 0, "PATH", O_KERNEL, BOOTS | CMD_TBUILD},
    {"rootfs", 0, "NAME|PATH", O_ROOTFS, BOOTS},
    {"template", 0, "NAME|PATH", O_TEMPLATE, BOOTS | CMD_CODE},
    {"template-dir", 0, "DIR", O_TEMPLATE_DIR, BOOTS | CMD_RESUME | TPL | CMD_CODE},
    {"cpus", 0, "N", O_CPUS, BOOTS | CMD_TBUILD},
    {"cpu", 0, "N", O_CPUS, BOOTS | CMD_TBUILD},
    {"memory", 0, "MIB", O_MEMORY, BOOTS | CMD_TBUILD},
    {"metadata", 0, "KEY=VALUE", O_METADATA, BOOTS | CMD_CODE},
    {"no-network", 0, NULL, O_NO_NETWORK, BOOTS},
    {"block-internet", 0, NULL, O_BLOCK_INTERNET, BOOTS | CMD_RESUME | CMD_CODE},
    {"allow-out", 0, "RULE", O_ALLOW_OUT, BOOTS | CMD_RESUME | CMD_CODE},
    {"deny-out", 0, "RULE", O_DENY_OUT, BOOTS | CMD_RESUME | CMD_CODE},
    {"add-host", 0, "NAME=IP", O_ADD_HOST, BOOTS},
    {"host-loopback", 0, NULL, O_HOST_LOOPBACK, BOOTS | CMD_TBUILD},
    {"tap", 0, "NAME", O_TAP, BOOTS},
    {"tap-address", 0, "IP/PREFIX", O_TAP_ADDRESS, BOOTS},
    {"tap-gateway", 0, "IP", O_TAP_GATEWAY, BOOTS},
    {"tap-dns", 0, "IP", O_TAP_DNS, BOOTS},
    {"boot-timeout", 0, "SECONDS", O_BOOT_TIMEOUT, BOOTS | CMD_RESUME | CMD_CODE},
    {"verbose", 'v', NULL, O_VERBOSE, BOOTS | CMD_RESUME | CMD_CODE},
    {"env", 'e', "KEY=VALUE", O_ENV, KEEPS | CMD_CODE},
    {"cwd", 'w', "DIR", O_CWD, KEEPS},
    {"user", 'u', "USER", O_USER, KEEPS},
    {"timeout", 0, "SECONDS", O_TIMEOUT, EXECS | CMD_CODE},
    {NULL, 'c', "STRING", O_SHELL_CMD, EXECS},
    {"no-stdin", 0, NULL, O_NO_STDIN, EXECS},
    {"copy-in", 0, "HOST:GUEST", O_COPY_IN, EXECS},
    {"copy-out", 0, "GUEST:HOST", O_COPY_OUT, EXECS},
    {"publish", 'p', "[HOSTPORT:]GUESTPORT", O_PUBLISH, EXECS},
    {"snapshot-to", 0, "NAME|PATH", O_SNAPSHOT_TO, KEEPS},
    {"pause-to", 0, "PATH", O_PAUSE_TO, KEEPS},
    {"pause", 0, NULL, O_PAUSE, CMD_RESUME},
    {"json", 0, NULL, O_JSON, CMD_LS | CMD_TLS | CMD_CODE},
    {"quiet", 'q', NULL, O_QUIET, CMD_LS | CMD_TLS},
    {"file", 'f', "FILE", O_FILE, CMD_TBUILD},
    {"name", 0, "NAME", O_NAME, CMD_TBUILD},
    {"context", 0, "DIR", O_CONTEXT, CMD_TBUILD},
    {"build-arg", 0, "NAME=VALUE", O_BUILD_ARG, CMD_TBUILD},
    {"tag", 0, "TAG", O_TAG, CMD_TBUILD},
    {"disk", 0, "MIB", O_DISK, CMD_TBUILD},
    {"start-cmd", 0, "CMD", O_START_CMD, CMD_TBUILD},
    {"ready", 0, "SPEC", O_READY, CMD_TBUILD},
    {"ready-timeout", 0, "SECONDS", O_READY_TIMEOUT, CMD_TBUILD},
    {"step-timeout", 0, "SECONDS", O_STEP_TIMEOUT, CMD_TBUILD},
    {"no-cache", 0, NULL, O_NO_CACHE, CMD_TBUILD},
    {"language", 0, "LANGUAGE", O_LANGUAGE, CMD_CODE},
    {"context", 0, "ID", O_CODE_CONTEXT, CMD_CODE},
    {"out-dir", 0, "DIR", O_OUT_DIR, CMD_CODE},
};

struct parser {
    int argc;
    char **argv;
    int i;
};

/* The next option at p->i: its id, with *val its value; 0 at the first word that is not an
   option (or after "--", which is consumed); -1 after printing a usage error. mask: the
   commands whose options are accepted (0: before the command). */
static int next_opt(struct parser *p, const struct cli *a, unsigned mask, const char **val,
                    const struct opt **which)
{
    *val = NULL;
    if (p->i >= p->argc)
        return 0;
    char *arg = p->argv[p->i];
    if (strcmp(arg, "--") == 0) {
        p->i++;
        return 0;
    }
    if (arg[0] != '-' || arg[1] == '\0')
        return 0;
    const struct opt *o = NULL;
    const char *inline_val = NULL;
    char shown[64];
    if (arg[1] == '-') {
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        /* A name may have an entry for each set of commands: the command's own one wins. */
        for (size_t k = 0; k < sizeof(options) / sizeof(options[0]); k++)
            if (options[k].name && strlen(options[k].name) == len &&
                strncmp(options[k].name, name, len) == 0 && (!o || (options[k].cmds & mask)))
                o = &options[k];
        snprintf(shown, sizeof(shown), "--%.*s", (int)(len > 40 ? 40 : len), name);
        if (eq)
            inline_val = eq + 1;
    } else {
        for (size_t k = 0; k < sizeof(options) / sizeof(options[0]); k++)
            if (options[k].short_name == arg[1])
                o = &options[k];
        snprintf(shown, sizeof(shown), "-%c", arg[1]);
        if (arg[2])
            inline_val = arg + 2;
        if (o && !o->arg && inline_val) {
            usage_error(a, "unknown option '%s' (options cannot be grouped: write -%c -%c)", arg,
                        arg[1], arg[2]);
            return -1;
        }
    }
    if (!o) {
        if (a && (a->cmd == CMD_RUN || a->cmd == CMD_RESUME))
            usage_error(a,
                        "unknown option '%s' (to run a command that starts with '-', "
                        "write -- before it)",
                        shown);
        else
            usage_error(a, "unknown option '%s'", shown);
        return -1;
    }
    if (mask && !(o->cmds & mask)) {
        usage_error(a, "option '%s' does not apply to 'sbx %s'", shown, a->name);
        return -1;
    }
    if (!mask && !(o->cmds & BOOTS) && o->id != O_HELP && o->id != O_VERSION) {
        usage_error(a, "option '%s' goes after the command (sbx COMMAND %s ...)", shown, shown);
        return -1;
    }
    p->i++;
    if (!o->arg) {
        if (inline_val) {
            usage_error(a, "option '%s' takes no value", shown);
            return -1;
        }
    } else if (inline_val) {
        *val = inline_val;
    } else if (p->i < p->argc) {
        *val = p->argv[p->i++];
    } else {
        usage_error(a, "option '%s' needs a value: %s %s", shown, shown, o->arg);
        return -1;
    }
    *which = o;
    return o->id;
}

/* Appends to a NULL-terminated array. */
static void push(void *arrayp, size_t *n, const void *item)
{
    const void ***array = arrayp;
    const void **grown = realloc(*array, (*n + 2) * sizeof(void *));
    if (!grown) {
        msg("out of memory");
        exit(EXIT_SBX);
    }
    grown[(*n)++] = item;
    grown[*n] = NULL;
    *array = grown;
}

static int parse_uint(const struct cli *a, const char *opt, const char *v, unsigned min,
                      unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (!*v || *end || errno || v[0] == '-' || n < min || n > max)
        return usage_error(a, "%s wants a whole number from %u to %u, not '%s'", opt, min, max, v);
    *out = (unsigned)n;
    return 0;
}

/* "512", "512M", "512MiB", "2G", "2GiB" -> MiB */
static int parse_mib(const struct cli *a, const char *v, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    unsigned long mult = 1;
    if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gib") == 0 || strcasecmp(end, "gb") == 0)
        mult = 1024;
    else if (*end && strcasecmp(end, "m") != 0 && strcasecmp(end, "mib") != 0 &&
             strcasecmp(end, "mb") != 0)
        mult = 0;
    if (!*v || v[0] == '-' || end == v || errno || !mult || n > 65536 || n * mult < 64 ||
        n * mult > 65536)
        return usage_error(a, "--memory wants MiB from 64 to 65536 (or like 2G), not '%s'", v);
    *out = (unsigned)(n * mult);
    return 0;
}

/* A disk size: "2048", "2048M", "10G", "1T" -> MiB, from 64 MiB to 16 TiB. */
static int parse_disk(const struct cli *a, const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    unsigned long long mult = 0;
    if (!*end || strcasecmp(end, "m") == 0 || strcasecmp(end, "mib") == 0 ||
        strcasecmp(end, "mb") == 0)
        mult = 1;
    else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gib") == 0 || strcasecmp(end, "gb") == 0)
        mult = 1024;
    else if (strcasecmp(end, "t") == 0 || strcasecmp(end, "tib") == 0 || strcasecmp(end, "tb") == 0)
        mult = 1024 * 1024;
    if (!*v || v[0] == '-' || end == v || errno || !mult || n > (1ull << 24) || n * mult < 64 ||
        n * mult > (1ull << 24))
        return usage_error(a, "--disk wants MiB from 64 to 16777216 (or like 10G), not '%s'", v);
    *out = n * mult;
    return 0;
}

/* Seconds (decimals allowed) -> milliseconds, at most ~49 days. */
static int parse_seconds(const struct cli *a, const char *opt, const char *v, unsigned *ms)
{
    char *end;
    errno = 0;
    double s = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(s) || s < 0 || s * 1000 >= (double)UINT_MAX - 1)
        return usage_error(a, "%s wants a number of seconds, not '%s'", opt, v);
    *ms = (unsigned)llround(s * 1000);
    if (*ms == 0 && s > 0)
        *ms = 1;
    return 0;
}

static int apply(struct cli *a, const struct opt *o, const char *v)
{
    char shown[32];
    if (o->name)
        snprintf(shown, sizeof(shown), "--%s", o->name);
    else
        snprintf(shown, sizeof(shown), "-%c", o->short_name);
    switch (o->id) {
    case O_KERNEL:
        a->kernel = v;
        return 0;
    case O_ROOTFS:
        a->rootfs = v;
        return 0;
    case O_TEMPLATE:
        a->template_name = v;
        return 0;
    case O_CPUS:
        return parse_uint(a, shown, v, 1, 64, &a->cpus);
    case O_MEMORY:
        return parse_mib(a, v, &a->memory_mib);
    case O_METADATA:
        if (!strchr(v, '=') || v[0] == '=')
            return usage_error(a, "--metadata wants KEY=VALUE, not '%s'", v);
        push(&a->metadata, &a->nmetadata, v);
        return 0;
    case O_NO_NETWORK:
        a->no_network = 1;
        return 0;
    case O_BLOCK_INTERNET:
        a->block_internet = 1;
        return 0;
    case O_HOST_LOOPBACK:
        a->host_loopback = 1;
        return 0;
    case O_TAP:
        a->tap[0] = v;
        return 0;
    case O_TAP_ADDRESS:
        a->tap[1] = v;
        return 0;
    case O_TAP_GATEWAY:
        a->tap[2] = v;
        return 0;
    case O_TAP_DNS:
        a->tap[3] = v;
        return 0;
    case O_ALLOW_OUT:
        push(&a->allow_out, &a->nallow_out, v);
        return 0;
    case O_DENY_OUT:
        push(&a->deny_out, &a->ndeny_out, v);
        return 0;
    case O_ADD_HOST:
        if (!strchr(v, '=') || v[0] == '=')
            return usage_error(a, "%s wants NAME=IP, not '%s'", shown, v);
        push(&a->hosts, &a->nhosts, v);
        return 0;
    case O_BOOT_TIMEOUT:
        return parse_seconds(a, shown, v, &a->boot_timeout_ms);
    case O_VERBOSE:
        a->verbose = 1;
        return 0;
    case O_ENV: {
        if (v[0] == '=' || !v[0])
            return usage_error(a, "%s wants KEY=VALUE or KEY, not '%s'", shown, v);
        if (!strchr(v, '=')) {
            const char *here = getenv(v);
            if (!here)
                return usage_error(a, "%s %s: %s is not set here (write %s=VALUE)", shown, v, v, v);
            char *kv;
            if (asprintf(&kv, "%s=%s", v, here) < 0) {
                msg("out of memory");
                exit(EXIT_SBX);
            }
            v = kv;
        } else if (!(v = strdup(v))) {
            msg("out of memory");
            exit(EXIT_SBX);
        }
        push(&a->envs, &a->nenvs, v); /* all malloc'd: main() frees them */
        return 0;
    }
    case O_CWD:
        a->cwd = v;
        return 0;
    case O_USER:
        if (!v[0])
            return usage_error(a, "%s wants a user name or uid", shown);
        a->user = v;
        return 0;
    case O_TIMEOUT:
        if (parse_seconds(a, shown, v, &a->timeout_ms))
            return EXIT_SBX;
        if (a->timeout_ms == 0)
            a->timeout_ms = SBX_NO_TIMEOUT;
        return 0;
    case O_SHELL_CMD:
        a->shell_cmd = v;
        return 0;
    case O_NO_STDIN:
        a->no_stdin = 1;
        return 0;
    case O_COPY_IN:
    case O_COPY_OUT: {
        const char *colon = strchr(v, ':');
        if (!colon || colon == v || !colon[1])
            return usage_error(a, "%s wants %s, not '%s'", shown, o->arg, v);
        if (o->id == O_COPY_IN)
            push(&a->copy_in, &a->ncopy_in, v);
        else
            push(&a->copy_out, &a->ncopy_out, v);
        return 0;
    }
    case O_PUBLISH: {
        char addr[64];
        unsigned hp, gp;
        if (publish_parse(v, addr, sizeof(addr), &hp, &gp) != 0)
            return usage_error(a,
                               "%s wants [HOSTPORT:]GUESTPORT or ADDR:HOSTPORT:GUESTPORT with "
                               "ports 1..65535 (HOSTPORT 0: any free port), not '%s'",
                               shown, v);
        push(&a->publish, &a->npublish, v);
        return 0;
    }
    case O_JSON:
        a->json = 1;
        return 0;
    case O_QUIET:
        a->quiet = 1;
        return 0;
    case O_TEMPLATE_DIR:
    case O_SNAPSHOT_TO:
    case O_PAUSE_TO:
    case O_FILE:
    case O_NAME:
    case O_CONTEXT:
    case O_START_CMD:
    case O_LANGUAGE:
    case O_CODE_CONTEXT:
    case O_OUT_DIR: {
        if (!v[0])
            return usage_error(a, "%s wants %s, not an empty string", shown, o->arg);
        const char **field = o->id == O_TEMPLATE_DIR   ? &a->template_dir
                             : o->id == O_SNAPSHOT_TO  ? &a->snapshot_to
                             : o->id == O_PAUSE_TO     ? &a->pause_to
                             : o->id == O_FILE         ? &a->file
                             : o->id == O_NAME         ? &a->tpl_name
                             : o->id == O_CONTEXT      ? &a->context
                             : o->id == O_LANGUAGE     ? &a->language
                             : o->id == O_CODE_CONTEXT ? &a->code_context
                             : o->id == O_OUT_DIR      ? &a->out_dir
                                                       : &a->start_cmd;
        *field = v;
        return 0;
    }
    case O_PAUSE:
        a->pause = 1;
        return 0;
    case O_BUILD_ARG:
        if (!strchr(v, '=') || v[0] == '=')
            return usage_error(a, "%s wants NAME=VALUE, not '%s'", shown, v);
        push(&a->build_args, &a->nbuild_args, v);
        return 0;
    case O_TAG:
        if (!template_name_valid(v))
            return usage_error(a, "%s '%s': a tag is [a-z0-9][a-z0-9._-]*, at most 63", shown, v);
        push(&a->tags, &a->ntags, v);
        return 0;
    case O_DISK:
        return parse_disk(a, v, &a->disk_mib);
    case O_READY:
        if (strncmp(v, "cmd:", 4) != 0 && strncmp(v, "port:", 5) != 0 &&
            strncmp(v, "file:", 5) != 0 && strncmp(v, "delay:", 6) != 0)
            return usage_error(a, "%s wants cmd:COMMAND, port:N, file:PATH or delay:MS, not '%s'",
                               shown, v);
        a->ready = v;
        return 0;
    case O_READY_TIMEOUT:
        return parse_seconds(a, shown, v, &a->ready_timeout_ms);
    case O_STEP_TIMEOUT:
        return parse_seconds(a, shown, v, &a->step_timeout_ms);
    case O_NO_CACHE:
        a->no_cache = 1;
        return 0;
    }
    return 0;
}

static const struct {
    const char *name;
    enum cmd cmd;
    int (*fn)(struct cli *);
    const char *help;
} commands[] = {
    {"run", CMD_RUN, cmd_run, help_run},
    {"shell", CMD_SHELL, cmd_shell, help_shell},
    {"cp", CMD_CP, cmd_cp, help_cp},
    {"resume", CMD_RESUME, cmd_run, help_resume},
    {"ls", CMD_LS, cmd_ls, help_ls},
    {"code", CMD_CODE, cmd_code, help_code},
    /* "template SUBCOMMAND" */
    {"template build", CMD_TBUILD, cmd_template_build, help_template},
    {"template ls", CMD_TLS, cmd_template_ls, help_template},
    {"template rm", CMD_TRM, cmd_template_rm, help_template},
};
#define NCOMMANDS    (sizeof(commands) / sizeof(commands[0]))
#define COMMAND_LIST "run, shell, cp, resume, template, code, ls"

static int find_command(const char *name)
{
    for (size_t k = 0; k < NCOMMANDS; k++)
        if (strcmp(commands[k].name, name) == 0)
            return (int)k;
    return -1;
}

/* "template" and its subcommand (with the aliases list and remove): an index in commands[],
   -1 after a usage error. */
static int find_template_command(const char *sub)
{
    static const struct cli t = {.name = "template"};
    if (!sub)
        return usage_error(&t, "which one: sbx template build|ls|rm"), -1;
    const char *full = strcmp(sub, "build") == 0                              ? "template build"
                       : strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0   ? "template ls"
                       : strcmp(sub, "rm") == 0 || strcmp(sub, "remove") == 0 ? "template rm"
                                                                              : NULL;
    if (!full)
        return usage_error(&t, "no subcommand '%s' (sbx template build|ls|rm)", sub), -1;
    return find_command(full);
}

static int print_help(const char *text)
{
    fputs(text, stdout);
    return fflush(stdout) == 0 ? 0 : EXIT_SBX;
}

int main(int argc, char **argv)
{
    /* Output to a closed pipe fails with EPIPE instead of killing sbx (and the sandbox). */
    signal(SIGPIPE, SIG_IGN);

    struct cli a = {0};
    struct parser p = {argc, argv, 1};
    const char *v;
    const struct opt *o = NULL;
    int id;
    /* Options before the command: checked against the command once it is known. */
    const struct opt **before = calloc((size_t)argc + 1, sizeof(*before));
    const char **before_arg = calloc((size_t)argc + 1, sizeof(*before_arg));
    size_t nbefore = 0;
    if (!before || !before_arg) {
        msg("out of memory");
        return EXIT_SBX;
    }

    /* Options before the command: the sandbox options, --help, --version. */
    int at = p.i;
    while ((id = next_opt(&p, NULL, 0, &v, &o)) > 0) {
        if (id == O_HELP)
            return print_help(help_main);
        if (id == O_VERSION) {
            printf("sbx %s\n", sbx_version());
            return fflush(stdout) == 0 ? 0 : EXIT_SBX;
        }
        if (apply(&a, o, v))
            return EXIT_SBX;
        before[nbefore] = o;
        before_arg[nbefore++] = argv[at];
        at = p.i;
    }
    if (id < 0)
        return EXIT_SBX;
    if (p.i >= argc) {
        fputs(help_main, stderr);
        fprintf(stderr, "\nsbx: no command given\n");
        return EXIT_SBX;
    }
    const char *name = argv[p.i++];
    if (strcmp(name, "help") == 0) {
        if (p.i >= argc)
            return print_help(help_main);
        int k = strcmp(argv[p.i], "template") == 0 ? find_command("template build")
                                                   : find_command(argv[p.i]);
        if (k < 0)
            return usage_error(NULL, "no command named '%s' (commands: " COMMAND_LIST ")",
                               argv[p.i]);
        return print_help(commands[k].help);
    }
    int k;
    if (strcmp(name, "template") == 0) {
        const char *sub = p.i < argc ? argv[p.i] : NULL;
        if (sub &&
            (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0))
            return print_help(help_template);
        if ((k = find_template_command(sub)) < 0)
            return EXIT_SBX;
        p.i++;
    } else if ((k = find_command(name)) < 0) {
        if (strcmp(name, "exec") == 0 || strcmp(name, "start") == 0)
            return usage_error(NULL, "no command named '%s'; did you mean 'sbx run'?", name);
        if (strcmp(name, "list") == 0 || strcmp(name, "ps") == 0)
            return usage_error(NULL, "no command named '%s'; did you mean 'sbx ls'?", name);
        if (strcmp(name, "build") == 0)
            return usage_error(NULL, "no command named '%s'; did you mean 'sbx template build'?",
                               name);
        return usage_error(NULL, "no command named '%s' (commands: " COMMAND_LIST ")", name);
    }
    a.cmd = commands[k].cmd;
    a.name = commands[k].name;
    for (size_t i = 0; i < nbefore; i++)
        if (!(before[i]->cmds & a.cmd))
            return usage_error(&a, "option '%s' does not apply to 'sbx %s'", before_arg[i], a.name);
    free(before);
    free(before_arg);

    /* run and shell: options, then the command (whatever follows is the command's). resume:
       the same after its PATH. cp, ls and template: options and words in any order ("--"
       ends the options). */
    char **words = calloc((size_t)argc + 1, sizeof(char *));
    if (!words) {
        msg("out of memory");
        return EXIT_SBX;
    }
    int nwords = 0, dashdash = 0;
    for (;;) {
        if (!dashdash) {
            int before_i = p.i;
            id = next_opt(&p, &a, a.cmd, &v, &o);
            if (id < 0)
                return EXIT_SBX;
            if (id == O_HELP)
                return print_help(commands[k].help);
            if (id > 0) {
                if (apply(&a, o, v))
                    return EXIT_SBX;
                continue;
            }
            if (p.i > before_i)
                dashdash = 1; /* consumed "--" */
        }
        if (p.i >= argc)
            break;
        if (a.cmd == CMD_RESUME && !a.resume_path) {
            a.resume_path = argv[p.i++];
            continue;
        }
        if (a.cmd == CMD_RUN || a.cmd == CMD_SHELL || a.cmd == CMD_RESUME) {
            while (p.i < argc)
                words[nwords++] = argv[p.i++];
            break;
        }
        words[nwords++] = argv[p.i++];
    }
    words[nwords] = NULL;
    a.words = words;
    a.nwords = nwords;

    if (a.template_name && (a.rootfs || a.kernel || a.cpus || a.memory_mib)) {
        const char *given = a.rootfs   ? "--rootfs"
                            : a.kernel ? "--kernel"
                            : a.cpus   ? "--cpus"
                                       : "--memory";
        return usage_error(&a,
                           "--template makes the sandbox from a template, which brings its own "
                           "root filesystem, kernel, vCPUs and memory: drop %s",
                           given);
    }
    if (a.cmd == CMD_RESUME) {
        if (!a.resume_path)
            return usage_error(&a, "which paused sandbox: sbx resume PATH [OPTIONS] -- CMD");
        if (!a.shell_cmd && a.nwords == 0)
            return usage_error(&a,
                               "no command given: sbx resume %s [--pause] -- CMD [ARG...] (to "
                               "discard a paused sandbox: rm -r %s)",
                               a.resume_path, a.resume_path);
        if (a.pause && a.pause_to)
            return usage_error(&a, "give --pause (to %s again) or --pause-to DIR, not both",
                               a.resume_path);
        if (a.pause)
            a.pause_to = a.resume_path;
    }
    if (a.template_dir) {
        /* sbx_snapshot() with a name saves into the default store: this makes it ours. Set
           before any thread exists (setenv is not thread-safe). */
        if (setenv("SBX_TEMPLATE_DIR", a.template_dir, 1) != 0) {
            msg("cannot set SBX_TEMPLATE_DIR: %s", strerror(errno));
            return EXIT_SBX;
        }
    }
    if (a.timeout_ms == 0)
        a.timeout_ms = SBX_NO_TIMEOUT;
    if (a.cmd != CMD_LS && a.cmd != CMD_TLS && a.cmd != CMD_TRM)
        signals_start();
    int rc = commands[k].fn(&a);
    if (fflush(stdout) != 0 && rc == 0)
        rc = EXIT_SBX;
    for (size_t i = 0; i < a.nenvs; i++)
        free((char *)a.envs[i]);
    free(a.envs);
    free(a.metadata);
    free(a.allow_out);
    free(a.deny_out);
    free(a.hosts);
    free(a.copy_in);
    free(a.copy_out);
    free(a.publish);
    free(a.build_args);
    free(a.tags);
    free(words);
    return rc;
}
