// SPDX-License-Identifier: Apache-2.0
/* envd: processes and PTYs (placeholder until implemented). */
#include "envd.h"

void proc_request(struct server *s, struct conn *c, const Sbx__Agent__Frame *f)
{
    conn_error(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_UNSUPPORTED, 0, "not implemented");
}

void proc_reaped(struct server *s, int pid, int status)
{
}

void proc_tick(struct server *s)
{
}
