"""Retrieval: embedders, a FAISS image index with metadata, search, domain routing, adaptive k.

Vectors are float32 and L2-normalized everywhere, so scores are cosine similarities.
"""

from medagent.retrieval._adaptive_k import AdaptiveK, select_k
from medagent.retrieval._default_embedder import DefaultEmbedder
from medagent.retrieval._embedders import (
    EmbedderFactory,
    EmbedderName,
    embedder_names,
    make_embedder,
    register_embedder,
)
from medagent.retrieval._hf_embedder import HFEmbedder
from medagent.retrieval._index import ImageIndex, IndexConfig, IndexInfo, IndexKind, Where
from medagent.retrieval._presets import PRESETS, EmbedderPreset
from medagent.retrieval._ray_build import EmbedderSpec, RayBuild, build_index_on_ray
from medagent.retrieval._router import DomainRouter, KNNDomainRouter, VLMDomainRouter
from medagent.retrieval._search import (
    IndexSearcher,
    build_index,
    images_from_dataset,
    images_from_folder,
    images_from_slide,
    images_from_slides,
    open_index,
)
from medagent.retrieval.base import Domain, Embedder, IndexRecord, Neighbour, Vectors

__all__ = [
    "AdaptiveK",
    "DefaultEmbedder",
    "Domain",
    "DomainRouter",
    "Embedder",
    "EmbedderFactory",
    "EmbedderName",
    "EmbedderPreset",
    "EmbedderSpec",
    "HFEmbedder",
    "ImageIndex",
    "IndexConfig",
    "IndexInfo",
    "IndexKind",
    "IndexRecord",
    "IndexSearcher",
    "KNNDomainRouter",
    "Neighbour",
    "PRESETS",
    "RayBuild",
    "VLMDomainRouter",
    "Vectors",
    "Where",
    "build_index",
    "build_index_on_ray",
    "embedder_names",
    "images_from_dataset",
    "images_from_folder",
    "images_from_slide",
    "images_from_slides",
    "make_embedder",
    "open_index",
    "register_embedder",
    "select_k",
]
