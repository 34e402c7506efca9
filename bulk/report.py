"""What an import did, file by file: lines read, records new and already there, and each rejected line
with its number, the field and why (the API's own message). A file with a rejected line writes nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Rejected lines kept per file (all are counted; a file with a million bad lines reports the first ones).
KEEP_REJECTED = 1000


@dataclass(frozen=True)
class RejectedLine:
    line: int
    reason: str
    field: str | None = None

    def text(self) -> str:
        return f"line {self.line}: {self.field + ' ' if self.field else ''}{self.reason}"


@dataclass
class FileReport:
    name: str
    kind: str
    lines: int = 0  # records read (blank lines not counted)
    new: int = 0  # written by this import
    already: int = 0  # ids already there, left as they are
    rejected: list[RejectedLine] = field(default_factory=list)
    rejected_count: int = 0
    seconds: float = 0.0
    problem: str | None = None  # the file could not be read at all

    def reject(self, line: int, reason: str, field_name: str | None = None) -> None:
        self.rejected_count += 1
        if len(self.rejected) < KEEP_REJECTED:
            self.rejected.append(RejectedLine(line, reason, field_name))

    def reject_fields(self, line: int, fields: dict[str, str]) -> None:
        """Every bad field of one line (a ValidationFailed's `fields`), as one rejected line each."""
        for name, reason in fields.items():
            self.reject(line, reason, name)

    def sort(self) -> None:
        """Rejected lines in line order (they are found in two passes: each line, then its references)."""
        self.rejected.sort(key=lambda r: r.line)

    @property
    def imported(self) -> bool:
        return self.problem is None and self.rejected_count == 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["imported"] = self.imported
        return out

    def lines_text(self) -> list[str]:
        head = f"{self.name}: {self.lines} lines"
        if self.problem is not None:
            return [f"{self.name}: not read: {self.problem}"]
        if not self.imported:
            lines = [f"{head}, {self.rejected_count} rejected: nothing imported from this file"]
            lines += [f"  {r.text()}" for r in self.rejected]
            if self.rejected_count > len(self.rejected):
                lines.append(f"  ... and {self.rejected_count - len(self.rejected)} more")
            return lines
        return [f"{head}: {self.new} new, {self.already} already there ({self.seconds:.1f}s)"]


@dataclass
class ImportReport:
    files: list[FileReport] = field(default_factory=list)
    model: dict[str, Any] | None = None  # the first model: version, promoted, metrics
    model_note: str | None = None  # why no model was trained

    @property
    def ok(self) -> bool:
        return all(f.imported for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "files": [f.as_dict() for f in self.files],
            "model": self.model,
            "model_note": self.model_note,
        }

    def text(self) -> str:
        lines = [line for f in self.files for line in f.lines_text()]
        if self.model is not None:
            metrics = self.model.get("metrics") or {}
            verdict = "promoted" if self.model["promoted"] else "registered, not promoted"
            if metrics.get("gate") == "rank_by_baseline":
                verdict = "promoted, ranking by the best simple baseline"
            reason = metrics.get("gate_reason")
            lines.append(
                f"model {self.model['version']}: {verdict}" + (f" (gate: {reason})" if reason else "")
            )
        elif self.model_note:
            lines.append(f"no model trained: {self.model_note}")
        return "\n".join(lines)
