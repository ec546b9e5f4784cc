"""Joining a Ray cluster, or starting a local one, for every ``--executor ray`` command.

Shared by the eval runner and the index builder, so both say the same one line when a
cluster cannot be reached. A local instance is bound to loopback: left to itself Ray picks
the machine's outward interface as the node address (it asks the routing table for the way
to a public address), which a laptop on a hospital network should not open ports on.
"""

from __future__ import annotations

import socket
from typing import Any

from medagent.errors import DependencyMissingError, MedagentError

__all__ = ["LOOPBACK", "check_reachable", "connect_ray"]

LOOPBACK = "127.0.0.1"


def connect_ray(address: str | None, num_cpus: int, *, what: str = "--executor ray") -> bool:
    """Join the cluster at ``address`` (or start a local instance with ``num_cpus`` CPUs on
    loopback); True when this call did, so the caller knows to ``ray.shutdown()``."""
    try:
        import ray
    except ImportError:
        raise DependencyMissingError("ray", "distributed", what) from None
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "ignore_reinit_error": True,
    }
    if address:
        check_reachable(address)  # ray.init retries an unreachable address for ever
        options["address"] = address
    else:
        options["num_cpus"] = max(1, num_cpus)
        options["_node_ip_address"] = LOOPBACK
    try:
        ray.init(**options)
    except Exception as exc:  # Ray says it with a ConnectionError, RuntimeError, ValueError…
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[0][:300] if lines else type(exc).__name__
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise MedagentError(f"cannot reach {where}: {reason}") from None
    return True


def check_reachable(address: str) -> None:
    """One line, soon, when nothing listens at a ``host:port`` address (other forms, such as
    ``auto`` or ``ray://``, are left to Ray)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in host or not host:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=10):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise MedagentError(f"cannot reach the Ray cluster at {address}: {reason}") from None
