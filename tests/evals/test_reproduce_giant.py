"""README's "Reproduce GIANT's table", run as written: its bash block, line for line.

Only what lies outside medagent is stood in for: ``make install`` (the test runs in the
installed package), ``hf download`` (copies a MultiPathQA CSV naming the stub's slides), the
GDC / GTEx / Kaggle hosts (`pull_support.SourceStub` on loopback) and OpenAI (a stub
OpenAI-compatible server that answers every request "1"). A flag renamed, a command that
no longer resumes or a report without the paper's layout fails here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medagent.testing import StubOpenAIServer
from pull_support import SourceStub, StubFile, stub_files, write_csv

README = Path(__file__).resolve().parents[2] / "README.md"
ANSWER = {"reasoning": "the features fit", "action": "answer", "answer": "1"}


def readme_block(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split(f"### {heading}\n", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, f"README section {heading!r} has no bash block"
    return match.group(1)


def shim(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[StubFile]:
    return stub_files(tmp_path_factory.mktemp("slides"))


def test_readme_commands_go_from_a_checkout_to_the_papers_table(
    tmp_path: Path, files: list[StubFile]
) -> None:
    block = readme_block("Reproduce GIANT's table")
    (tmp_path / "fixtures").mkdir()
    csv = write_csv(tmp_path / "fixtures" / "MultiPathQA.csv", files)
    work = tmp_path / "checkout"
    work.mkdir()
    shim(tmp_path / "bin" / "make", "import sys\nassert sys.argv[1:] == ['install']\n")
    shim(
        work / ".venv" / "bin" / "hf",
        "import shutil, sys\nfrom pathlib import Path\n"
        "args = sys.argv[1:]\n"
        "assert args[:3] == ['download', 'tbuckley/MultiPathQA', 'MultiPathQA.csv'], args\n"
        "target = Path(args[args.index('--local-dir') + 1])\n"
        "target.mkdir(parents=True, exist_ok=True)\n"
        f"shutil.copy({str(csv)!r}, target / 'MultiPathQA.csv')\n",
    )
    with SourceStub(files) as sources, StubOpenAIServer(default_text=json.dumps(ANSWER)) as llm:
        # OpenAI's address in the README is replaced by the stub's, nothing else.
        shim(
            work / ".venv" / "bin" / "medagent",
            "import os, sys\n"
            f"args = [a.replace('https://api.openai.com/v1', {llm.base_url!r}) "
            "for a in sys.argv[1:]]\n"
            "os.execv(sys.executable, [sys.executable, '-m', 'medagent', *args])\n",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
        env.update(sources.env())
        env.update(
            PATH=f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}",
            COLUMNS="200",
            HF_HUB_OFFLINE="1",
            KAGGLE_USERNAME="stub-user",
            KAGGLE_KEY="stub-key",
        )
        done = subprocess.run(
            ["bash", "-c", block],  # as pasted into a shell
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "4 done, 0 skipped" in done.stdout  # every slide pulled
    for method in ("thumbnail", "patches", "giant"):
        lines = (work / "runs" / f"gpt-5-{method}" / "results.jsonl").read_text().splitlines()
        results = [json.loads(line) for line in lines]
        assert len(results) == 5, method
        # The stub's small slides leave the patch baseline too little tissue on some: those
        # items fail with the reason, and the loop goes on to GIANT.
        failed = [r["error"] for r in results if r["status"] != "ok"]
        assert method == "patches" or not failed, failed
        assert all(error.startswith("no tissue patches") for error in failed), failed
    page = (work / "giant-table.html").read_text(encoding="utf-8")
    # The paper's layout with its own row marked published (ExpertVQA: the stub CSV scores
    # every task by accuracy, so only that published number matches), and paired comparisons.
    assert "GIANT (GPT-5) — published" in page and "57.0" in page and "McNemar" in page
    for method in ("thumbnail", "patches", "giant"):
        assert f"gpt-5-{method}" in page
