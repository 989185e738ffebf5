"""Diagnostic: what the preference prototype asks the denoiser for, with and without the prompt's weight.

    .venv/bin/python benchmarks/prototype.py                          # the trained models under data/
    .venv/bin/python benchmarks/prototype.py --root /path/to/clone --weights 0 1 2 3

For each evaluation prompt and each `prototype_prompt_weight` k, over every 34th Step 1 segment:
  matching   the share of the prototype's softmax weight on catalogue images that show the attribute
             the prompt names (the condition agrees with the prompt);
  utility    the segment's true utility of those images, weighted the same way (the condition keeps the
             segment's taste), beside two floors: a uniform draw among the matching images and the best
             matching image.
No sampling: it reads the trained Step 1, Step 2, W and CLIP and the world's ground truth (about 20 s).
Results go to benchmarks/results/prototype.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefgen.config import section_config  # noqa: E402
from prefgen.eval.generation import named_attribute  # noqa: E402
from prefgen.eval.truth import load_truth  # noqa: E402
from prefgen.generation.conditioning import preference_prototype  # noqa: E402
from prefgen.generation.data import load_w, mapped_embeddings, split_ids  # noqa: E402
from prefgen.params import load_params
from prefgen.paths import Paths  # noqa: E402
from prefgen.vision import semantic  # noqa: E402
from prefgen.vision.scorer import PreferenceScorer  # noqa: E402


def measure(root: Path, params_path: Path, weights: list[float], every: int = 34) -> dict:
    params = load_params(params_path)
    sampler, ev = section_config(params, "sampler"), section_config(params, "eval_generation")
    visual, paths = section_config(params, "visual_features"), Paths.from_params(params).rooted(root)
    ids = split_ids(paths.split, "train")  # the sampler's catalogue
    catalogue = mapped_embeddings(paths.mapper, paths.visual, ids)
    clip, clip_cfg = semantic.load_model(paths.clip)
    tokenizer = semantic.build_tokenizer(clip_cfg)
    scorer = PreferenceScorer.from_outputs(paths.mapper, paths.graph, paths.clip, visual)
    truth = load_truth(paths.truth)
    segments = sorted(scorer.segment_row)[::every]
    attributes = {r["image_id"]: r for r in truth.images.iter_rows(named=True)}
    hue, pattern, shape = (np.array([attributes[i][a] for i in ids]) for a in ("hue", "pattern", "shape"))
    utility = torch.from_numpy(truth.segment_tastes(segments).class_utility()[:, hue, pattern, shape]).float()  # (S, N)
    with torch.no_grad():
        p = scorer.p[scorer.rows(segments)]
        logits = scorer.d(p[:, None, :].expand(-1, len(catalogue), -1), catalogue[None].expand(len(segments), -1, -1))
        catalogue_text, scale = load_w(paths.w)(catalogue), clip.logit_scale.exp()
        rows = []
        for prompt in ev.prompts:
            attribute, value = named_attribute(prompt)
            shows = torch.from_numpy({"hue": hue, "pattern": pattern, "shape": shape}[attribute] == value).float()
            prompt_logits = scale * (catalogue_text @ semantic.embed_texts(clip, tokenizer, [prompt])[0])
            row = {"prompt": prompt, "uniform_matching_utility": float((utility * shows).sum(1).mean() / shows.sum()),
                   "best_matching_utility": float(utility.masked_fill(shows == 0, -torch.inf).max(1).values.mean())}
            for k in weights:
                # the sampler's own prototype over one-hot images: its weights on the catalogue
                w = preference_prototype(logits, torch.eye(len(ids)), sampler.prototype_tau, k * prompt_logits)
                row[f"k={k:g}"] = {"matching": float((w @ shows).mean()), "utility": float((w * utility).sum(1).mean())}
            rows.append(row)
    return {"segments": len(segments), "catalogue": len(ids), "clip_logit_scale": float(scale), "tau": sampler.prototype_tau, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--params", type=Path, default=None, help="default: ROOT/params.yaml")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = measure(args.root, args.params or args.root / "params.yaml", args.weights)
    print(f"{result['segments']} segments, {result['catalogue']} catalogue images, CLIP logit scale {result['clip_logit_scale']:.1f}")
    print("| prompt | uniform / best matching | " + " | ".join(f"k={k:g}: matching, utility" for k in args.weights) + " |")
    for row in result["rows"]:
        cells = [f"{row[f'k={k:g}']['matching']:.3f}, {row[f'k={k:g}']['utility']:.2f}" for k in args.weights]
        print(f"| {row['prompt']} | {row['uniform_matching_utility']:.2f} / {row['best_matching_utility']:.2f} | " + " | ".join(cells) + " |")
    out = ROOT / "benchmarks" / "results" / "prototype.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
