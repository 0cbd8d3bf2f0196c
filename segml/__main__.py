"""``python -m segml`` runs the command line."""

from segml.cli import main

main()
