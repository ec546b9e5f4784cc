"""`medagent data pull multipathqa` against loopback stubs of the GDC, GTEx and Kaggle."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cli_support import medagent
from medagent.errors import ConfigError
from medagent.evals.datasets import load_multipathqa
from medagent.evals.pull import (
    PullPolicy,
    PullSources,
    kaggle_credentials,
    plan_multipathqa,
    pull_files,
)
from medagent.testing import free_port
from pull_support import KAGGLE_USER, SourceStub, StubFile, stub_files, write_csv

FAST = PullPolicy(jobs=2, retries=3, backoff_s=0.05, timeout_s=30)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[StubFile]:
    return stub_files(tmp_path_factory.mktemp("slides"))


def _sources(stub: SourceStub, kaggle: bool = True) -> PullSources:
    env = stub.env()
    return PullSources(
        gdc_url=env["MEDAGENT_GDC_URL"],
        gtex_url=env["MEDAGENT_GTEX_URL"],
        panda_url=env["MEDAGENT_PANDA_URL"],
        kaggle_auth=KAGGLE_USER if kaggle else None,
    )


def _pull(stub: SourceStub, csv: Path, out: Path, policy: PullPolicy = FAST) -> list:
    sources = _sources(stub)
    planned, refused, _ = plan_multipathqa(csv, sources)
    assert not refused
    return asyncio.run(pull_files(planned, out, sources=sources, policy=policy))


def _same(out: Path, files: list[StubFile]) -> None:
    for f in files:
        assert (out / f.name).read_bytes() == f.body, f.name
    assert not list(out.glob("*.part"))


def test_pull_fetches_every_source_through_faults_and_eval_finds_the_slides(
    tmp_path: Path, files: list[StubFile]
) -> None:
    csv = write_csv(tmp_path / "MultiPathQA.csv", files)
    out = tmp_path / "slides"
    with SourceStub(files) as stub:
        stub.fault(files[0].name, "drop")  # a connection dropped halfway
        stub.fault(files[2].name, "500")  # a 5xx, then success
        run = medagent(
            "data",
            "pull",
            "multipathqa",
            "--csv",
            str(csv),
            "--out",
            str(out),
            "--jobs",
            "2",
            env=stub.env(),
        )
    assert run.returncode == 0, run.stdout + run.stderr
    _same(out, files)
    assert "4 done, 0 skipped" in run.stdout
    dataset = load_multipathqa(csv, slide_roots=[out])
    assert all(item.slide for item in dataset.items) and len(dataset.items) == 5


def test_an_interrupted_file_is_resumed_with_a_range_request(
    tmp_path: Path, files: list[StubFile]
) -> None:
    csv = write_csv(tmp_path / "MultiPathQA.csv", files)
    out = tmp_path / "slides"
    out.mkdir()
    tcga, gtex = files[0], files[2]
    half = len(tcga.body) // 2
    (out / f"{tcga.name}.part").write_bytes(tcga.body[:half])  # a run stopped here
    (out / f"{gtex.name}.part").write_bytes(gtex.body[:1000])
    with SourceStub(files) as stub:
        stub.fault(gtex.name, "norange")  # this server ignores ranges: start over
        outcomes = _pull(stub, csv, out)
        assert [s.range for s in stub.data_requests(tcga.name)] == [f"bytes={half}-"]
        assert [s.range for s in stub.data_requests(gtex.name)] == ["bytes=1000-"]
    assert {o.status for o in outcomes} == {"done"}
    _same(out, files)


def test_a_drop_mid_file_is_retried_from_where_it_stopped(
    tmp_path: Path, files: list[StubFile]
) -> None:
    csv = write_csv(tmp_path / "MultiPathQA.csv", files)
    out = tmp_path / "slides"
    panda = files[3]
    with SourceStub(files) as stub:
        stub.fault(panda.name, "drop", "drop")
        outcomes = _pull(stub, csv, out)
        ranges = [s.range for s in stub.data_requests(panda.name)]
    assert ranges[0] is None and all(r and r.startswith("bytes=") for r in ranges[1:])
    assert len(ranges) == 3
    assert {o.status for o in outcomes} == {"done"}
    _same(out, files)


def test_a_wrong_md5_fails_leaves_no_file_and_exits_1(
    tmp_path: Path, files: list[StubFile]
) -> None:
    csv = write_csv(tmp_path / "MultiPathQA.csv", files)
    out = tmp_path / "slides"
    bad = files[1]
    with SourceStub(files, bad_md5={bad.name}) as stub:
        run = medagent(
            "data", "pull", "multipathqa", "--csv", str(csv), "--out", str(out), env=stub.env()
        )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    line = next(line for line in run.stdout.splitlines() if bad.name in line)
    assert "md5" in line
    assert not (out / bad.name).exists() and not (out / f"{bad.name}.part").exists()
    _same(out, [f for f in files if f is not bad])


def test_a_rerun_fetches_nothing_when_all_is_there_and_refetches_what_is_wrong(
    tmp_path: Path, files: list[StubFile]
) -> None:
    csv = write_csv(tmp_path / "MultiPathQA.csv", files)
    out = tmp_path / "slides"
    with SourceStub(files) as stub:
        _pull(stub, csv, out)
        before = len(stub.seen)
        again = _pull(stub, csv, out)
        assert len(stub.seen) == before  # not even metadata
        assert {o.status for o in again} == {"skipped"}
        gtex = files[2]
        (out / gtex.name).write_bytes(b"<html>maintenance</html>")  # damaged since
        third = _pull(stub, csv, out)
    status = {o.name: o.status for o in third}
    assert status.pop(gtex.name) == "done" and set(status.values()) == {"skipped"}
    _same(out, files)


def test_without_kaggle_credentials_panda_is_skipped_with_one_line(
    tmp_path: Path, files: list[StubFile]
) -> None:
    csv = write_csv(tmp_path / "MultiPathQA.csv", files)
    out = tmp_path / "slides"
    with SourceStub(files) as stub:
        env = {k: v for k, v in stub.env().items() if not k.startswith("KAGGLE_")}
        env.update(HOME=str(tmp_path), KAGGLE_CONFIG_DIR=str(tmp_path / "none"))
        run = medagent("data", "pull", "multipathqa", "--csv", str(csv), "--out", str(out), env=env)
        assert not [s for s in stub.seen if s.path.startswith("/kaggle/")]
    assert run.returncode == 0, run.stdout + run.stderr
    notes = [line for line in run.stderr.splitlines() if "PANDA skipped" in line]
    assert len(notes) == 1 and "KAGGLE_USERNAME" in notes[0] and "kaggle.json" in notes[0]
    assert not (out / files[3].name).exists()
    _same(out, files[:3])


def test_an_unreachable_source_fails_each_file_in_one_line_and_exits_1(
    tmp_path: Path, files: list[StubFile]
) -> None:
    csv = write_csv(tmp_path / "MultiPathQA.csv", files)
    out = tmp_path / "slides"
    dead = f"http://127.0.0.1:{free_port()}/gdc"
    with SourceStub(files) as stub:
        env = {**stub.env(), "MEDAGENT_GDC_URL": dead}
        run = medagent(
            "data",
            "pull",
            "multipathqa",
            "--csv",
            str(csv),
            "--out",
            str(out),
            "--retries",
            "1",
            "--tasks",
            "tcga,gtex",
            env=env,
        )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    for tcga in files[:2]:
        rows = [line for line in run.stdout.splitlines() if tcga.name in line]
        assert len(rows) == 1 and "cannot reach" in rows[0]
    assert "1 done" in run.stdout  # GTEx still came


def test_a_file_over_the_size_cap_is_refused(tmp_path: Path, files: list[StubFile]) -> None:
    csv = write_csv(tmp_path / "MultiPathQA.csv", files)
    out = tmp_path / "slides"
    with SourceStub(files) as stub:
        outcomes = _pull(stub, csv, out, PullPolicy(max_bytes=1000, retries=0))
    assert {o.status for o in outcomes} == {"failed"}
    assert all("refused" in o.reason and "--max-gib" in o.reason for o in outcomes)
    assert not [p for p in out.iterdir() if not p.name.startswith(".")]


def test_rows_that_are_not_slide_names_or_gdc_ids_are_refused(tmp_path: Path) -> None:
    csv = tmp_path / "q.csv"
    csv.write_text(
        "benchmark_name,image_path,file_id\n"
        "tcga,../../etc/passwd,11111111-2222-3333-4444-555555555555\n"
        "tcga,TCGA-1.svs,not-a-uuid\n"
        "gtex,GTEX-1.tiff,GTEX-1\n",
        encoding="utf-8",
    )
    sources = PullSources(
        gdc_url="http://g", gtex_url="http://x/{slide_id}", panda_url="http://k/{name}"
    )
    planned, refused, _ = plan_multipathqa(csv, sources, ["tcga", "gtex"])
    assert [f.url for f in planned] == ["http://x/GTEX-1"]
    assert (
        "not a slide file name" in refused[0].reason and "not a GDC file UUID" in refused[1].reason
    )
    with pytest.raises(ConfigError, match="--tasks"):
        plan_multipathqa(csv, sources, ["tcga", "camelyon"])


def test_kaggle_credentials_come_from_the_environment_or_kaggle_json(tmp_path: Path) -> None:
    assert kaggle_credentials({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, tmp_path) == ("u", "k")
    assert kaggle_credentials({}, tmp_path) is None
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "a", "key": "b"}))
    assert kaggle_credentials({}, tmp_path) == ("a", "b")
    (tmp_path / ".kaggle" / "kaggle.json").write_text("{}")
    with pytest.raises(ConfigError, match="username"):
        kaggle_credentials({}, tmp_path)
