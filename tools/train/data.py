"""Corpus -> tokenizer -> id streams, shared by both trainers."""
import os

import corpus
import tokenizer
from common import stream


def prepare(out_dir, vocab, seed, max_docs=None, tokenizer_path=None):
    """Trains (or reuses) OUT/tokenizer.model on the train split; -> (train stream, test docs,
    vocab size). max_docs keeps the first N train / N//20 test documents (smoke tests)."""
    train, test = corpus.split()
    if max_docs:
        train, test = train[:max_docs], test[:max(1, max_docs // 20)]
    tok = os.path.join(out_dir, "tokenizer.model")
    if tokenizer_path:
        if os.path.abspath(tokenizer_path) != os.path.abspath(tok):
            with open(tokenizer_path, "rb") as f, open(tok, "wb") as g:
                g.write(f.read())
    else:
        tokenizer.train(train, tok, vocab, seed)
    V = piece_count(tok)
    return stream(tokenizer.encode(tok, train)), tokenizer.encode(tok, test), V


def piece_count(model_path):
    """Number of pieces of a SentencePiece model (spm_export_vocab prints one per line)."""
    import subprocess
    r = subprocess.run(["spm_export_vocab", f"--model={model_path}"], capture_output=True,
                       text=True, check=True)
    return sum(1 for l in r.stdout.split("\n") if l)
