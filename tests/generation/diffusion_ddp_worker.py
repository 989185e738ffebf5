"""The diffusion trainer under torchrun, for the data-parallel test:

    torchrun --nproc_per_node 2 -m tests.generation.diffusion_ddp_worker OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from prefgen.generation.train_diffusion import fit, rank_weight_sha256
from prefgen.training.config import TrainerConfig
from tests.generation.tiny import DIFFUSION, diffusion_data


def main(out: Path) -> None:
    unet, history = fit(diffusion_data(), DIFFUSION, TrainerConfig(device="cpu"), out / "checkpoint", out / "curve.csv",
                        log=lambda _: None)
    hashes = rank_weight_sha256(unet)
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps({"world": history.world_size, "hashes": hashes,
                                                                     "losses": [e["loss"] for e in history.epochs]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
