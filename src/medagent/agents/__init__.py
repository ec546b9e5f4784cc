"""Agents: ``base.py`` is the kernel every agent uses (read it first); then one folder per seed
system — ``giant/`` (slide navigation and its baselines), ``insight/`` (MedInsightAgent),
``rag/`` (MMed-RAG), ``chat/`` (conversation over an image) — none importing another."""
