"""Write one benchmark's results into its own section of docs/benchmarks.md.

Each benchmark script owns a section delimited by ``<!-- begin NAME -->`` and
``<!-- end NAME -->``; re-running one script replaces its section and leaves the others
(measured by other scripts, possibly on other days) as they were.
"""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEach section says the command that made it; numbers within a section come from one run,\nmeasured side by side.\n"


def machine() -> str:
    """One line naming the machine: CPU, cores, torch and its threads."""
    import torch

    cpu = platform.processor() or platform.machine()
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )


def replace_section(name: str, body: str, path: Path = DOC) -> None:
    """Put ``body`` (markdown) into section ``name`` of ``path``, replacing what was there.

    The file is written through a temporary file and an atomic rename; a missing file or
    section is created (sections are appended in the order they first appear).
    """
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    text = path.read_text() if path.exists() else HEADER
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_json(name: str, data: object) -> Path:
    """Keep the raw numbers of a run beside the scripts (``benchmarks/results/NAME.json``)."""
    out = Path(__file__).resolve().parent / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(data, indent=1, default=str))
    return out
