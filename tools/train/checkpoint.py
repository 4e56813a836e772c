"""Load an exported demo checkpoint (DECO or SoftMoE) back into its torch model, so that
evaluation runs on exactly the weights the engine reads (stored dtype upcast to fp32)."""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "py"))
import safetensors_io as st  # noqa: E402


def load(model_dir):
    """-> (torch model in eval mode, config dict, kind 'deco' | 'softmoe')."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    w = {n: torch.from_numpy(a.copy()) for n, a in st.load_model(model_dir).items()}
    V = w["model.embed_tokens.weight"].shape[0]  # the config's vocab_size may be stale (DECO)
    if cfg.get("model_type") == "softmoe":
        from softmoe_model import SoftMoELM
        model, kind = SoftMoELM(dict(cfg, vocab_size=V)), "softmoe"
        w = {(n[:-len(".weight")] if ".mlp.experts." in n else n): t for n, t in w.items()}
    else:
        import gen_tiny_model as gen
        from deco_model import DecoLM
        model, kind = DecoLM(dict(cfg, vocab_size=V), gen.moe_pattern(cfg)), "deco"
    model.load_state_dict(w, strict=True)
    return model.eval(), cfg, kind
