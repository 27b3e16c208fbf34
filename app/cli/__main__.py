"""`python -m app.cli ...`, the same as `orgsvc ...`."""

from app.cli import main

main()
