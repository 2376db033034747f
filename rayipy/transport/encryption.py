"""Which connections are encrypted: the one definition, for ZeroMQ and plain sockets.

``RAYIPY_ENCRYPT`` in a process's environment says what it wants:

- ``auto`` (the default): encrypt every connection to another machine; leave in clear
  a connection that stays on this machine (a Unix socket, a loopback address, or an
  address of this machine's own network interfaces, in this network namespace).
- ``always``: encrypt every connection, on this machine too.
- ``never``: do not ask for encryption.

Each end of a connection sends its wish (one byte) in its handshake, and the connection
is encrypted when **either** end wishes it: so one process set to ``always`` is enough,
and ``never`` leaves traffic in clear only where the peers agree (set it for every
process of the cluster: ``rayipy start`` and the driver pass their environment on to
the processes they start). The agreed answer enters the session key derivation
(``wire.Signer.session``): a man in the middle who flips a wish gives the two ends
different keys, and the first message fails its MAC.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket

ENV = "RAYIPY_ENCRYPT"
MODES = ("auto", "always", "never")


def mode() -> str:
    """This process's setting (``RAYIPY_ENCRYPT``); ValueError for an unknown one."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


def wants(peer_ip: str | None) -> bool:
    """Whether this process asks to encrypt a connection to ``peer_ip`` (None: a Unix
    socket, which never leaves the machine)."""
    setting = mode()
    if setting != "auto":
        return setting == "always"
    return peer_ip is not None and not on_this_machine(peer_ip)


@functools.lru_cache(maxsize=1024)
def on_this_machine(ip: str) -> bool:
    """``ip`` is a loopback address or one of this machine's (this network namespace's)
    own: traffic to it never crosses a wire. Anything unparsable counts as remote."""
    host = ip.strip("[]")
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if address.is_loopback:
        return True
    if getattr(address, "ipv4_mapped", None) is not None:
        return on_this_machine(str(address.ipv4_mapped))   # type: ignore[union-attr]
    # The kernel binds only to addresses of this namespace's interfaces.
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))
            return True
        except OSError:
            return False
