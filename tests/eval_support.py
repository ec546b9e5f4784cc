"""Eval runs as a user starts them: a small image dataset, ``eval run`` in a child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from medagent.testing import StubOpenAIServer

__all__ = ["default_sigint", "start_and_wait", "stub_run_args", "vqa_items"]


def vqa_items(folder: Path, count: int) -> Path:
    """``count`` yes/no items (ids q0.., task ``demo``, answer yes), a 48 px PNG each: the JSONL."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        Image.new("RGB", (48, 48), (i * 10, 80, 160)).save(folder / f"img{i}.png")
        lines.append(
            json.dumps(
                {
                    "id": f"q{i}",
                    "task": "demo",
                    "images": [f"img{i}.png"],
                    "question": f"Question number {i}?",
                    "answer": "yes",
                    "metric": "yes_no",
                }
            )
        )
    path = folder / "items.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def one_image_item(folder: Path, reply: dict[str, object]) -> tuple[Path, Path]:
    """A JSONL of one image question under ``folder``, and a scripted-backend reply file that
    answers it with ``reply``: (items file, replies file)."""
    data = folder / "data"
    data.mkdir()
    Image.new("RGB", (24, 24)).save(data / "a.png")
    line = {"id": "a", "task": "t", "images": ["a.png"], "question": "?", "answer": "yes"}
    (data / "items.jsonl").write_text(json.dumps(line) + "\n")
    script = folder / "replies.jsonl"
    script.write_text(json.dumps(reply) + "\n")
    return data / "items.jsonl", script


def stub_run_args(data: Path, run_dir: Path, concurrency: int) -> list[str]:
    """``eval run`` of the vqa method over ``data`` against a stub server (--base-url added)."""
    return vqa_run_args(data, run_dir, concurrency, "--model", "stub-model")


def vqa_run_args(data: Path, run_dir: Path, concurrency: int, *flags: str) -> list[str]:
    """``eval run`` of the vqa method over the JSONL ``data`` into ``run_dir``; ``flags``: the
    backend's and executor's."""
    return [
        "eval",
        "run",
        "--dataset",
        "jsonl",
        "--data",
        str(data),
        "--method",
        "vqa",
        *flags,
        "--concurrency",
        str(concurrency),
        "--out",
        str(run_dir),
    ]


def medagent_command(*args: str) -> list[str]:
    """``python -m medagent ARGS`` with this interpreter, for a subprocess."""
    return [sys.executable, "-m", "medagent", *args]


def default_sigint() -> None:
    """In the child before exec: SIGINT as a terminal would deliver it, whatever pytest got.

    Started from the background of a non-interactive shell (``make test &``, CI runners),
    pytest inherits SIGINT as ignored and so would every child it starts."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_and_wait(
    args: list[str],
    server: StubOpenAIServer,
    run_dir: Path,
    lines: int,
    sigint: Callable[[], None] = default_sigint,
) -> subprocess.Popen[str]:
    """Start ``medagent ARGS`` against ``server``; return once ``lines`` results are written.

    ``sigint`` runs in the child before exec (the SIGINT disposition it starts with)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "medagent", *args, "--base-url", server.base_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=sigint,
    )
    results = run_dir / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        results.exists() and len(results.read_text().splitlines()) >= lines
    ):
        time.sleep(0.05)
    return process
