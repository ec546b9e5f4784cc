"""Compiled prompt programs for the insight agent: what each module sends, manifests, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_insight_page_and_cli import medagent, write_script
from test_insight_scoring import cases_file

from medagent.agents.insight import InsightAgent, InsightConfig, insight_program
from medagent.errors import ConfigError
from medagent.evals import InsightMethod, load_results, make_method
from medagent.models import ImagePart, RecordedRequest, ScriptedModel
from medagent.prompts import Demo, Program, load_compiled, load_template, vqa_program

KEYWORD = "MAGIC"
GOAL = "Characterize the tissue."


def script(replies: Any) -> list[dict[str, Any]]:
    """One root question, one follow-up: every module is asked (roots, agent, composer,
    agent, summary)."""
    return [
        replies.roots(1),
        replies.answer("Tissue is dense."),
        replies.follow_up("Why is it dense?"),
        replies.answer("Nuclei are crowded."),
        replies.summary([2, 1]),
    ]


def run_agent(
    slide: Path, folder: Path, replies: Any, prompts: Any = None
) -> tuple[list[RecordedRequest], dict[str, Any]]:
    model = ScriptedModel(script(replies))
    report = InsightAgent(model, InsightConfig(roots=1, depth=2), prompts=prompts).run(
        slide, GOAL, run_dir=folder
    )
    assert report.status == "completed", report.error
    manifest = json.loads((folder / "manifest.json").read_text())
    return model.requests, manifest


def tuned_program() -> Program:
    """Every module's instructions changed (placeholders kept); demos for two modules."""
    program = insight_program()
    program.predictor("root_finder").instructions = f"{KEYWORD} roots: pose $k for $goal"
    program.predictor(
        "insight_agent"
    ).instructions = f"{KEYWORD} agent: answer $question in $steps turns."
    program.predictor("composer").instructions = f"{KEYWORD} composer (costs $5) after:\n$chain"
    program.predictor("summary").instructions = f"{KEYWORD} summary:\n$insights"
    program.predictor("root_finder").demos = [
        Demo(
            inputs={"images": [Image.new("RGB", (16, 12), (200, 40, 90))], "goal": "Find it."},
            outputs={"findings": [{"description": "a red area"}], "questions": ["How red?"]},
        )
    ]
    program.predictor("composer").demos = [
        Demo(
            inputs={"goal": "Find it.", "chain": "- How red? → Very."},
            outputs={"choice": "diagnostic", "diagnostic": "Why red?", "nothing_new": False},
        )
    ]
    return program


def test_the_default_program_sends_exactly_what_the_templates_send(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    plain, plain_manifest = run_agent(insight_slide, tmp_path / "plain", replies)
    path = tmp_path / "default.json"
    compiled = insight_program().save(path)
    for name, prompts in (("program", insight_program()), ("compiled", load_compiled(path))):
        requests, manifest = run_agent(insight_slide, tmp_path / name, replies, prompts)
        assert [r.model_dump(mode="json") for r in requests] == [
            r.model_dump(mode="json") for r in plain
        ]
        assert manifest["prompt_program"] == {"name": "insight", "sha256": compiled.sha256}
    assert plain_manifest["prompt_program"] is None
    assert set(insight_program().predictors) == {
        "root_finder",
        "insight_agent",
        "composer",
        "summary",
    }


def test_a_compiled_program_changes_what_each_module_sends(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    compiled = tuned_program().save(tmp_path / "tuned.json")
    requests, manifest = run_agent(
        insight_slide, tmp_path / "run", replies, load_compiled(tmp_path / "tuned.json")
    )
    roots, agent, composer, _, summary = requests
    role = load_template("insight/role").render(
        reader="pathologist", images="a whole-slide pathology image"
    )
    assert all(r.messages[0].role == "system" and r.messages[0].text == role for r in requests)

    assert [m.role for m in roots.messages] == ["system", "user", "assistant", "user"]
    demo_image = roots.messages[1].images[0]
    assert isinstance(demo_image, ImagePart) and demo_image.artifact is not None
    assert demo_image.artifact.kind == "demo"  # stored in the run, referenced by id
    assert roots.messages[1].text == "Goal: Find it."
    assert json.loads(roots.messages[2].text)["questions"] == ["How red?"]
    assert roots.messages[3].text.endswith(f"{KEYWORD} roots: pose 1 for {GOAL}\n")
    assert len(roots.messages[3].images) == 1  # the slide's overview, as before

    assert [m.role for m in agent.messages] == ["system", "user"]  # no demos for this module
    assert agent.messages[1].text.endswith(
        f"{KEYWORD} agent: answer Root question 1? in 6 turns.\n"
    )
    assert [m.role for m in composer.messages] == ["system", "user", "assistant", "user"]
    assert composer.messages[1].text == "Goal: Find it.\nChain: - How red? → Very."
    assert composer.messages[3].text == (
        f"{KEYWORD} composer (costs $5) after:\n- Root question 1? → Tissue is dense.\n"
    )
    assert summary.messages[-1].text.startswith(f"{KEYWORD} summary:\n1. (root, confidence 70%)")
    assert manifest["prompt_program"] == {"name": "insight", "sha256": compiled.sha256}


def test_another_program_is_a_one_line_error(tmp_path: Path) -> None:
    model = ScriptedModel([])
    with pytest.raises(ConfigError, match="takes the 'insight' prompt program, not 'vqa'") as raw:
        InsightAgent(model, prompts=vqa_program())
    with pytest.raises(ConfigError, match="'vqa' program; this is 'insight'") as compiled:
        InsightAgent(model, prompts=vqa_program().compiled())
    with pytest.raises(ConfigError, match="'vqa' program; this is 'insight'") as method:
        make_method("insight", prompts=vqa_program().compiled())
    for error in (raw, compiled, method):
        assert "\n" not in str(error.value)


def test_make_method_passes_an_insight_program_to_the_insight_method(tmp_path: Path) -> None:
    compiled = tuned_program().save(tmp_path / "tuned.json")
    method = make_method("insight", prompts=compiled)
    assert isinstance(method, InsightMethod)
    assert method.params()["prompt_program"] == compiled.sha256
    assert "prompt_program" not in make_method("insight").params()
    with pytest.raises(ConfigError, match="vqa, insight and rag methods, not thumbnail"):
        make_method("thumbnail", prompts=compiled)


def test_medagent_insight_takes_compiled_prompts(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    compiled = tuned_program().save(tmp_path / "tuned.json")
    replies_file = write_script(
        tmp_path / "script.jsonl",
        [replies.roots(1), replies.answer("Tissue is dense."), replies.summary([1])],
    )
    common = [str(insight_slide), "--goal", GOAL, "--roots", "1", "--depth", "1"]
    common += ["--backend", "scripted", "--script", str(replies_file)]
    done = medagent(
        "insight", *common, "--prompts", str(tmp_path / "tuned.json"), "--out", str(tmp_path / "r")
    )
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["prompt_program"] == {"name": "insight", "sha256": compiled.sha256}

    vqa_program().save(tmp_path / "vqa.json")
    wrong = medagent("insight", *common, "--prompts", str(tmp_path / "vqa.json"))
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'vqa.json'} holds prompts for the 'vqa' program; this is 'insight'"
    ]


def test_eval_run_with_the_insight_method_takes_compiled_prompts(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    compiled = tuned_program().save(tmp_path / "tuned.json")
    data = cases_file(tmp_path / "data", insight_slide)
    replies_file = write_script(
        tmp_path / "script.jsonl",
        [replies.roots(1), replies.answer("Tissue covers most of it."), replies.summary([1])],
    )
    run = tmp_path / "run"
    done = medagent(
        "eval", "run", "--dataset", "insight", "--data", str(data), "--method", "insight",
        "--roots", "1", "--depth", "1", "--matcher", "rouge",
        "--prompts", str(tmp_path / "tuned.json"),
        "--backend", "scripted", "--script", str(replies_file), "--out", str(run),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert load_results(run / "results.jsonl")["case-1"].status == "ok"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["method_params"]["prompt_program"] == compiled.sha256
    item = json.loads((run / "items" / "case-1" / "manifest.json").read_text())
    assert item["prompt_program"] == {"name": "insight", "sha256": compiled.sha256}
