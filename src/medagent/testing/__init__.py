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
- ``write_dicom_wsi``: a slide written as a DICOM WSI series (one instance per level, label and
  overview instances), lossless or JPEG, or as one instance file.
- ``write_ct_phantom``: a CT (or MR) series of a phantom with known geometry and HU values
  (spheres of known diameter), written with shuffled file names; ``CT_PHANTOM`` describes it.
- ``OrthancServer``: a throwaway Orthanc DICOMweb archive (the real server, in a network
  namespace of its own), for what reads DICOMweb.
- ``NginxProxy``: a throwaway nginx from the repository's ``deploy/nginx`` config, in front of
  web-app replicas on loopback ports (the real server, in a temporary folder).
- ``PostgresServer``: a throwaway local PostgreSQL server (not a double: the real server, in a
  temporary folder), for what runs against Postgres.
- ``build_tiny_vlm``: writes a tiny random-weight LLaVA (real architecture) to a folder, for the
  transformers and vLLM backends; ``build_tiny_family``: the same for the other families of
  ``medagent model presets`` (Qwen2.5-VL, Qwen3-VL, Gemma 3, InternVL3, LLaVA-OneVision,
  Idefics3).

Heavy dependencies (torch, transformers) are imported inside the functions that need them, so
``import medagent.testing`` works without the ``[hf]`` extra.
"""

from medagent.models import ScriptedModel, ScriptedReply
from medagent.testing._dicom_wsi import write_dicom_wsi
from medagent.testing._net import free_port
from medagent.testing._nginx import NginxProxy
from medagent.testing._orthanc import OrthancServer
from medagent.testing._phantom import CT_PHANTOM, Phantom, PhantomSphere, write_ct_phantom
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
    "CT_PHANTOM",
    "NginxProxy",
    "OPENAI_REASONING_REFUSES",
    "OrthancServer",
    "Phantom",
    "PhantomSphere",
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
    "write_ct_phantom",
    "write_dicom_wsi",
    "write_pyramid_tiff",
]
