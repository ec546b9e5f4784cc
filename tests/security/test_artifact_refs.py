"""Artifact references from outside resolve only through the run's own store.

A model's tool call, an MCP client or the web chat can name an artifact (``measure``'s mask,
``search_similar``'s ``artifact_id``, an ``ArtifactRef`` object). Each hostile reference below
is tried over every way in — the store itself, the Python tool call, the model's ``tool.run``,
the insight agent's actions, the MCP tools (in process and over the SDK's stdio client) and the
chat agent — and must come back as "no such artifact" / "not an artifact id", never as a
measurement of a file elsewhere, and without opening that file.

Cases:

* ids: an absolute path (with and without suffix), a ``../`` path to a real PNG outside the
  store, an id of the right form that exists only in *another* run's store, an id of the right
  form that exists nowhere, upper-case hex, a trailing newline, a NUL, unicode, 10 KB;
* ``ArtifactRef`` objects: a hostile id or media type (as a model's JSON and as an object built
  without validation), another store's reference with this store's size and region;
* no existence probe: "exists in another store" and "exists nowhere" get the same reply, and
  so do an absolute path to an existing file and to a missing one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from medagent.artifacts import ArtifactRef, ArtifactStore
from medagent.errors import InputError, MedagentError
from medagent.imaging import Region, open_image
from medagent.testing import synthetic_tissue, write_pyramid_tiff
from medagent.tools import SearchOutput, SimilarImage, ToolContext, ToolFailure, measure
from medagent.tools import search_similar as search_tool

WHOLE = Region(x=0, y=0, width=800, height=400)

# -- watching for file reads -----------------------------------------------------------------

_WATCHED: list[str] = []
_OPENED: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _WATCHED and isinstance(args[0], str | bytes | os.PathLike):
        path = os.fsdecode(args[0])
        if any(path.startswith(folder) for folder in _WATCHED):
            _OPENED.append(path)


sys.addaudithook(_audit)  # audit hooks cannot be removed; it does nothing unless watching


@pytest.fixture
def opened(secret_dir: Path) -> Iterator[list[str]]:
    """Every file under the secret folder this process opens while the test runs."""
    _WATCHED[:] = [str(secret_dir), str(secret_dir.resolve())]
    _OPENED.clear()
    yield _OPENED
    _WATCHED.clear()


# -- the scene: a run's store, another run's store, secrets elsewhere -------------------------


def _mask(right: int = 150) -> Image.Image:
    mask = Image.new("L", (200, 100), 0)
    mask.paste(255, (50, 20, right, 80))
    return mask


@pytest.fixture
def secret_dir(tmp_path: Path) -> Path:
    """Real images outside every store, under names an attacker might guess."""
    folder = tmp_path / "secret"
    folder.mkdir()
    _mask().save(folder / "secret.png")
    _mask().convert("RGB").save(folder / "secret.jpg")
    return folder


@pytest.fixture
def slide_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("refs-slides") / "a.tif"
    if not path.exists():
        write_pyramid_tiff(path, synthetic_tissue(800, 400, seed=3), mpp=0.5, levels=2)
    return path


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "run-a" / "artifacts")


@pytest.fixture
def foreign(tmp_path: Path) -> ArtifactRef:
    """A mask in another run's store: a valid id that this run's store does not hold."""
    other = ArtifactStore(tmp_path / "run-b" / "artifacts")
    # Not an image this run made (ids are content hashes: the same image has the same id).
    return other.put(_mask(right=120), media_type="image/png", kind="mask", region=WHOLE)


@pytest.fixture
def ctx(store: ArtifactStore, slide_path: Path) -> Iterator[ToolContext]:
    slide = open_image(slide_path)
    yield ToolContext(artifacts=store, slide=slide)
    slide.close()


def dot_dot(target: Path, start: Path) -> str:
    """``target`` as a ``../`` path from ``start`` (both absolute; no filesystem access)."""
    return os.path.relpath(target, start)


def hostile_ids(secret_dir: Path, store: ArtifactStore, foreign: ArtifactRef) -> dict[str, str]:
    relative = dot_dot(secret_dir / "secret", store.root)
    return {
        "absolute": str(secret_dir / "secret"),
        "absolute with suffix": str(secret_dir / "secret.png"),
        "dot-dot": relative,
        "dot-dot with suffix": relative + ".png",
        "another store's id": foreign.id,
        "an id nowhere": "0123456789abcdef" * 2,
        "upper-case hex": foreign.id.upper(),
        "trailing newline": foreign.id + "\n",
        "NUL": foreign.id[:16] + "\x00" + foreign.id[17:],
        "unicode": "é" * 32,
        "10 KB": "a" * 10_000,
    }


def hostile_refs(secret_dir: Path, store: ArtifactStore, foreign: ArtifactRef) -> dict[str, Any]:
    """References as a model or a client would send them (JSON objects)."""
    base = {"width": 200, "height": 100, "region": {"x": 0, "y": 0, "width": 800, "height": 400}}
    return {
        "absolute id": {**base, "id": str(secret_dir / "secret"), "media_type": "image/png"},
        "dot-dot id": {
            **base,
            "id": dot_dot(secret_dir / "secret", store.root),
            "media_type": "image/png",
        },
        "another store's ref": {**base, "id": foreign.id, "media_type": "image/png"},
        "media type with a path": {**base, "id": foreign.id, "media_type": "../../secret.png"},
        "media type not an image": {**base, "id": foreign.id, "media_type": "text/plain"},
    }


def assert_refused(text: str, store_root: Path) -> None:
    """One line, says the reference is unknown, and tells nothing about any file.

    The client's own input may be quoted back (40 characters at most); where the store lives,
    whether a file exists, and what it measures may not.
    """
    assert "\n" not in text and len(text) < 400, text
    assert any(
        words in text for words in ("no such artifact", "not an artifact id", "invalid_arguments")
    ), text
    assert str(store_root) not in text and str(store_root.resolve()) not in text
    assert "missing from" not in text and "area" not in text.lower(), text


# -- the store ------------------------------------------------------------------------------


def test_store_resolves_only_its_own_ids(
    store: ArtifactStore, foreign: ArtifactRef, secret_dir: Path, opened: list[str]
) -> None:
    own = store.put(_mask(), media_type="image/png", kind="mask")
    assert store.resolve(own.id) == own and store.resolve(own) == own
    for name, value in hostile_ids(secret_dir, store, foreign).items():
        with pytest.raises(InputError) as caught:
            store.resolve(value)
        assert_refused(str(caught.value), store.root)
        assert len(str(caught.value)) < 200, name
    assert opened == []


def test_a_reference_built_without_validation_cannot_name_a_file(
    store: ArtifactStore, secret_dir: Path, opened: list[str]
) -> None:
    for hostile in (str(secret_dir / "secret"), "../../secret/secret"):
        ref = ArtifactRef.model_construct(id=hostile, width=1, height=1, media_type="image/png")
        for use in (store.path, store.read_bytes, store.get, store.resolve):
            with pytest.raises(InputError, match=r"no such artifact|not an artifact id"):
                use(ref)
    bad_type = ArtifactRef.model_construct(id="0" * 32, width=1, height=1, media_type="x/../y")
    with pytest.raises(InputError, match="no such artifact"):
        store.path(bad_type)
    assert opened == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "/etc/passwd"),
        ("id", "../" * 3 + "a" * 32),
        ("id", "a" * 32 + "\n"),
        ("id", "a" * 31 + "\x00"),
        ("id", "é" * 32),
        ("id", "a" * 10_000),
        ("media_type", "../../x"),
        ("media_type", "image/svg+xml"),
    ],
)
def test_artifact_ref_refuses_hostile_ids_and_media_types(field: str, value: str) -> None:
    values: dict[str, Any] = {"id": "a" * 32, "width": 1, "height": 1, field: value}
    with pytest.raises(ValidationError):
        ArtifactRef.model_validate(values)


def test_no_existence_probe(store: ArtifactStore, foreign: ArtifactRef, secret_dir: Path) -> None:
    """What exists elsewhere and what exists nowhere look the same from outside."""

    def reply(value: str) -> str:
        with pytest.raises(InputError) as caught:
            store.resolve(value)
        return str(caught.value).replace(value[:40], "<ID>")

    assert reply(foreign.id) == reply("0123456789abcdef" * 2)
    assert reply(str(secret_dir / "secret")) == reply(str(secret_dir / "nothing"))
    assert reply(str(secret_dir / "secret.png")) == reply(str(secret_dir / "nothing.png"))


# -- the tools: Python call, model call, insight actions ---------------------------------------


def test_measure_python_call_refuses_every_hostile_mask(
    ctx: ToolContext, store: ArtifactStore, foreign: ArtifactRef, secret_dir: Path,
    opened: list[str],
) -> None:  # fmt: skip
    for value in hostile_ids(secret_dir, store, foreign).values():
        with pytest.raises(InputError) as caught:
            measure(ctx, kind="mask", mask=value)
        assert_refused(str(caught.value), store.root)
    for ref in hostile_refs(secret_dir, store, foreign).values():
        with pytest.raises((InputError, ValidationError)):
            measure(ctx, kind="mask", mask=ref)
    # An object that skipped validation, e.g. made with model_construct.
    unvalidated = ArtifactRef.model_construct(
        id=str(secret_dir / "secret"), width=200, height=100, media_type="image/png"
    )
    with pytest.raises(MedagentError, match="not an artifact id"):
        measure(ctx, kind="mask", mask=unvalidated)
    # Another store's reference, as an object: its id is not in this store.
    with pytest.raises(InputError, match="no such artifact"):
        measure(ctx, kind="mask", mask=foreign)
    assert opened == []


def test_measure_model_call_refuses_every_hostile_mask(
    ctx: ToolContext, store: ArtifactStore, foreign: ArtifactRef, secret_dir: Path,
    opened: list[str],
) -> None:  # fmt: skip
    own = store.put(_mask(), media_type="image/png", kind="mask", region=WHOLE)
    ok = measure.run(ctx, {"kind": "mask", "mask": own.id})
    assert not isinstance(ok, ToolFailure), ok  # the run's own mask still measures
    values = [
        *hostile_ids(secret_dir, store, foreign).values(),
        *hostile_refs(secret_dir, store, foreign).values(),
    ]
    for value in values:
        result = measure.run(ctx, {"kind": "mask", "mask": value})
        assert isinstance(result, ToolFailure), value
        assert_refused(result.to_text(), store.root)
    assert opened == []


class _NoCases:
    """A searcher with an empty index: enough to reach the query image."""

    def search_image(self, image: Image.Image, k: int, domain: str | None) -> list[SimilarImage]:
        return []

    def thumbnail(self, hit: SimilarImage, long_side: int) -> Image.Image | None:
        return None


def test_search_similar_takes_only_this_stores_images(
    ctx: ToolContext, store: ArtifactStore, foreign: ArtifactRef, secret_dir: Path,
    opened: list[str],
) -> None:  # fmt: skip
    ctx.searcher = _NoCases()
    own = store.put(Image.new("RGB", (64, 64), (200, 100, 150)), kind="zoom")
    assert isinstance(search_tool.run(ctx, {"artifact_id": own.id}), SearchOutput)
    for value in hostile_ids(secret_dir, store, foreign).values():
        result = search_tool.run(ctx, {"artifact_id": value})
        assert isinstance(result, ToolFailure), value
        assert_refused(result.to_text(), store.root)
    assert opened == []


def test_insight_measure_action_refuses_other_stores_masks(
    ctx: ToolContext, slide_path: Path, store: ArtifactStore, foreign: ArtifactRef,
    secret_dir: Path, opened: list[str],
) -> None:  # fmt: skip
    from medagent.agents.insight._config import InsightConfig
    from medagent.agents.insight._context import Source
    from medagent.agents.insight._outputs import MeasureAction
    from medagent.agents.insight._tools import execute

    assert ctx.slide is not None
    sources = [Source(number=1, slide=ctx.slide, tools=ctx)]
    relative = dot_dot(secret_dir / "secret", store.root)[:32]
    for value in (foreign.id, relative, "/" + foreign.id[:31]):
        action = MeasureAction(reasoning="r", action="measure", kind="mask", mask=value)
        step, shown = execute(action, sources, 1, InsightConfig())
        assert not step.ok and shown is None
        assert_refused(step.text, store.root)
    assert opened == []


# -- the chat agent (the web chat's tool calls) -------------------------------------------------


async def test_chat_agent_tool_calls_with_hostile_masks_are_refused(
    slide_path: Path, tmp_path: Path, foreign: ArtifactRef, secret_dir: Path, opened: list[str]
) -> None:
    from medagent.agents.chat import ChatAgent
    from medagent.models import ScriptedModel

    store = ArtifactStore(tmp_path / "session" / "artifacts")
    masks: list[Any] = [
        str(secret_dir / "secret"),
        dot_dot(secret_dir / "secret", store.root),
        foreign.id,
        {"id": str(secret_dir / "secret"), "width": 200, "height": 100, "media_type": "image/png"},
        foreign.model_dump(mode="json"),
    ]
    calls = [{"name": "measure", "arguments": {"kind": "mask", "mask": m}} for m in masks]
    model = ScriptedModel([{"tool_calls": calls}, {"text": "Done."}])
    agent = ChatAgent(model, slide_path, artifacts=store)

    events = [event async for event in agent.astream("t1", "Measure the masks")]

    results = [e for e in events if e.type == "tool_result"]
    assert len(results) == len(masks)
    for event in results:
        assert event.ok is False
        assert_refused(event.text or "", store.root)
    assert events[-1].type == "turn_end"
    assert opened == []


# -- MCP: in process and over the SDK's own client -------------------------------------------


@pytest.fixture
def mcp_tools(slide_path: Path, store: ArtifactStore) -> Any:
    pytest.importorskip("mcp", reason="needs the [mcp] extra")
    from medagent.mcp_server import SlideTools

    return SlideTools([slide_path.parent], store, searcher=_NoCases())


async def test_mcp_tools_refuse_hostile_references(
    mcp_tools: Any, store: ArtifactStore, foreign: ArtifactRef, secret_dir: Path,
    opened: list[str],
) -> None:  # fmt: skip
    calls: list[tuple[str, dict[str, Any]]] = []
    for value in hostile_ids(secret_dir, store, foreign).values():
        calls.append(("measure", {"slide": "a.tif", "kind": "mask", "mask": value}))
        calls.append(("search_similar", {"slide": "a.tif", "artifact_id": value}))
    for ref in hostile_refs(secret_dir, store, foreign).values():
        calls.append(("measure", {"slide": "a.tif", "kind": "mask", "mask": ref}))
    for name, arguments in calls:
        result = await mcp_tools.acall(name, arguments)
        assert result.is_error, (name, arguments)
        (content,) = result.content
        assert_refused(content.text, store.root)
    assert opened == []


@pytest.mark.slow
async def test_mcp_over_stdio_refuses_hostile_references(
    slide_path: Path, tmp_path: Path, foreign: ArtifactRef, secret_dir: Path
) -> None:
    pytest.importorskip("mcp", reason="needs the [mcp] extra")
    from mcp import ClientSession, StdioServerParameters, stdio_client

    store_root = tmp_path / "mcp-artifacts"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
    command = ["-m", "medagent", "mcp", "--slides", str(slide_path.parent)]
    server = StdioServerParameters(
        command=sys.executable, args=[*command, "--artifacts", str(store_root)], env=env
    )
    relative = dot_dot(secret_dir / "secret", store_root)
    masks: list[Any] = [
        str(secret_dir / "secret"),
        relative,
        foreign.id,
        {"id": str(secret_dir / "secret"), "width": 200, "height": 100, "media_type": "image/png"},
        {"id": relative, "width": 200, "height": 100, "media_type": "image/png"},
    ]
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tissue = await session.call_tool("tissue", {"slide": "a.tif"})
        own_mask = tissue.structured_content["mask"]["id"]
        own = await session.call_tool(
            "measure", {"slide": "a.tif", "kind": "mask", "mask": own_mask}
        )
        results = [
            await session.call_tool("measure", {"slide": "a.tif", "kind": "mask", "mask": mask})
            for mask in masks
        ]
    assert not own.is_error, own.content[0].text
    for result in results:
        assert result.is_error
        assert_refused(result.content[0].text, store_root)
