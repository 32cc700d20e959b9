/* SPDX-License-Identifier: Apache-2.0 */
/* The code interpreter's host side (lib/ops/code.c): what the fuzz target reaches. */
#ifndef SBX_OPS_CODE_H
#define SBX_OPS_CODE_H

#include "agent/conn.h"
#include "sandbox.h"

/* Reads an execution's answers (JSON lines, as the service sends them after an execute
   request) from fd until the end answer, into ex (zeroed first; release it with
   sbx_execution_free()), calling o's callbacks. Errors through call_fail. fd stays open. */
int code_read_execution(struct call *c, int fd, const sbx_run_code_options *o,
                        sbx_execution *ex);

#endif
