"""Frozen synthetic worlds: name -> content hash.

Metrics computed on a world are only comparable while the world stays the
same, so a named world is frozen here once published: `prefgen synth` refuses
to write a world under a frozen name whose content hash differs (changed
params, seed, or generator code). To change the world, give it a new name in
params.yaml (synth.world) and add its hash here.
"""

from __future__ import annotations

FROZEN: dict[str, str] = {
    # The default world of params.yaml (its size: docs/WORLD.md).
    "world-v1": "86748a17db13776a944d4d21464544a720b6dbf2bf125675ba0c77b7267812fe",
    # world-v1's people, clicks and images rendered at 128 px (synth.image_size: 128): real 128-px data.
    "world-v1-128": "202faadb100acd4dd442feab6e9b0080bfb77fe03ee222ef8d2a83a8b94644ad",
}


class FrozenWorldError(RuntimeError):
    pass


def check_frozen(world: str, sha256: str) -> bool:
    """True if `world` is frozen (and matches); raises if it is frozen with another hash."""
    expected = FROZEN.get(world)
    if expected is None:
        return False
    if expected != sha256:
        raise FrozenWorldError(
            f"world '{world}' is frozen with content hash {expected[:16]}…, but these params and this code "
            f"produce {sha256[:16]}…: the world would change under a name others compare against. "
            "Restore the params/code, or set synth.world to a new name (and freeze it in prefgen/data/worlds.py)."
        )
    return True
