"""``python -m medvl`` runs the command line."""

from medvl.cli.main import main

main()
