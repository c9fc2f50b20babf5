"""`python -m steerstats` runs the command-line interface."""

from steerstats.cli import main

main()
