"""Lua scripts live in `.lua` files beside the module that runs them (`<package>/lua/`), read once at
start-up (when the module is imported) and sent by SHA (redis-py's `register_script`, the lane's
EVALSHA); a script's keys and arguments are documented at the top of its file."""

from __future__ import annotations

from pathlib import Path


def lua_script(module_file: str, name: str) -> str:
    """The text of `lua/<name>` in the folder of the module `module_file` (pass `__file__`)."""
    return (Path(module_file).resolve().parent / "lua" / name).read_text()
