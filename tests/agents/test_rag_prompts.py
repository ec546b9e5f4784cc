"""Compiled prompt programs for MMed-RAG: what the pipeline sends, the eval method, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_rag import FakeSearcher, hit

from cli_support import medagent
from medagent.agents.insight import insight_program
from medagent.agents.rag import RAGPipeline, rag_program
from medagent.errors import ConfigError
from medagent.evals import RAGMethod, make_method
from medagent.models import RecordedRequest, ScriptedModel
from medagent.prompts import Demo, Program, load_compiled
from medagent.retrieval import DefaultEmbedder, build_index, images_from_folder

KEYWORD = "MAGIC"
COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder of plain-colour radiology 'cases' with reports, and its index."""
    folder = tmp_path_factory.mktemp("rag-cases")
    rows = ["file,label,domain,report"]
    for name, colour in COLOURS.items():
        for i in range(2):
            Image.new("RGB", (48, 48), tuple(c + 10 * i for c in colour)).save(
                folder / f"{name}{i}.png"
            )
            rows.append(f"{name}{i}.png,{name},radiology,a {name} case number {i}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    index = folder.parent / "rag-index"
    build_index(index, images_from_folder(folder, folder / "labels.csv"), DefaultEmbedder())
    return folder, index


def tuned_program() -> Program:
    """A changed role line (placeholder kept, a stray dollar sign) and one demo with an image."""
    program = rag_program()
    answer = program.predictor("answer")
    answer.instructions = f"{KEYWORD} reader of $domain images (costs $5)."
    answer.demos = [
        Demo(
            inputs={
                "image": Image.new("RGB", (16, 12), (200, 40, 90)),
                "question": "Is it red?",
                "options": ["no", "yes"],
            },
            outputs={"answer": "2"},
        )
    ]
    return program


def sent(request: RecordedRequest) -> list[tuple[str, str, list[bytes]]]:
    """Each turn's role, text and image pixels."""
    return [
        (m.role, m.text, [part.image.tobytes() for part in m.images if part.image is not None])
        for m in request.messages
    ]


async def ask(prompts: Any = None, *, use_rag: bool = True) -> tuple[RecordedRequest, str]:
    model = ScriptedModel([{"json": {"answer": "2"}}])
    searcher = FakeSearcher([hit(1, 0.9), hit(2, 0.88)])
    pipeline = RAGPipeline(model, searcher, prompts=prompts)
    result = await pipeline.ask(
        Image.new("RGB", (64, 64)), "Effusion?", options=["no", "yes"], use_rag=use_rag
    )
    assert result.status == "answered", result.error
    return model.requests[0], result.prompt


async def test_the_default_program_sends_exactly_what_the_templates_send(tmp_path: Path) -> None:
    rag_program().save(tmp_path / "default.json")
    for use_rag in (True, False):
        plain, plain_prompt = await ask(use_rag=use_rag)
        for prompts in (rag_program(), load_compiled(tmp_path / "default.json")):
            request, prompt = await ask(prompts, use_rag=use_rag)
            assert sent(request) == sent(plain) and prompt == plain_prompt
            assert request.schema_name == plain.schema_name


async def test_a_compiled_program_changes_the_role_and_adds_demos(tmp_path: Path) -> None:
    tuned_program().save(tmp_path / "tuned.json")
    request, prompt = await ask(load_compiled(tmp_path / "tuned.json"))
    demo, reply, question = request.messages
    assert [demo.role, reply.role, question.role] == ["user", "assistant", "user"]
    assert len(demo.images) == 1 and demo.text == "Question: Is it red?\nOptions:\n1. no\n2. yes"
    assert json.loads(reply.text) == {"answer": "2"}
    role = f"{KEYWORD} reader of radiology images (costs $5)."
    assert question.text == prompt and prompt.startswith(f"{role}\n\nYou are given an image and 2")
    assert "Question: Effusion?" in prompt and len(question.images) == 1
    plain, plain_prompt = await ask(load_compiled(tmp_path / "tuned.json"), use_rag=False)
    assert plain_prompt.startswith(
        f"{role}\n\nThe image: a medical image, pixel spacing unknown.\nQuestion: Effusion?"
    )
    assert len(plain.messages) == 3  # the demos stay without references


def test_another_program_is_a_one_line_error(cases: tuple[Path, Path]) -> None:
    model, searcher = ScriptedModel([]), FakeSearcher([])
    with pytest.raises(ConfigError, match="takes the 'rag' prompt program, not 'insight'") as raw:
        RAGPipeline(model, searcher, prompts=insight_program())
    with pytest.raises(ConfigError, match="'insight' program; this is 'rag'") as compiled:
        RAGPipeline(model, searcher, prompts=insight_program().compiled())
    with pytest.raises(ConfigError, match="'insight' program; this is 'rag'") as method:
        make_method("rag", index=cases[1], prompts=insight_program().compiled())
    for error in (raw, compiled, method):
        assert "\n" not in str(error.value)


def test_make_method_passes_a_rag_program_to_the_rag_method(
    cases: tuple[Path, Path], tmp_path: Path
) -> None:
    compiled = tuned_program().save(tmp_path / "tuned.json")
    method = make_method("rag", index=cases[1], prompts=compiled)
    assert isinstance(method, RAGMethod)
    assert method.params()["prompt_program"] == compiled.sha256
    assert "prompt_program" not in make_method("rag", index=cases[1]).params()


def test_medagent_rag_ask_takes_compiled_prompts(cases: tuple[Path, Path], tmp_path: Path) -> None:
    folder, index = cases
    tuned_program().save(tmp_path / "tuned.json")
    script = tmp_path / "s.jsonl"
    script.write_text(json.dumps({"json": {"answer": "green"}}) + "\n")
    common = ["rag", "ask", str(folder / "green0.png"), "Which colour?", "--index", str(index)]
    common += ["--backend", "scripted", "--script", str(script), "--out", str(tmp_path / "run")]
    done = medagent(*common, "--prompts", str(tmp_path / "tuned.json"), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["answer"] == "green"
    assert result["prompt"].startswith(f"{KEYWORD} reader of radiology images (costs $5).")

    insight_program().save(tmp_path / "insight.json")
    wrong = medagent(*common, "--prompts", str(tmp_path / "insight.json"))
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'insight.json'} holds prompts for the 'insight' program; this is 'rag'"
    ]


def test_eval_run_with_the_rag_method_takes_compiled_prompts(
    cases: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, index = cases
    compiled = tuned_program().save(tmp_path / "tuned.json")
    items = tmp_path / "items.jsonl"
    item = {"id": "q0", "task": "colour", "images": [str(folder / "red0.png")]}
    item.update(question="Which colour?", answer="red", metric="open")
    items.write_text(json.dumps(item) + "\n")
    script = tmp_path / "s.jsonl"
    script.write_text(json.dumps({"json": {"answer": "red"}}) + "\n")
    run = tmp_path / "run"
    done = medagent(
        "eval", "run", "--dataset", "jsonl", "--data", str(items), "--method", "rag",
        "--index", str(index), "--prompts", str(tmp_path / "tuned.json"),
        "--backend", "scripted", "--script", str(script), "--out", str(run),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    assert result["correct"] is True
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["method_params"]["prompt_program"] == compiled.sha256
    trajectory = json.loads((run / "items" / "q0" / "trajectory.json").read_text())
    assert trajectory["prompt_program"] == compiled.sha256
    assert trajectory["prompt"].startswith(f"{KEYWORD} reader of radiology images")
    item_manifest = json.loads((run / "items" / "q0" / "manifest.json").read_text())
    assert item_manifest["agent"] == "rag" and item_manifest["prompt_program"]
