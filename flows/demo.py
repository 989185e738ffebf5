"""Prefect flow `demo`: what `make demo` runs: the retrain flow on the embedded default world, then the nightly flow.

synth -> every DVC stage (the active profile, `demo` by default) -> the bundle's registration
and champion gate -> the default campaign's image sets from the champion -> their gallery,
whose path it prints last. Both flows run as subflows of one flow run; run again, nothing
is retrained and the night's images are already there.

    python -m flows.demo [ROOT]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow

from flows import nightly as nightly_flow, params_or_exit, retrain as retrain_flow


@flow(name="demo", log_prints=True)
def demo(root: str = ".") -> dict[str, Any]:
    stages = retrain_flow.retrain(root)
    night = nightly_flow.nightly(root)
    return {"retrain": stages, "nightly": night}


def main(root: str = ".") -> None:
    params_or_exit(root)
    done = demo(root)
    retrain_flow.report(done["retrain"], Path(root).resolve())
    nightly_flow.report(done["nightly"])
    print(f"\nopen the gallery: {done['nightly']['gallery']}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
