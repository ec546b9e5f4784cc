"""Prompts: templates as files (``templates/``), loaded and hashed for run manifests."""

from medagent.prompts._templates import PromptTemplate, load_template

__all__ = ["PromptTemplate", "load_template"]
