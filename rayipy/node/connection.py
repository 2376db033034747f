"""Where a cluster is and how to join it: the connection file, passwords, node addresses.

``rayipy start`` writes one *connection file* per machine,
``$RAYIPY_HOME/HOSTNAME/cluster.json`` (``~/.rayipy`` by default), mode 0600 in a 0700
directory. It records the head's address,
the cluster key (and the password it comes from, for humans), and the processes
``rayipy start`` started here, so that ``rayipy stop`` stops exactly those and
``init(address="auto")`` finds the cluster. It holds a secret: nothing else writes the
key anywhere (the processes get it in their environment, never on a command line).

Addresses. A cluster that spans machines must advertise addresses the other machines can
reach: the head binds to the node's IP, and each node agent (and the workers it starts)
binds to its own. ``default_node_ip`` guesses this machine's IP the way Ray does (the
source address of the route to the outside), ``local_ip_toward`` the address a joining
machine uses to reach the head.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import secrets
import socket
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from rayipy import exceptions
from rayipy.protocol.wire import DEFAULT_SALT
from rayipy.transport.endpoint import ask_salt

DEFAULT_PORT = 6379
HOME_ENV = "RAYIPY_HOME"
ADDRESS_ENV = "RAYIPY_ADDRESS"
PASSWORD_ENV = "RAYIPY_PASSWORD"
# A job's entrypoint on a cluster with no connection file on its machine (a local
# cluster) gets the key here, beside $RAYIPY_ADDRESS (rayipy/job/bootstrap.py).
JOB_KEY_ENV = "RAYIPY_JOB_CLUSTER_KEY"
FILE_NAME = "cluster.json"


def rayipy_home() -> Path:
    """The user's rayipy directory: ``$RAYIPY_HOME``, else ``~/.rayipy``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".rayipy").expanduser().absolute()


def machine_dir() -> Path:
    """This machine's part of the rayipy directory, named by its host name: a home
    directory shared by the cluster's machines (NFS) must not mix their processes."""
    return rayipy_home() / socket.gethostname()


def make_private_dir(path: Path) -> None:
    for directory in (path.parent, path):
        directory.mkdir(mode=0o700, exist_ok=True)


# scrypt's cost: about 100 ms and 32 MiB here, once per process (the key is cached). A
# guess at the password costs an attacker as much; one SHA-256 (before) cost 5 us.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 2


@functools.lru_cache(maxsize=8)
def key_from_password(password: str, salt: bytes = DEFAULT_SALT) -> bytes:
    """The 256-bit cluster key, derived from a human-typed password and the cluster's
    salt (public, random per cluster made by ``rayipy start --head``; a peer asks the
    head for it, ``key_for``) with scrypt: slow on purpose, against guessing."""
    return hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                          maxmem=64 * 2**20, dklen=32)


def key_for(head_address: str, password: str, timeout: float = 10.0) -> bytes:
    """The key of the cluster whose head is at ``tcp://host:port``, from its password:
    the head's salt is asked first (``transport.endpoint.ask_salt``). Raises
    ConnectionError when no head answers."""
    try:
        salt = ask_salt(head_address, timeout)
    except TimeoutError as e:
        raise ConnectionError(str(e)) from None
    return key_from_password(password, salt)


def read_password_file(path: str) -> str:
    """The password in a file (its first line), for ``--password-file``: unlike
    ``--password`` it does not show in ``ps``."""
    try:
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except OSError as e:
        raise ValueError(f"cannot read the password file {path}: {e.strerror}") from None
    if not password:
        raise ValueError(f"the password file {path} is empty")
    return password


def new_password() -> str:
    """A random password (128 bits), safe to paste into a shell unquoted."""
    return secrets.token_hex(16)


# -- this machine's processes ----------------------------------------------------------------

def process_start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, Linux), to tell it from a reused pid.

    None if there is no such process, or it is a zombie (it has exited; only its parent
    has not collected it), or the system has no /proc.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()   # the name may hold spaces and ')'
    if fields[0] == b"Z":
        return None
    return fields[19].decode()


@dataclass
class ProcessRecord:
    """One process ``rayipy start`` started on this machine."""

    role: str           # "head" or "agent"
    pid: int
    started: str | None  # process_start_time when recorded
    log: str

    def alive(self) -> bool:
        if self.started is not None or os.path.isdir("/proc"):
            return self.started is not None and process_start_time(self.pid) == self.started
        try:  # no /proc: trust the pid
            os.kill(self.pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


@dataclass
class ClusterFile:
    """The contents of the connection file."""

    address: str            # the head, "host:port"
    key: str                # hex; what every message is signed with
    password: str           # what the key was derived from
    head: bool              # this machine runs the head
    node_ip: str            # the address this machine's node agent advertises
    node_id: str
    dashboard_url: str = ""
    processes: list[ProcessRecord] = field(default_factory=list)

    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)

    def alive(self) -> list[ProcessRecord]:
        return [p for p in self.processes if p.alive()]


def connection_path(home: Path | None = None) -> Path:
    return (home or machine_dir()) / FILE_NAME


def read_cluster_file(home: Path | None = None) -> ClusterFile | None:
    """The connection file of this machine, or None if there is none."""
    path = connection_path(home)
    try:
        data = json.loads(path.read_text())
        data["processes"] = [ProcessRecord(**p) for p in data.get("processes", [])]
        return ClusterFile(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as e:
        raise exceptions.RayipySystemError(
            f"the rayipy connection file {path} is damaged ({e}); remove it (after stopping "
            f"any rayipy processes by hand) and start again") from None


def write_cluster_file(info: ClusterFile, home: Path | None = None) -> Path:
    """Write the file atomically, readable by its owner only (it holds the key)."""
    home = home or machine_dir()
    make_private_dir(home)
    path = connection_path(home)
    fd, tmp = tempfile.mkstemp(dir=home, prefix=".cluster-", suffix=".json")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(info), f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def remove_cluster_file(home: Path | None = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        connection_path(home).unlink()


@contextlib.contextmanager
def locked(home: Path | None = None) -> Iterator[None]:
    """Only one ``rayipy start`` / ``rayipy stop`` at a time per rayipy directory."""
    home = home or machine_dir()
    make_private_dir(home)
    with open(home / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def running_cluster(home: Path | None = None) -> ClusterFile | None:
    """The cluster ``rayipy start`` started on this machine, if one of its processes lives."""
    info = read_cluster_file(home)
    return info if info is not None and info.alive() else None


# -- addresses --------------------------------------------------------------------------------

def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"tcp://host:port"``) -> (host, port), with a clear error."""
    if not isinstance(address, str):
        raise TypeError(f"address must be a string like 'host:6379', got {address!r}")
    if "://" in address and not address.startswith("tcp://"):
        raise ValueError(f"address {address!r}: only 'host:port' is supported (Ray's "
                         f"'ray://' client addresses are not); give the head's address as "
                         f"printed by `rayipy start --head`")
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address must look like 'host:port' (e.g. '10.0.0.1:{DEFAULT_PORT}'), "
                         f"got {address!r}")
    return host, int(port)


def resolve_host(host: str) -> str:
    """The IPv4 address of ``host``, with an error that names the host."""
    try:
        return socket.gethostbyname(host)
    except OSError as e:
        raise exceptions.ClusterNotFoundError(f"cannot resolve the host name {host!r}: {e}") from None


def local_ip_toward(host: str, port: int = DEFAULT_PORT) -> str:
    """This machine's address on the route to ``host`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((resolve_host(host), port))
        return s.getsockname()[0]


def default_node_ip() -> str:
    """This machine's IP as other machines see it, as Ray guesses it.

    The source address of the route to a public address, else what the host name
    resolves to, else loopback (a machine with no network: only itself can join).
    """
    with contextlib.suppress(OSError):
        return local_ip_toward("8.8.8.8", 80)
    with contextlib.suppress(OSError):
        return socket.gethostbyname(socket.gethostname())
    return "127.0.0.1"


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "localhost"


def check_reachable(host: str, port: int, timeout: float = 3.0) -> None:
    """Fail at once, saying why, when nothing accepts connections at ``host:port``.

    ZeroMQ would retry a dead address silently forever; a plain TCP connection
    tells a refused port or an unreachable host within ``timeout``.
    """
    try:
        socket.create_connection((resolve_host(host), port), timeout=timeout).close()
    except OSError as e:
        reason = f"no answer within {timeout:g} s" if isinstance(e, socket.timeout) else e.strerror or e
        raise exceptions.ClusterNotFoundError(
            f"cannot reach a rayipy head at {host}:{port} ({reason}): is the cluster running "
            f"there (`rayipy start --head`), and are the address and port right?") from None


def check_bindable(ip: str, port: int) -> int:
    """Fail with a clear message when the head could not listen on ``ip:port``.

    Returns the port, a free one when ``port`` is 0 (free a moment ago: the caller
    retries if it is taken meanwhile).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError as e:
            if e.errno == 98:  # EADDRINUSE
                raise OSError(f"port {port} on {ip} is already in use (another rayipy head, "
                              f"or another server): choose another with --port") from None
            if e.errno == 99:  # EADDRNOTAVAIL
                raise OSError(f"{ip} is not an address of this machine: give one of its own "
                              f"addresses with --node-ip-address") from None
            raise OSError(f"cannot listen on {ip}:{port}: {e.strerror or e}") from None
        return s.getsockname()[1]


# -- what init() connects to ---------------------------------------------------------------

@dataclass
class Target:
    """A running cluster to connect to: ``tcp://host:port`` and its key."""

    head_address: str
    key: bytes           # b"" when it comes from ``password`` (``cluster_key``)
    found_in: str = ""   # where the address came from, for error messages
    # this machine's node, from its connection file: a driver here runs on it, and says
    # so (get_runtime_context().get_node_id()), as a local cluster's driver does
    node_id: bytes = b""
    password: str | None = None

    def cluster_key(self) -> bytes:
        """The key: as recorded, or derived from the password with the head's salt
        (which asks the head)."""
        return self.key if self.password is None else key_for(self.head_address, self.password)


def resolve(address: str | None, password: str | None) -> Target | None:
    """What ``init(address, password)`` connects to, or None to start a local cluster.

    Ray's rules: no address means ``$RAYIPY_ADDRESS``, else the cluster ``rayipy start``
    started on this machine, else a new local cluster; ``"auto"`` is the same but raises
    when there is no cluster to find; ``"local"`` always starts a new local cluster; a
    ``"host:port"`` needs the password (or ``$RAYIPY_PASSWORD``), unless it is the
    address in this machine's connection file.
    """
    from_env = False
    if address is None and os.environ.get(ADDRESS_ENV):
        address, from_env = os.environ[ADDRESS_ENV], True
    if address == "local":
        return None
    if address is None or address == "auto":
        info = running_cluster()
        if info is None:
            if address is None:
                return None
            raise exceptions.ClusterNotFoundError(_not_found_message())
        if password is not None:
            return Target(f"tcp://{info.address}", b"", str(connection_path()), _node_id(info),
                          password=password)
        return Target(f"tcp://{info.address}", info.key_bytes(), str(connection_path()),
                      _node_id(info))
    host, port = parse_address(address)
    where = f"${ADDRESS_ENV}" if from_env else "address="
    if from_env and password is None and os.environ.get(JOB_KEY_ENV):
        return Target(f"tcp://{host}:{port}", bytes.fromhex(os.environ[JOB_KEY_ENV]),
                      f"${ADDRESS_ENV} and ${JOB_KEY_ENV} (a job's)")
    if password is None:
        password = os.environ.get(PASSWORD_ENV) or None
    if password is not None:
        return Target(f"tcp://{host}:{port}", b"", where, password=password)
    info = read_cluster_file()
    if info is not None and same_address(info.address, host, port):
        return Target(f"tcp://{host}:{port}", info.key_bytes(), str(connection_path()),
                      _node_id(info))
    raise ValueError(f"connecting to {host}:{port} needs the cluster's password: "
                     f"init(address={address!r}, password='...') (printed by `rayipy start --head`)")


def _node_id(info: ClusterFile) -> bytes:
    """The node id the connection file records (b"" if it is not hex)."""
    try:
        return bytes.fromhex(info.node_id)
    except (TypeError, ValueError):
        return b""


def same_address(recorded: str, host: str, port: int) -> bool:
    rhost, rport = parse_address(recorded)
    if rport != port:
        return False
    with contextlib.suppress(ConnectionError):
        return resolve_host(rhost) == resolve_host(host)
    return rhost == host


def _not_found_message() -> str:
    path = connection_path()
    info = None
    with contextlib.suppress(exceptions.RayipySystemError):
        info = read_cluster_file()
    if info is not None:
        return (f"the rayipy cluster recorded in {path} ({info.address}) is no longer running "
                f"on this machine: start it again with `rayipy start`, or give its address")
    return (f"no rayipy cluster was started on this machine (no {path}): start one with "
            f"`rayipy start --head`, give an address (init(address='host:port', "
            f"password=...)), or call init() for a local cluster")
