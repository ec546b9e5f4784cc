"""``python -m medagent`` runs the CLI."""

from medagent.cli import main

main()
