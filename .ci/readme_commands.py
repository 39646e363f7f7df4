"""Print the README's two commands (install and run; install and test), one per line.

Each is the first ``$ `` line of the console block that follows a ``<!-- readme-command -->``
comment in README.md, so CI (.ci/run) and tests/test_readme.py run exactly what the README
says. Usage: python3 .ci/readme_commands.py [README.md]
"""

from __future__ import annotations

import sys
from pathlib import Path

MARKER = "<!-- readme-command -->"


def readme_commands(readme: Path) -> list[str]:
    """The command after each marker of `readme`, without its ``$ `` prompt."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    commands = []
    for i, line in enumerate(lines):
        if line.strip() == MARKER:
            command = next(x for x in lines[i + 1 :] if x.startswith("$ "))
            commands.append(command.removeprefix("$ "))
    if len(commands) != 2:
        raise SystemExit(f"{readme}: expected 2 '{MARKER}' commands, found {len(commands)}")
    return commands


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    print(
        "\n".join(readme_commands(Path(sys.argv[1]) if len(sys.argv) > 1 else root / "README.md"))
    )
