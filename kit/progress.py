"""Progress bars for the kit's long loops (generation, the judge's grading): tqdm's bar, a line redrawn in place
on a terminal and in a notebook, with a rate and an ETA. Off where output is neither (CI logs, files), and
switched by one variable: KIT_PROGRESS=0 turns them off, KIT_PROGRESS=1 on everywhere.

    with bar(len(prompts), "generating", unit="prompt") as b:
        for ...: b.update()
"""

from __future__ import annotations

import os
import sys

ENV = "KIT_PROGRESS"


def enabled() -> bool:
    """Whether bars are drawn: as KIT_PROGRESS says, else where someone watches (a terminal or a notebook)."""
    value = os.environ.get(ENV, "auto").strip().lower()
    if value in ("0", "false", "off", "no"):
        return False
    if value in ("1", "true", "on", "yes"):
        return True
    return _in_notebook() or bool(getattr(sys.stderr, "isatty", lambda: False)())


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython else None
    except Exception:  # noqa: BLE001 - an IPython that cannot say is not a notebook
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def bar(total: int | None, desc: str, unit: str = "it", show: bool = True, **kwargs):
    """A tqdm bar, disabled where `enabled()` says no. tqdm's text bar, also in a notebook (it redraws in place
    there too): with its widget bar, the workshop notebook's eval cell timed out under nbval once (waiting for
    output); with the text bar it passed, alone and in the full suite."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not (show and enabled()), dynamic_ncols=True, mininterval=0.5,
                file=sys.stderr, **kwargs)
