"""Free TCP ports on 127.0.0.1 for test servers, from below the kernel's ephemeral range.

Ports the kernel hands out for bind(0) come from ip_local_port_range, the same range it gives the
local ports of outgoing connections; one of those can take the port before our server binds it
("Address already in use"). Ports below the range are only ever taken by other listeners.
tests/support/services.rs does the same for the Rust tests. Run as a script, prints one port
(scripts/lib/common.sh uses it that way).
"""

from __future__ import annotations

import os
import random
import socket
import time


def _window() -> range:
    """Ports outside ip_local_port_range: the 12,000 below it, or above it when it starts low."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first, last = (int(n) for n in f.read().split())
    except (OSError, ValueError):
        first, last = 32768, 60999
    if first >= 10000:
        return range(max(first - 12000, 8000), first)
    return range(min(last + 1, 64000), 65535)


# This process's own order through the window, so that two calls never return the same port.
_candidates = list(_window())
random.Random(os.getpid() ^ time.monotonic_ns()).shuffle(_candidates)
_next = iter(_candidates)


def free_port() -> int:
    """A port free a moment ago; racy only against other listeners, so bind it soon."""
    for port in _next:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    print(free_port())
