"""Signatures, Predict / ChainOfThought, compiled programs on disk, and what agents then send."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from prompt_support import KEYWORD, make_items
from pydantic import BaseModel

from medagent.agents.giant import GiantConfig, GiantNavigator
from medagent.errors import ConfigError, InputError
from medagent.evals import VQAMethod, make_method
from medagent.models import ImagePart, Message, RecordedRequest, ScriptedModel
from medagent.prompts import (
    ChainOfThought,
    Demo,
    InputField,
    Predict,
    Program,
    PromptVersionWarning,
    Signature,
    load_compiled,
    tracing,
    vqa_program,
)


class Label(BaseModel):
    label: str


def tile(colour: tuple[int, int, int] = (200, 40, 90)) -> Image.Image:
    return Image.new("RGB", (16, 12), colour)


def tuned_vqa(tmp_path: Path) -> Program:
    """A VQA program with a changed instruction and one demo carrying an image."""
    program = vqa_program()
    answer = program.predictor("answer")
    answer.instructions = f"Follow the {KEYWORD} rule."
    answer.output_descriptions["answer"] = "one word"
    answer.demos = [
        Demo(
            inputs={"images": [tile()], "question": "What colour is the demo?"},
            outputs={"answer": "magenta"},
            source="labeled",
            example_id="d1",
        )
    ]
    return program


async def test_scripted_model_can_compute_replies_from_the_request() -> None:
    def respond(request: RecordedRequest) -> dict[str, Any]:
        return {"json": {"label": request.messages[-1].text.upper()}}

    model = ScriptedModel(responder=respond)
    first = await model.generate([Message.user("tumour")], schema=Label)
    second = await model.generate([Message.user("normal")], schema=Label)
    assert first.parsed == Label(label="TUMOUR") and second.parsed == Label(label="NORMAL")
    assert len(model.requests) == 2 and model.remaining > 10**6
    with pytest.raises(ConfigError, match="exactly one of replies or responder"):
        ScriptedModel([{"text": "x"}], responder=respond)


async def test_predict_sends_instructions_fields_demos_then_the_question() -> None:
    signature = Signature(
        name="demo.label",
        instructions="Label the tile.",
        inputs=(
            InputField(name="tile", kind="image", description="a tissue tile"),
            InputField(name="question"),
            InputField(name="options", kind="list", optional=True),
        ),
        output=Label,
    )
    predict = Predict(signature)
    predict.demos = [Demo(inputs={"tile": tile(), "question": "Q0?"}, outputs={"label": "a"})]
    model = ScriptedModel(responder=lambda request: {"json": {"label": "tumour"}})
    prediction = await predict.acall(model, {"tile": tile(), "question": "Which?"})
    assert prediction.ok and prediction.outputs == {"label": "tumour"}
    messages = model.requests[0].messages
    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert len(messages[0].images) == 1 and messages[0].text == "Question: Q0?"
    assert json.loads(messages[1].text) == {"label": "a"}
    assert len(messages[2].images) == 1
    question, instructions = messages[2].text.split("\n\n", 1)
    assert question == "Question: Which?"
    assert instructions.startswith("Label the tile.")
    assert "- Tile: a tissue tile" in instructions and "(may be absent)" in instructions
    assert '"label"' in instructions and '{"label": "..."}' in instructions
    assert model.requests[0].schema_name == "Label"
    with pytest.raises(ConfigError, match="missing question"):
        await predict.acall(model, {"tile": tile()})


async def test_chain_of_thought_reasons_first_and_is_traced() -> None:
    signature = Signature(
        name="demo.label",
        instructions="Label it.",
        inputs=(InputField(name="question"),),
        output=Label,
    )
    cot = ChainOfThought(signature)
    assert list(cot.schema.model_fields) == ["reasoning", "label"]
    model = ScriptedModel([{"json": {"reasoning": "because", "label": "b"}}])
    with tracing() as trace:
        prediction = await cot.acall(model, {"question": "Q?"})
    assert prediction.reasoning == "because" and prediction.outputs == {"label": "b"}
    assert len(trace) == 1 and trace[0].predictor is cot and trace[0].inputs == {"question": "Q?"}
    failed = await cot.acall(ScriptedModel([{"text": "no json"}] * 3), {"question": "Q?"})
    assert not failed.ok and failed.failure == "invalid_output"


def test_save_and_load_round_trip_with_demo_images(tmp_path: Path) -> None:
    program = tuned_vqa(tmp_path)
    path = tmp_path / "out" / "compiled.json"
    saved = program.save(path, scores={"zero_shot": 0.1, "best": 0.9}, model="m")
    images = list((tmp_path / "out" / "compiled.images").iterdir())
    assert len(images) == 1 and images[0].suffix == ".png"
    data = json.loads(path.read_text())
    assert data["program"] == "vqa" and data["sha256"] == saved.sha256 == program.sha256()
    demo = data["predictors"]["answer"]["demos"][0]
    assert demo["inputs"]["images"] == [{"image": images[0].stem}]
    assert data["versions"]["medagent"] and data["scores"]["best"] == 0.9

    loaded = vqa_program().load(load_compiled(path))
    answer = loaded.predictor("answer")
    assert answer.instructions == f"Follow the {KEYWORD} rule."
    assert answer.output_descriptions["answer"] == "one word"
    assert answer.demos[0].inputs["images"] == [images[0]]
    assert answer.demos[0].outputs == {"answer": "magenta"}
    assert loaded.sha256() == saved.sha256  # same pixels, same hash, whatever the file
    # The original program is untouched by loading into a fresh one.
    assert vqa_program().predictor("answer").demos == []


def test_loading_warns_on_version_differences_and_refuses_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "compiled.json"
    tuned_vqa(tmp_path).save(path)
    data = json.loads(path.read_text())
    data["versions"]["medagent"] = "0.0.1"
    data["predictors"]["answer"]["signature_sha256"] = "0" * 16
    path.write_text(json.dumps(data))
    with pytest.warns(PromptVersionWarning) as caught:
        vqa_program().load(path)
    messages = [str(w.message) for w in caught]
    assert any("medagent 0.0.1" in m for m in messages)
    assert any("changed since it was compiled" in m for m in messages)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match="'vqa' program; this is 'giant'"):
            GiantNavigator.prompt_program().load(path)
    for image in (tmp_path / "compiled.images").iterdir():
        image.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match=r"keep the \.images folder"):
            vqa_program().load(path)
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(InputError, match="not a compiled prompt file"):
        load_compiled(tmp_path / "other.json")
    with pytest.raises(InputError, match="do not exist"):
        load_compiled(tmp_path / "missing.json")


async def test_compiled_program_changes_what_the_vqa_method_sends(tmp_path: Path) -> None:
    path = tmp_path / "compiled.json"
    compiled = tuned_vqa(tmp_path).save(path)
    (item,) = make_items(tmp_path / "items", [3])
    reply = {"json": {"answer": "finding 3 answer"}}

    plain_model = ScriptedModel([reply])
    plain = make_method("vqa")
    await plain(item, plain_model, tmp_path / "plain")
    (plain_message,) = plain_model.requests[0].messages  # one user turn, as VQA benchmarks ask
    assert plain_message.text.startswith("Question: What is finding 3?\n\nYou are an expert")
    assert len(plain_message.images) == 1 and KEYWORD not in plain_message.text

    model = ScriptedModel([reply])
    method = make_method("vqa", prompts=load_compiled(path))
    assert isinstance(method, VQAMethod)
    output = await method(item, model, tmp_path / "tuned")
    assert output.ok and output.prediction == "finding 3 answer"
    messages = model.requests[0].messages
    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert messages[0].text == "Question: What colour is the demo?"
    assert len(messages[0].images) == 1 and messages[1].text == '{"answer": "magenta"}'
    question, instructions = messages[2].text.split("\n\n", 1)
    assert question == "Question: What is finding 3?" and len(messages[2].images) == 1
    assert instructions.startswith(f"Follow the {KEYWORD} rule.") and "one word" in instructions
    assert method.params()["prompt_program"] == compiled.sha256
    assert "prompt_program" not in plain.params()
    with pytest.raises(ConfigError, match="giant, random-region, vqa, insight and rag methods"):
        make_method("thumbnail", prompts=compiled)


def answer_turn(text: str = "2") -> dict[str, Any]:
    return {"json": {"reasoning": "clear", "action": "answer", "answer": text}}


def test_compiled_program_changes_what_giant_sends(pyramid_tiff: Path, tmp_path: Path) -> None:
    program = GiantNavigator.prompt_program()
    navigate = program.predictor("navigate")
    navigate.instructions = f"{KEYWORD} navigation: you have $steps turns."
    navigate.demos = [
        Demo(
            inputs={"overview": tile(), "question": "Is this liver?", "options": ["no", "yes"]},
            outputs={"reasoning": "hepatocytes", "action": "answer", "answer": "2"},
        )
    ]
    path = tmp_path / "giant.json"
    compiled = program.save(path)

    model = ScriptedModel([answer_turn()])
    navigator = GiantNavigator(
        model, GiantConfig(max_steps=4), runs_dir=tmp_path, prompts=load_compiled(path)
    )
    result = navigator.run(pyramid_tiff, "Is there tumour?", options=["no", "yes"])
    assert result.status == "answered"
    messages = model.requests[0].messages
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0].text.strip() == f"{KEYWORD} navigation: you have 4 turns."
    demo_image = messages[1].images[0]
    assert isinstance(demo_image, ImagePart) and demo_image.artifact is not None
    assert demo_image.artifact.kind == "demo"  # stored in the run, referenced by id
    assert "Question: Is this liver?" in messages[1].text and "1. no" in messages[1].text
    assert json.loads(messages[2].text)["answer"] == "2"
    assert "Is there tumour?" in messages[3].text
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["prompt_program"] == {"name": "giant", "sha256": compiled.sha256}

    plain = ScriptedModel([answer_turn()])
    GiantNavigator(plain, GiantConfig(max_steps=4), runs_dir=tmp_path).run(
        pyramid_tiff, "Is there tumour?", options=["no", "yes"]
    )
    assert [m.role for m in plain.requests[0].messages] == ["system", "user"]
    assert KEYWORD not in plain.requests[0].messages[0].text
    with pytest.raises(ConfigError, match="giant and random-region"):
        GiantNavigator(plain, method="thumbnail", prompts=compiled)
    with pytest.raises(ConfigError, match="'vqa' program; this is 'giant'"):
        GiantNavigator(plain, prompts=tuned_vqa(tmp_path).compiled())


async def test_a_program_of_several_predictors_is_not_run_as_one_call() -> None:
    """Agents' multi-module programs are run by their agents; calling one directly is a
    one-line ConfigError (not a bare NotImplementedError traceback)."""
    from medagent.agents.insight import insight_program

    with pytest.raises(ConfigError, match="has 4 predictors") as caught:
        await insight_program()(ScriptedModel([]), {"goal": "x"})
    assert "\n" not in str(caught.value)
