"""GIANT with a reasoning model behind the OpenAI API: the stub server plays GPT-5 (refuses
``max_tokens`` and temperature 0, thinks in ``reasoning_content``). Every request goes through
first time, the answer is parsed from the reply alone, and each attempt's thinking is kept in
the step record and shown collapsed on the trajectory page."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from medagent.agents.giant import GiantConfig, GiantNavigator, Trajectory
from medagent.models import OpenAIBackend, ParameterMemory, RetryPolicy
from medagent.testing import OPENAI_REASONING_REFUSES, StubOpenAIServer

THOUGHT_1 = "The overview shows a dense purple area at the upper left; <b>zoom</b> there."
THOUGHT_2 = "Glands look crowded, but first I wrote nonsense."
THOUGHT_3 = "Crowded atypical glands: tumour."


class _Details(HTMLParser):
    """The text inside each ``<details class="thinking">`` of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.depth = 0
        self.found: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "details" and ("class", "thinking") in attrs:
            self.depth = 1
            self.found.append("")
        elif tag == "details" and self.depth:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "details" and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.found[-1] += data


def test_giant_on_a_gpt5_like_server(nav_slide: Path, tmp_path: Path) -> None:
    zoom: dict[str, Any] = {
        "reasoning": "look closer",
        "action": "zoom",
        "x": 0,
        "y": 0,
        "width": 4000,
        "height": 3000,
    }
    answer = {"reasoning": "atypical glands", "action": "answer", "answer": "2"}
    script: list[dict[str, Any]] = [
        {"json": zoom, "reasoning": THOUGHT_1},
        {"text": "I am not sure what to say", "reasoning": THOUGHT_2},
        {"json": answer, "reasoning": THOUGHT_3},
    ]
    with StubOpenAIServer(script, refuses=OPENAI_REASONING_REFUSES) as server:
        model = OpenAIBackend(
            "gpt-5",
            [server.base_url],
            retry=RetryPolicy(max_retries=0),
            parameter_memory=ParameterMemory(),
        )
        navigator = GiantNavigator(model, GiantConfig(), runs_dir=tmp_path)
        result = navigator.run(
            nav_slide, "Is there tumour?", options=["no", "yes"], run_dir=tmp_path / "run"
        )
    assert result.status == "answered" and result.prediction == "yes"
    assert len(server.requests) == 3  # the table's parameters: nothing refused
    assert all("max_tokens" not in b and "temperature" not in b for b in server.requests)
    assert all(b["max_completion_tokens"] == GiantConfig().max_tokens for b in server.requests)

    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    zoomed, answered = trajectory.steps
    assert zoomed.thinking == [THOUGHT_1] and zoomed.outputs[0].startswith('{"reasoning"')
    assert answered.thinking == [THOUGHT_2, THOUGHT_3]  # one per attempt, the refused one too
    assert answered.outputs[0] == "I am not sure what to say"
    assert answered.reasoning_tokens == len(THOUGHT_2.split()) + len(THOUGHT_3.split())
    assert trajectory.reasoning_tokens == sum(
        len(t.split()) for t in (THOUGHT_1, THOUGHT_2, THOUGHT_3)
    )
    assert not any(THOUGHT_1 in text for text in zoomed.outputs)

    assert result.html_path is not None
    page = result.html_path.read_text()
    assert "<b>zoom</b>" not in page  # escaped, like every model text
    shown = _Details(page).found
    assert [THOUGHT_1 in s for s in shown] == [True, False, False]
    assert THOUGHT_2 in shown[1] and THOUGHT_3 in shown[2]


def test_no_thinking_no_details(nav_slide: Path, tmp_path: Path) -> None:
    answer = {"reasoning": "benign", "action": "answer", "answer": "1"}
    with StubOpenAIServer([{"json": answer}]) as server:
        model = OpenAIBackend("some-vlm", [server.base_url], parameter_memory=ParameterMemory())
        result = GiantNavigator(model, GiantConfig(), runs_dir=tmp_path).run(
            nav_slide, "Is there tumour?", options=["no", "yes"], run_dir=tmp_path / "run"
        )
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    assert trajectory.steps[0].thinking == [] and trajectory.reasoning_tokens == 0
    assert result.html_path is not None
    assert 'class="thinking"' not in result.html_path.read_text()


def test_ask_sends_the_reasoning_effort_it_is_given(nav_slide: Path, tmp_path: Path) -> None:
    from cli_support import medagent

    answer = {"reasoning": "benign", "action": "answer", "answer": "1"}
    with StubOpenAIServer([{"json": answer}], refuses=OPENAI_REASONING_REFUSES) as server:
        done = medagent(
            "ask", str(nav_slide), "Is there tumour?", "--options", "no;yes",
            "--base-url", server.base_url, "--model", "gpt-5", "--reasoning-effort", "low",
            "--out", str(tmp_path / "run"), "--json",
        )  # fmt: skip
        sent = list(server.requests)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [b.get("reasoning_effort") for b in sent] == ["low"]
    assert "temperature" not in sent[0] and "max_completion_tokens" in sent[0]
