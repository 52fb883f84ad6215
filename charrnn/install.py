"""How to install one of charrnn's optional extras, said so that it installs this project and no other.

The name ``charrnn`` on the public package index belongs to an unrelated project: asking pip for
``charrnn[plot]`` by name would fetch someone else's code. An extra is installed from charrnn's own source
folder instead, ``pip install '.[plot]'`` there, or ``pip install '/path/to/charrnn[plot]'`` from
anywhere. When charrnn runs from its source folder (an editable install, or the checkout itself)
the hint names that folder, so it can be pasted as it is.
"""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path
from typing import Optional

# The folder above the package, which is the source folder when charrnn runs from a checkout.
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def source_folder(folder: Path = _PACKAGE_PARENT) -> Optional[Path]:
    """``folder`` if it is charrnn's source folder (its setup.cfg names the project), else None."""
    settings = configparser.ConfigParser(interpolation=None)
    try:
        settings.read(folder / "setup.cfg", encoding="utf-8")
    except (OSError, configparser.Error, UnicodeDecodeError):
        return None
    return folder if settings.get("metadata", "name", fallback=None) == "charrnn" else None


def extra_hint(extra: str, folder: Path = _PACKAGE_PARENT) -> str:
    """The command that installs charrnn's ``extra`` (plot, fast) from its source, never by name."""
    found = source_folder(folder)
    if found is not None:
        return f"pip install {shlex.quote(f'{found}[{extra}]')}"
    return f"pip install '.[{extra}]' in charrnn's source folder (not 'charrnn[{extra}]': that name on PyPI is another project)"
