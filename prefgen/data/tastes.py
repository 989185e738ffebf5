"""The synthetic world's taste model: what a taster (individual or group) likes.

A taste has four parts over the images' discrete attributes (render.py):

    u(image) = hue[h] + pattern[p] + shape[s] + combo[h, s]

`combo` is the interaction the world needs to be hard: a favourite colour
liked only on some shapes (and disliked on the others), which no additive
per-attribute score can capture. A group's taste is the influence-weighted
mean of its members' tastes, part by part (utility is linear in the parts).
Choices are a softmax over utilities at a temperature, plus uniform noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prefgen.data.render import HUES, PATTERNS, SHAPES

N_H, N_P, N_S = len(HUES), len(PATTERNS), len(SHAPES)


@dataclass
class Tastes:
    hue: np.ndarray  # (n, N_H)
    pattern: np.ndarray  # (n, N_P)
    shape: np.ndarray  # (n, N_S)
    combo: np.ndarray  # (n, N_H, N_S)

    def __len__(self) -> int:
        return len(self.hue)

    def class_utility(self) -> np.ndarray:
        """(n, N_H, N_P, N_S): the utility of every attribute combination."""
        return (self.hue[:, :, None, None] + self.pattern[:, None, :, None] + self.shape[:, None, None, :]
                + self.combo[:, :, None, :])

    def utility(self, hue: np.ndarray, pattern: np.ndarray, shape: np.ndarray) -> np.ndarray:
        """(n, m): utility of m images with the given attribute indexes."""
        return self.class_utility()[:, hue, pattern, shape]

    def take(self, index: np.ndarray) -> Tastes:
        return Tastes(self.hue[index], self.pattern[index], self.shape[index], self.combo[index])

    def flat(self) -> np.ndarray:
        """(n, N_H + N_P + N_S + N_H*N_S): all parts side by side (for storage and hashing)."""
        return np.concatenate([self.hue, self.pattern, self.shape, self.combo.reshape(len(self), -1)], axis=1)

    @staticmethod
    def from_flat(flat: np.ndarray) -> Tastes:
        a, b, c = N_H, N_H + N_P, N_H + N_P + N_S
        return Tastes(flat[:, :a], flat[:, a:b], flat[:, b:c], flat[:, c:].reshape(-1, N_H, N_S))


def _interaction(rng: np.random.Generator, n: int) -> np.ndarray:
    """A favourite hue liked on a random subset of shapes and disliked on the rest."""
    combo = np.zeros((n, N_H, N_S))
    favourite = rng.integers(0, N_H, n)
    liked = rng.random((n, N_S)) < 0.5
    liked[np.arange(n), rng.integers(0, N_S, n)] = True  # at least one liked shape
    strength = rng.uniform(1.5, 2.5, n)[:, None]
    combo[np.arange(n), favourite] = np.where(liked, strength, -strength / 2)
    return combo


def community_tastes(rng: np.random.Generator, n_communities: int) -> Tastes:
    return Tastes(rng.normal(0, 1.0, (n_communities, N_H)), rng.normal(0, 0.8, (n_communities, N_P)),
                  rng.normal(0, 0.8, (n_communities, N_S)), _interaction(rng, n_communities))


def individual_tastes(rng: np.random.Generator, community: np.ndarray, centres: Tastes) -> Tastes:
    """Community centre plus personal deviation; 30% swap in a personal colour-on-shape interaction."""
    n = len(community)
    base = centres.take(community)
    own = rng.random(n) < 0.3
    combo = np.where(own[:, None, None], _interaction(rng, n), base.combo)
    return Tastes(base.hue + rng.normal(0, 0.6, (n, N_H)), base.pattern + rng.normal(0, 0.5, (n, N_P)),
                  base.shape + rng.normal(0, 0.5, (n, N_S)), combo)


def weighted_mean(tastes: Tastes, groups: np.ndarray, members: np.ndarray, weights: np.ndarray, n_groups: int) -> Tastes:
    """Each group's taste: sum over its member rows of weight * member taste."""
    flat = tastes.flat()[members] * weights[:, None]
    out = np.zeros((n_groups, flat.shape[1]))
    np.add.at(out, groups, flat)
    return Tastes.from_flat(out)


def sample_choices(rng: np.random.Generator, tastes: Tastes, counts: np.ndarray, image_class: np.ndarray,
                   temperature: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw counts[t] images for each taster t. Returns (taster index, image index) arrays.

    A choice is a uniform image with probability `noise`, else an attribute class
    drawn by softmax(utility / temperature) weighted by how many images it holds,
    then a uniform image of that class.
    """
    n_img = len(image_class)
    class_size = np.bincount(image_class, minlength=N_H * N_P * N_S)
    logits = tastes.class_utility().reshape(len(tastes), -1) / temperature
    logits = np.where(class_size > 0, logits + np.log(np.maximum(class_size, 1)), -np.inf)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    taster = np.repeat(np.arange(len(tastes)), counts)
    # One searchsorted over all rows at once: row t's cdf is shifted into [t, t + 1].
    k = cdf.shape[1]
    shifted = (np.minimum(cdf, 1.0) + np.arange(len(tastes))[:, None]).ravel()
    chosen_class = np.searchsorted(shifted, taster + rng.random(len(taster)) * 0.999999) - taster * k
    chosen_class = chosen_class.clip(0, k - 1)
    by_class = np.argsort(image_class, kind="stable")
    start = np.concatenate(([0], np.cumsum(class_size)))
    offset = (rng.random(len(taster)) * class_size[chosen_class]).astype(np.int64)
    image = by_class[start[chosen_class] + offset]
    random_pick = rng.random(len(taster)) < noise
    image[random_pick] = rng.integers(0, n_img, int(random_pick.sum()))
    return taster, image
