"""What produced a folder of result files, kept beside them: `produced-by.txt`, one command per line (a sweep
writes its own, with its wall time). The board quotes these lines, so a page is a function of its results folders:
built again from the same folders, anywhere, it comes out byte for byte the same."""
from __future__ import annotations

from pathlib import Path

from ..io import atomic_write_bytes

PRODUCED_BY_NAME = "produced-by.txt"


def read_produced_by(roots) -> list[str]:
    """The lines of every root's produced-by.txt, in the roots' order, each once."""
    lines: list[str] = []
    for root in roots:
        path = Path(root) / PRODUCED_BY_NAME
        if path.is_file():
            lines += [line.strip() for line in path.read_text().splitlines()
                      if line.strip() and line.strip() not in lines]
    return lines


def command_of(line: str) -> str:
    """A produced-by line's command, without what a sweep adds after it (" (18 cells, ...)")."""
    return line.split(" (", 1)[0]


def record_produced_by(root: Path, line: str) -> None:
    """Put `line` in root's produced-by.txt, in place of the line of the same command (a sweep continued reports
    its new total), else at the end."""
    path = Path(root) / PRODUCED_BY_NAME
    lines = [x for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    same = [i for i, x in enumerate(lines) if command_of(x) == command_of(line)]
    if same:
        lines[same[0]] = line
    else:
        lines.append(line)
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
