"""What a user's files hold, byte for byte, to compare before and after a fault."""

from __future__ import annotations


def tree(path):
    """Every file under ``path`` (or ``path`` itself, a file) with its bytes."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def folder(path):
    """Every entry of folder ``path`` (hidden partials and locks included) with its tree."""
    return {p.name: tree(p) for p in sorted(path.iterdir())}
