#!/usr/bin/python3
"""The training corpus: English fortune cookies from Debian's `fortunes` package (+ its
dependency `fortunes-min`), BSD licence (/usr/share/doc/fortunes/copyright).

Each fortune (the text between `%` lines of a data file) is one document. The split is a
pure function of the text: a document goes to the test set iff crc32(text) % 20 == 0 (~5 %),
so it does not depend on file order, package version details or the machine.
"""
import os
import sys
import zlib

FORTUNE_DIR = "/usr/share/games/fortunes"
# Pictures, not prose; the .dat indexes and .u8 links are skipped by name below.
SKIP = {"ascii-art"}
TEST_MOD = 20


def data_files(root=FORTUNE_DIR):
    if not os.path.isdir(root):
        sys.exit(f"corpus: {root} missing; install the Debian package `fortunes` "
                 "(scripts/setup.sh does)")
    return sorted(n for n in os.listdir(root)
                  if "." not in n and n not in SKIP and os.path.isfile(os.path.join(root, n)))


def documents(root=FORTUNE_DIR):
    """-> list of (file name, fortune text) in a fixed order (file name, then position)."""
    out = []
    for name in data_files(root):
        with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
            chunks = f.read().split("\n%\n")
        for c in chunks:
            # One line per document: SentencePiece has no newline piece, so line breaks and
            # indentation (poems, attributions) become single spaces.
            text = " ".join(c.strip("%\n").split())
            if text:
                out.append((name, text))
    return out


def is_test(text):
    return zlib.crc32(text.encode("utf-8")) % TEST_MOD == 0


def split(root=FORTUNE_DIR):
    """-> (train texts, test texts)."""
    train, test = [], []
    for _, text in documents(root):
        (test if is_test(text) else train).append(text)
    return train, test


if __name__ == "__main__":
    tr, te = split()
    n = lambda xs: sum(len(x) for x in xs)  # noqa: E731
    print(f"{len(tr)} train documents ({n(tr)} chars), {len(te)} test ({n(te)} chars)")
