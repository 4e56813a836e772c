"""SentencePiece tokenizer for the demo models, through the Debian `sentencepiece` CLI
(spm_train / spm_encode / spm_decode), so no Python binding is needed."""
import os
import shutil
import subprocess
import sys
import tempfile


def train(train_texts, out_path, vocab, seed=0):
    """BPE with byte fallback; ids 0/1/2 = unk/bos/eos, no pad (as tools/gen_tiny_model.py).
    Runs in a scratch dir with relative paths: the model file embeds the trainer flags."""
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "corpus.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(train_texts) + "\n")
        cmd = ["spm_train", "--input=corpus.txt", "--model_prefix=tokenizer", "--model_type=bpe",
               f"--vocab_size={vocab}", "--byte_fallback=true", "--unk_id=0", "--bos_id=1",
               "--eos_id=2", "--pad_id=-1", "--num_threads=1", f"--random_seed={seed}",
               "--character_coverage=1.0", "--max_sentence_length=20000", "--minloglevel=2"]
        r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"tokenizer: spm_train failed:\n{r.stderr[-2000:]}")
        shutil.copyfile(os.path.join(tmp, "tokenizer.model"), out_path)


def encode(model_path, texts):
    """-> list of id lists, one per text (texts must not contain newlines)."""
    r = subprocess.run(["spm_encode", f"--model={model_path}", "--output_format=id"],
                       input="\n".join(texts) + "\n", capture_output=True, text=True, check=True)
    lines = r.stdout.split("\n")[:len(texts)]
    return [[int(t) for t in l.split()] for l in lines]


def decode(model_path, ids):
    r = subprocess.run(["spm_decode", f"--model={model_path}", "--input_format=id"],
                       input=" ".join(map(str, ids)) + "\n", capture_output=True, text=True,
                       check=True)
    return r.stdout.rstrip("\n")
