"""``python -m argosy``: the ``argosy`` command."""

from argosy.cli.main import entry

entry()
