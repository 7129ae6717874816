"""Small text helpers shared by the error messages of the package."""

from __future__ import annotations


def first_line(error: BaseException | str) -> str:
    """The first line of an error's message (or of a text), for one-line error reports; an error with
    an empty message is named by its type."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    return type(error).__name__ if isinstance(error, BaseException) else ""
