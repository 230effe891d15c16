"""Hostile configuration texts shared by the unit and the process tests."""

from __future__ import annotations


def alias_bomb() -> str:
    """The classic "billion laughs" in under 1 KB: nine levels of nine aliases, 9^9 values expanded."""
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]\n"
    return text
