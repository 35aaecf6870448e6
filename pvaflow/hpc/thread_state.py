"""Keep the Python thread state of the native threads that deliver updates.

pvaccess calls a monitor's Python callback from its own native thread
(``TCP-rx``), wrapping each call in ``PyGILState_Ensure()`` /
``PyGILState_Release()``. Python does not know that thread, so every Ensure
builds a new thread state and every Release destroys it again: per update a
thread-state allocation, an ``mmap``/``munmap`` pair for the frame stack, a
page fault and a ``gettid`` call, plus a TLB shoot-down on the other cores.
For a 128x128 frame that was about 40% of a bare monitor's CPU per frame
(streamingFramework.md, section 19).

:func:`keep_thread_state`, called from inside a callback, raises the calling
thread's Ensure counter once more. The Release that ends the callback then
leaves the thread state in place, and every later callback on the same
thread reuses it. The price is one thread state (a few kilobytes) per
delivering thread, kept until the process exits; pvaccess starts a new
thread per connection, so a reconnect keeps one more.

Callbacks that several native threads may run (an RPC service gets one
server thread per client connection) call :func:`keep_thread_state_once`,
which checks a ``threading.local`` first: its attributes live in the thread
state, so the flag is still set on a later call only once that state is kept.

pvaccess keeps the value that Ensure returned in one process-wide variable
(``PyGilManager::gilState``) and hands it to the Release, so a thread can
release with another thread's value. With a fresh thread state that did no
harm to a delivering thread: its Release destroys the state and drops the
GIL whatever the value. With a kept state, a "locked" value written by
another thread in the meantime would make the Release keep the GIL, and the
process would hang. So every callback of a kept thread ends by writing
"unlocked", the true value for any native thread, through
:data:`RELEASE_GUARD` (``RELEASE_GUARD.value = UNLOCKED``, about 28 ns).
Where that variable cannot be found, nothing is kept.

Set ``PVAFLOW_KEEP_THREAD_STATE=0`` to turn this off.
"""

import ctypes
import os
import threading

UNLOCKED = 1  # PyGILState_UNLOCKED


class _NoGuard:
    """Stands in for pvaccess's variable when nothing is kept: stores go nowhere."""

    value = UNLOCKED


def _shared_gil_state():
    """pvaccess's process-wide ``PyGilManager::gilState`` (a C int), or None."""
    try:
        from pvaccess import pvaccess as extension
        library = ctypes.CDLL(extension.__file__)
        return ctypes.c_int.in_dll(library, "_ZN12PyGilManager8gilStateE")
    except (ImportError, OSError, ValueError, AttributeError):
        return None


_GIL_STATE = _shared_gil_state()
ENABLED = (os.environ.get("PVAFLOW_KEEP_THREAD_STATE", "1").strip() != "0"
           and _GIL_STATE is not None)
# Callbacks end with RELEASE_GUARD.value = UNLOCKED (see the module docstring).
RELEASE_GUARD = _GIL_STATE if ENABLED else _NoGuard()

_ensure = ctypes.pythonapi.PyGILState_Ensure
_ensure.argtypes = []
_ensure.restype = ctypes.c_int

kept = 0  # thread states kept so far (for tests and diagnostics)
_here = threading.local()  # .kept: this thread's state is kept


def keep_thread_state():
    """Keep the calling thread's thread state after the current callback returns.

    Call it from a callback that a native thread runs, once per thread (a
    second call on the same thread does no harm). Returns True when the
    state is now kept, False when turned off.
    """
    global kept
    if not ENABLED:
        return False
    _ensure()  # the GIL is held: this only raises the counter
    kept += 1
    return True


def keep_thread_state_once():
    """:func:`keep_thread_state` unless the calling thread's state is kept already.

    Cheap enough for every call of a callback (one attribute lookup, no
    allocation). Returns True when the state is kept.
    """
    if getattr(_here, "kept", False):
        return True
    if not keep_thread_state():
        return False
    _here.kept = True
    return True
