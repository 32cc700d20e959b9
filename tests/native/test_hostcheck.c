// SPDX-License-Identifier: Apache-2.0
/* Host checks run on this machine's own /dev/kvm: a PVM /dev/kvm must fail fast and clearly. */
#include <unistd.h>

#include "harness.h"

SBX_TEST(pvm_fails_fast)
{
    if (access("/sys/module/kvm_pvm", F_OK) != 0) {
        printf("SKIP: this host's /dev/kvm is not PVM (no /sys/module/kvm_pvm)\n");
        exit(ITEST_SKIP);
    }
    sbx_options o = itest_options("test");
    sbx *sb = NULL;
    double t0 = itest_ms();
    int r = sbx_create(&sb, &o);
    double took = itest_ms() - t0;
    fprintf(stderr, "rc %d after %.1f ms: %s\n", r, took, sbx_errmsg(sb));
    if (r == 0) {
        /* A PVM host whose CPU also exposes vmx/svm can boot: nothing to refuse. */
        printf("SKIP: this PVM host boots standard guests\n");
        sbx_destroy(sb);
        exit(ITEST_SKIP);
    }
    CHECK_RC(sb, r, SBX_ENOKVM);
    CHECK(strstr(sbx_errmsg(sb), "PVM") != NULL);
    CHECK(took < 1000);
    sbx_destroy(sb);
}

ITEST_MAIN(ITEST(pvm_fails_fast))
