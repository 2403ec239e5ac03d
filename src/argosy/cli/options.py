"""Command-line options shared by the ``argosy`` command modules."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer


class Format(StrEnum):
    text = "text"
    json = "json"


OutputOpt = Annotated[
    Format,
    typer.Option(
        "--output", "-o", help="text for people, json for programs (one document on stdout)"
    ),
]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        metavar="URL",
        help="act on this Argosy server instead of locally (default: ARGOSY_SERVER)",
        show_default=False,
    ),
]
WideOpt = Annotated[
    bool,
    typer.Option(
        "--wide", help="show every value in full (tables otherwise fit COLUMNS or the terminal)"
    ),
]
