"""Names shared by the dispatcher layer and both cores.

They live in one module so that ``asyncore.ExitNow`` is the same class
whichever core is active: programs catch it around ``loop()``.
"""

import errno
import select
import sys

__all__ = [
    "ExitNow",
    "DISCONNECTED",
    "RERAISED",
    "PYTIME_TOO_LARGE",
    "POLLIN",
    "POLLPRI",
    "POLLOUT",
    "POLL_CLOSE",
]


class ExitNow(Exception):
    """Raised by a handler to leave ``loop()``; dispatch lets it through."""

    __module__ = "asyncore"


# Errnos that mean "the peer is gone": they end in handle_close(), not handle_error().
DISCONNECTED = frozenset(
    {
        errno.ECONNRESET,
        errno.ENOTCONN,
        errno.ESHUTDOWN,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.EBADF,
    }
)

# Exceptions that dispatch never hands to handle_error(): they leave the loop.
RERAISED = (ExitNow, KeyboardInterrupt, SystemExit)

# poll(2) flags as the select module spells them; Windows has no poll, and
# then readwrite() still needs the values, which are the same on every POSIX.
POLLIN = getattr(select, "POLLIN", 0x001)
POLLPRI = getattr(select, "POLLPRI", 0x002)
POLLOUT = getattr(select, "POLLOUT", 0x004)
POLLERR = getattr(select, "POLLERR", 0x008)
POLLHUP = getattr(select, "POLLHUP", 0x010)
POLLNVAL = getattr(select, "POLLNVAL", 0x020)
# Any of these after a poll means the channel is finished.
POLL_CLOSE = POLLHUP | POLLERR | POLLNVAL

# CPython's own words when a timeout overflows its internal time type; the
# type was renamed in 3.13, and the message with it.
PYTIME_TOO_LARGE = "timestamp too large to convert to C %s" % (
    "_PyTime_t" if sys.version_info < (3, 13) else "PyTime_t"
)
