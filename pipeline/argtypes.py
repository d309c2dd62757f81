"""The command line's argument types: each turns a flag's text into its value or raises
argparse's ArgumentTypeError, which argparse prints as one usage error line."""

from __future__ import annotations

import argparse


def shape(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W,C (e.g. 28,28,1), got {text!r}") from None
    if len(parts) == 2:
        parts = (*parts, 1)
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected H,W,C (e.g. 28,28,1), got {text!r}")
    return parts  # type: ignore[return-value]


def names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def auto_or_int(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def epochs(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of epochs >= 0, got {text!r}")
    return value


def members(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of models >= 1, got {text!r}")
    return value


def kfold(value: str) -> str:
    if value in ("auto", "off") or (value.isdigit() and int(value) >= 2):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: auto, off or a number of folds >= 2")
