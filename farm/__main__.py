"""Allow ``python -m farm`` where the console script is not on PATH (pyenv shims, CI images)."""

from farm.cli import main

main()
