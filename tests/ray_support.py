"""A real two-node Ray cluster, started as users start one, in namespaces of its own.

``unshare -n -p -f --mount-proc``: a network namespace (only a loopback, so Ray's node
address is 127.0.0.1 and nothing leaves it) and a PID namespace (``ray stop --force`` there
sees only this cluster's processes, and the kernel ends them all when the script exits).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CLUSTER_PORT", "namespaces_refused", "run_in_cluster"]

CLUSTER_PORT = 6379
_UNSHARE = ["unshare", "-n", "-p", "-f", "--mount-proc"]


def namespaces_refused() -> str | None:
    """Why a cluster cannot be started here (the exact condition), or ``None``."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    probe = subprocess.run(
        [*_UNSHARE, "sh", "-c", "ip link set lo up"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        return (
            "`unshare -n -p -f --mount-proc sh -c 'ip link set lo up'` was refused "
            f"(exit {probe.returncode}: {probe.stderr.strip()[:200]})"
        )
    return None


def run_in_cluster(
    command: Sequence[str],
    *,
    timeout_s: float = 600.0,
    start: bool = True,
    node_tmp: Path | None = None,
    hidden: Sequence[Path] = (),
) -> tuple[int, str]:
    """Start a head (``node_a``) and a second node (``node_b``), one CPU each, with token auth;
    run ``command`` (``RAY_ADDRESS`` set to the head); stop the cluster whatever happened.

    ``start=False`` runs ``command`` in the same namespaces with no cluster at all (a local
    Ray instance started there keeps its files in the cluster's own temporary folder).
    ``node_tmp``: each node's ``TMPDIR`` (so its workers' scratch) is ``node_tmp/node_a`` or
    ``node_tmp/node_b``. ``hidden``: folders the nodes and their workers do not see, as on
    machines that do not share the driver's disk (each node starts in a mount namespace of its
    own with an empty tmpfs over each). Returns ``command``'s exit status and everything the
    script printed."""
    ray = str(Path(sys.executable).with_name("ray"))
    # A short folder: Ray's socket paths must stay under the 107-character limit.
    home = Path(tempfile.mkdtemp(prefix="rayc", dir="/tmp"))
    temp = home / "t"
    address = f"127.0.0.1:{CLUSTER_PORT}"
    common = (
        f"--num-cpus 1 --num-gpus 0 --disable-usage-stats --temp-dir {temp} "
        f"--node-ip-address 127.0.0.1"
    )

    def node(name: str, how: str) -> str:
        """The shell line that starts one node, in its own view of the disk."""
        start_ray = f"{ray} start {how} --resources '{{\"{name}\": 1}}' {common}"
        if node_tmp is not None:
            scratch = node_tmp / name
            scratch.mkdir(parents=True, exist_ok=True)
            start_ray = f"env TMPDIR={shlex.quote(str(scratch))} {start_ray}"
        if hidden:
            for folder in hidden:
                folder.mkdir(parents=True, exist_ok=True)
            mounts = " && ".join(f"mount -t tmpfs tmpfs {shlex.quote(str(f))}" for f in hidden)
            start_ray = f"unshare -m sh -c {shlex.quote(f'{mounts} && exec {start_ray}')}"
        log = f'"$HOME/{name}.log"'
        return (
            f"{'' if start else ': '}{start_ray} >{log} 2>&1 || "
            f'{{ echo "{name} did not start:"; tail -20 {log}; exit 91; }}'
        )

    script = f"""
set -u
ip link set lo up
export HOME={shlex.quote(str(home))} RAY_AUTH_MODE=token RAY_ADDRESS={address}
export RAY_USAGE_STATS_ENABLED=0 RAY_TMPDIR={shlex.quote(str(temp))}
{ray} get-auth-token --generate >/dev/null || exit 90
export RAY_AUTH_TOKEN="$({ray} get-auth-token)"
cleanup() {{ {ray} stop --force >/dev/null 2>&1; }}
trap cleanup EXIT
{node("node_a", f"--head --port {CLUSTER_PORT} --include-dashboard false")}
{node("node_b", f"--address {address}")}
{shlex.join(command)}
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    try:
        done = subprocess.run(
            [*_UNSHARE, "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return done.returncode, done.stdout + done.stderr
