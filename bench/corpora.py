"""Build the quality benchmark's corpora: four collections of texts, each split into train.txt and held_out.txt.

    python -m bench.corpora                      # into ~/.cache/charrnn/corpora (or --out DIR)

| name | what | from |
| --- | --- | --- |
| tang300 | *Three Hundred Tang Poems*, 313 poems (Chinese) | data/tang300.txt (Debian's fortunes-zh) |
| devils | Ambrose Bierce, *The Devil's Dictionary*, its entries (English) | data/devils_dictionary.txt (Debian's dict-devil) |
| fortunes-en | Debian's ``fortunes`` package: about 15,000 quotations, jokes and verses by many authors (English) | apt-get download fortunes |
| fortunes-zh | Debian's ``fortunes-zh`` package: sayings, classical prose and poems by many authors (Chinese) | apt-get download fortunes-zh |

Each corpus is cut into its texts (a poem, an entry, a fortune) and every 20th text (the 20th, 40th, ...)
goes to held_out.txt, the rest to train.txt, each text followed by its separator as in the source: so the
held-out texts are spread across the whole collection, and no text is in both files. The Debian packages
are fetched with ``apt-get download`` (run ``apt-get update`` once first) and unpacked with ``dpkg-deb -x``
into a temporary folder; fortune files lose their terminal colour codes and overstruck characters (``_\\bx``
underlining), which are markup rather than text. Nothing here is committed: the folder is rebuilt by this
script, and a corpus already built is kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "charrnn" / "corpora"
HELD_OUT_EVERY = 20
FORTUNE_DIR = Path("usr/share/games/fortunes")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_OVERSTRIKE = re.compile(r".\x08")  # "_\bx" underlines x, "x\bx" emboldens it: keep the last character
_DEVIL_HEADWORD = re.compile(r"^[A-Z][A-Z' .-]*, [a-z]")


def fortune_texts(text: str) -> list[str]:
    """The texts of a fortune file (separated by lines holding only %), cleaned of terminal markup."""
    text = _OVERSTRIKE.sub("", _ANSI.sub("", text))
    texts = re.split(r"^%\n", text.replace("\r\n", "\n"), flags=re.MULTILINE)
    return [t if t.endswith("\n") else t + "\n" for t in texts if t.strip()]


def devils_texts(text: str) -> list[str]:
    """The Devil's Dictionary's entries: each from its headword line (``ABASEMENT, n.``) to the next."""
    lines = text.replace("\r\n", "\n").splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _DEVIL_HEADWORD.match(line)]
    bounds = [0, *starts[1:], len(lines)] if starts else [0, len(lines)]
    return ["".join(lines[a:b]) for a, b in zip(bounds, bounds[1:])]


def split_texts(texts: Sequence[str], separator: str) -> tuple[str, str]:
    """(training text, held-out text): every HELD_OUT_EVERY-th text held out, each followed by ``separator``."""
    train, held_out = [], []
    for index, text in enumerate(texts, start=1):
        (held_out if index % HELD_OUT_EVERY == 0 else train).append(text + separator)
    return "".join(train), "".join(held_out)


def debian_package_files(package: str, names: Optional[Sequence[str]], scratch: Path) -> list[Path]:
    """The fortune files of Debian ``package`` (all of them, or ``names``), fetched and unpacked in ``scratch``."""
    subprocess.run(["apt-get", "download", package], cwd=scratch, check=True, capture_output=True)
    (deb,) = scratch.glob(f"{package}_*.deb")
    unpacked = scratch / package
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    folder = unpacked / FORTUNE_DIR
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8"))
    return [p for p in files if names is None or p.name in names]


def _bundled(name: str, source_dir: Optional[Path]) -> Path:
    folders = [source_dir] if source_dir else [REPO_ROOT / "data", REPO_ROOT.parent / "shared" / "corpora"]
    for folder in folders:
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{name} is in none of {', '.join(map(str, folders))}; give --source-dir")


def build(name: str, out: Path, scratch: Path, source_dir: Optional[Path] = None) -> dict:
    """Write ``out/name/train.txt`` and ``held_out.txt``; returns what was written."""
    sources: list[str]
    if name == "tang300":
        path = _bundled("tang300.txt", source_dir)
        texts, separator, sources = fortune_texts(path.read_text(encoding="utf-8")), "%\n", [path.name]
    elif name == "devils":
        path = _bundled("devils_dictionary.txt", source_dir)
        texts, separator, sources = devils_texts(path.read_text(encoding="utf-8")), "", [path.name]
    else:
        package = {"fortunes-en": "fortunes", "fortunes-zh": "fortunes-zh"}[name]
        files = debian_package_files(package, None, scratch)
        texts = [t for f in files for t in fortune_texts(f.read_text(encoding="utf-8", errors="replace"))]
        separator, sources = "%\n", [f"debian:{package}/{f.name}" for f in files]
    train, held_out = split_texts(texts, separator)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(train, encoding="utf-8")
    (folder / "held_out.txt").write_text(held_out, encoding="utf-8")
    facts = {"name": name, "texts": len(texts), "held_out_texts": len(texts) // HELD_OUT_EVERY,
             "train_chars": len(train), "held_out_chars": len(held_out),
             "distinct_chars": len(set(train) | set(held_out)), "sources": sources}
    (folder / "corpus.json").write_text(json.dumps(facts, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return facts


CORPORA = ("tang300", "devils", "fortunes-en", "fortunes-zh")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Build the corpora named (default: all) and print a line for each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=[], metavar="NAME",
                        help=f"which corpora: {', '.join(CORPORA)} (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})")
    parser.add_argument("--source-dir", type=Path, default=None,
                        help="where tang300.txt and devils_dictionary.txt are (default: data/, else ../shared/corpora)")
    parser.add_argument("--force", action="store_true", help="rebuild corpora that are already there")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in CORPORA]
    if unknown:
        parser.error(f"unknown corpus {', '.join(unknown)}; choose from {', '.join(CORPORA)}")
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.names or list(CORPORA):
            if not args.force and (args.out / name / "corpus.json").exists():
                facts = json.loads((args.out / name / "corpus.json").read_text(encoding="utf-8"))
            else:
                try:
                    facts = build(name, args.out, Path(scratch), args.source_dir)
                except (OSError, subprocess.CalledProcessError) as exc:
                    detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) else exc
                    print(f"Error: cannot build {name}: {detail} (for the Debian packages run apt-get update first)",
                          file=sys.stderr)
                    return 1
            print(f"{name}: {facts['texts']:,} texts, {facts['train_chars']:,} training and "
                  f"{facts['held_out_chars']:,} held-out characters, {facts['distinct_chars']:,} distinct -> "
                  f"{args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
