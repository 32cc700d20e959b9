# SPDX-License-Identifier: Apache-2.0
"""Base of the sub-handles (process, file, watch): closed once, before their sandbox, never after."""
from __future__ import annotations

import threading
import weakref
from typing import Any, List, Optional

from . import _native as N
from .exceptions import SandboxException


def _close_box(box: List[Optional[int]], close_fn: str) -> None:
    p, box[0] = box[0], None
    if p:
        getattr(N.lib(), close_fn)(p)


class SubHandle:
    """Holds a C sub-handle pointer in a box shared with its finalizer and the sandbox's
    destruction, so that whichever comes first closes it and the others see None."""

    _close_fn = ""

    def __init__(self, sandbox: Any, ptr: int) -> None:
        self._sandbox = sandbox
        self._box: List[Optional[int]] = [ptr]
        self._lock = threading.RLock()  # a C sub-handle is used by one thread at a time
        sandbox._register(self)
        self._fin = weakref.finalize(
            self, SubHandle._gc_close, sandbox._guard, self._box, self._close_fn
        )

    @staticmethod
    def _gc_close(guard: Any, box: List[Optional[int]], close_fn: str) -> None:
        try:
            guard.call(_close_box, box, close_fn, blocking=False)
        except Exception:
            pass  # the sandbox is being destroyed: it closes its handles itself

    def _release(self) -> None:
        """Called by the sandbox's destruction (no call in flight)."""
        _close_box(self._box, self._close_fn)

    def _p(self) -> int:
        p = self._box[0]
        if p is None:
            raise SandboxException("the handle is closed")
        return p

    @property
    def closed(self) -> bool:
        """True once the handle was closed (or its sandbox killed)."""
        return self._box[0] is None

    def _close(self) -> None:
        self._fin.detach()
        if self._box[0] is None:
            return
        try:
            self._sandbox._call(_close_box, self._box, self._close_fn, blocking=False)
        except SandboxException:
            return  # being killed: the sandbox closes it (it is still registered)
        self._sandbox._unregister(self)
