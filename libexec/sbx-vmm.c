// SPDX-License-Identifier: Apache-2.0
/* sbx-vmm: the VMM process of a sandbox in the isolated mode (lib/isolate/isolate.h). Started
   by the library only, with its options on fd 3 and its control socket on fd 4. */
#include <unistd.h>

#include "isolate/isolate.h"

int main(void)
{
    _exit(iso_child_main()); /* no atexit handlers: the jail's seccomp filter is in place */
}
