"""Agents: LangGraph graphs, one folder per seed system (``giant/``; more to come)."""
