"""A benchmark's section of docs/benchmarks.md: written between its own markers, the rest kept.

Each benchmark prints its figures and rewrites its section (`<!-- bench:NAME -->` ...
`<!-- /bench:NAME -->`) with `replace_section`; sections of other benchmarks and the prose
between them are left as they are.
"""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def replace_section(path: Path, section: str, name: str) -> None:
    """Put `section` (its own markers included) in place of the previous one named `name`, or
    append it to `path`."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    begin, end = markers(name)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def replace_body(path: Path, name: str, body: str) -> None:
    """`replace_section` for a body without its markers."""
    begin, end = markers(name)
    replace_section(path, f"{begin}\n{body.rstrip()}\n{end}", name)
