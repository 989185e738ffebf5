"""The CLIP trainer under torchrun on (uint8 image, row) items, for the data-parallel test:

    torchrun --nproc_per_node 2 -m tests.vision.clip_ddp_worker OUT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from prefgen.training.config import TrainerConfig
from prefgen.vision import semantic
from tests.vision.test_semantic import DATA_PARALLEL, TRAIN_ITEMS, VAL_ITEMS


def main(out: Path) -> None:
    model, history = semantic.train_clip(*TRAIN_ITEMS, *VAL_ITEMS, cfg=DATA_PARALLEL, trainer=TrainerConfig(device="cpu"), log=lambda _: None)
    weights = {k: v.contiguous() for k, v in semantic._trainable_state(model).items()}
    save_file(weights, out / f"rank{os.environ['RANK']}.safetensors", {"world": str(history.world_size)})


if __name__ == "__main__":
    main(Path(sys.argv[1]))
