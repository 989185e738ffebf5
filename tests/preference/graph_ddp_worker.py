"""Step 1 for a fixed number of epochs on the planted world, run by the data-parallel test (one process or torchrun's).

    python -m tests.preference.graph_ddp_worker OUT.safetensors BATCH_SIZE
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

from safetensors.torch import save_file

from prefgen.preference.train import train_for
from prefgen.training.config import TrainerConfig
from tests.preference.test_train import CFG, planted


def main(out: str, batch_size: str) -> None:
    cfg = replace(CFG, batch_size=int(batch_size), loss="softmax", reg=0.0)
    model, _, _ = train_for(planted(), cfg, 3, log=lambda _: None, trainer=TrainerConfig(device="cpu"))
    if os.environ.get("RANK", "0") == "0":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
