"""A real GIANT eval run for the review page's tests (imported by name: keep this basename unique).

The run is made by ``EvalRunner`` with the scripted backend over a generated slide: two zooms
and an answer per item, so every item has a trajectory with boxes and reasoning.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from medagent.evals import EvalItem, EvalRunner, RunConfig, make_method
from medagent.models import ScriptedModel

FIRST = {"x": 400, "y": 300, "width": 800, "height": 600}
SECOND = {"x": 1600, "y": 1000, "width": 600, "height": 400}


def _zoom(region: dict[str, int], why: str) -> dict[str, Any]:
    return {"json": {"reasoning": why, "action": "zoom", **region}}


#: One item's replies: zoom on a gland, zoom elsewhere, answer "1".
REPLIES: list[dict[str, Any]] = [
    _zoom(FIRST, "a gland at the top left"),
    _zoom(SECOND, "the stroma below it"),
    {"json": {"reasoning": "glands throughout", "action": "answer", "answer": "1"}},
]
#: Item ids: plain, with a colon and a slash (datasets have both), and one more.
ITEM_IDS = ["q0", "tcga:case/7", "q2"]
#: References: the answer ("1": colon) is right for q0 and q2, wrong for the middle one.
REFERENCES = {"q0": "colon", "tcga:case/7": "lung", "q2": "colon"}


def make_giant_run(run_dir: Path, slide: Path) -> Path:
    """A finished GIANT run of the three items in ``run_dir`` (manifest, results, items/)."""
    items = [
        EvalItem(
            id=item,
            task="tcga",
            slide=str(slide),
            question="Which tissue is this?",
            options=["colon", "lung"],
            answer=REFERENCES[item],
        )
        for item in ITEM_IDS
    ]
    config = RunConfig(
        dataset="jsonl",
        data_path="items.jsonl",
        dataset_sha256="0" * 64,
        method="giant",
        backend="scripted",
        model="scripted",
    )
    runner = EvalRunner(
        lambda: ScriptedModel(REPLIES * len(ITEM_IDS)),
        make_method("giant"),
        config,
        run_dir,
        concurrency=1,
    )
    outcome = asyncio.run(runner.run(items))
    assert outcome.ok == len(ITEM_IDS), outcome
    return run_dir
