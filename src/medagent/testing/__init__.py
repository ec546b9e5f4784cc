"""Test doubles shipped so users can smoke-test too: models and servers that behave like the
real ones without weights worth downloading or a GPU.

- ``ScriptedModel``: a chat model that replays prepared replies and records requests.
- ``StubOpenAIServer``: a real HTTP server speaking the chat-completions API, with scripted
  replies and injected faults (dropped connections, 500, 429, slow and malformed replies),
  and reasoning models' ways (parameters refused with a 400, reasoning in replies).
- ``write_pyramid_tiff`` / ``synthetic_tissue``: tiled pyramidal TIFFs with known levels and
  pixel spacing, painted with H&E-coloured blobs, that OpenSlide opens like a scan.
- ``build_tiny_clip``: a tiny random-weight CLIP for the ``hf`` image embedder.
- ``build_tiny_timm`` / ``build_tiny_open_clip``: a tiny random-weight model of an embedder
  preset's architecture (UNI2-h, Virchow2, QuiltNet, CoCa...) for the preset loaders.
- ``build_tiny_sam``: a tiny random-weight SAM for the segment tool's model path.
- ``PostgresServer``: a throwaway local PostgreSQL server (not a double: the real server, in a
  temporary folder), for what runs against Postgres.
- ``build_tiny_vlm``: writes a tiny random-weight LLaVA (real architecture) to a folder, for the
  transformers and vLLM backends; ``build_tiny_family``: the same for other families
  (Gemma 3, Idefics3).

Heavy dependencies (torch, transformers) are imported inside the functions that need them, so
``import medagent.testing`` works without the ``[hf]`` extra.
"""

from medagent.models import ScriptedModel, ScriptedReply
from medagent.testing._net import free_port
from medagent.testing._postgres import PostgresServer
from medagent.testing._slides import synthetic_tissue, write_pyramid_tiff
from medagent.testing._stub_server import (
    OPENAI_REASONING_REFUSES,
    StubFault,
    StubOpenAIServer,
)
from medagent.testing._tiny_clip import (
    TINY_CLIP_IMAGE_SIZE,
    TINY_CLIP_PROJECTION_DIM,
    build_tiny_clip,
)
from medagent.testing._tiny_families import TINY_FAMILIES, build_tiny_family
from medagent.testing._tiny_open_clip import TINY_OPEN_CLIP_DIM, build_tiny_open_clip
from medagent.testing._tiny_sam import TINY_SAM_IMAGE_SIZE, build_tiny_sam
from medagent.testing._tiny_timm import TINY_TIMM_WIDTH, build_tiny_timm
from medagent.testing._tiny_vlm import TINY_VLM_CHAT_TEMPLATE, build_tiny_vlm

__all__ = [
    "OPENAI_REASONING_REFUSES",
    "PostgresServer",
    "ScriptedModel",
    "ScriptedReply",
    "StubFault",
    "StubOpenAIServer",
    "TINY_CLIP_IMAGE_SIZE",
    "TINY_CLIP_PROJECTION_DIM",
    "TINY_FAMILIES",
    "TINY_OPEN_CLIP_DIM",
    "TINY_SAM_IMAGE_SIZE",
    "TINY_TIMM_WIDTH",
    "TINY_VLM_CHAT_TEMPLATE",
    "build_tiny_clip",
    "build_tiny_family",
    "build_tiny_open_clip",
    "build_tiny_sam",
    "build_tiny_timm",
    "build_tiny_vlm",
    "free_port",
    "synthetic_tissue",
    "write_pyramid_tiff",
]
