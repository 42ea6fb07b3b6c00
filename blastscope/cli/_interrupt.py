"""What a command says when Ctrl-C stops it: what it kept and how to go on, in its own terms (a scan is not resumed
with ``train --resume``).

Not a sub-command (the leading underscore keeps it out of ``blastscope --help``).
"""

from __future__ import annotations


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the command's one line on what it kept and how to go on (``advice``); still a
    ``KeyboardInterrupt``, so whatever lets Ctrl-C through lets it through too."""

    def __init__(self, advice: str) -> None:
        super().__init__(advice)
        self.advice = advice
