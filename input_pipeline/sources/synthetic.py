"""A procedurally rendered image-caption dataset: coloured shapes on varied backgrounds.

It needs no download, so the quickstart trains on it, and it asks a question that real data
cannot answer cleanly: does CLIP compose attributes? Every image shows one shape (circle, square,
triangle, star, cross, heart, ...), small or large, in one cell of a 3x3 grid, on a muted plain or
gradient background, sometimes with light noise. Its caption names the shape's colour, its shape
or both: "a small red circle in the top left", "something red", "a picture of a star".

Held-out combinations. Colour-shape pair (shape i, colour j) is held out of training when
`(j - i) mod num_colours` is one of `holdout_diagonals` (default: the diagonal 0). These are the
diagonals of a Latin square, so every shape and every colour is still seen in training, each with
all but `len(holdout_diagonals)` partners, and the held-out pairs are spread evenly over both
attributes. The "eval" split draws half of its images from held-out pairs, so that zero-shot
accuracy can be reported separately on seen and on never-seen combinations.

Why the captions look the way they do. The contrastive loss rewards every regularity of the
training pairs, including the one that holding out creates: "red things are never stars". How the
captions are built decides where the model stores it, and so whether a red star is recognised:
  * A caption naming only the shape of a coloured shape ("a picture of a star" for a blue star)
    is the worst case: a red circle elsewhere in the batch must score low against it, and the
    word "star" is the only place to put "not red". Zero-shot shape accuracy on held-out pairs
    then falls below chance (0.00 in our runs of an earlier quickstart: 32x32 images, 600 steps).
  * A caption naming both ("a blue star") lets the colour word account for colour mismatches,
    so the shape word stays nearly colour-free; full captions alone gave 0.57 on seen and 0.21 on
    held-out pairs after that quickstart's 600 steps.
  * So the shape-only captions go with black or white shapes (colour UNCOLOURED), which no
    caption names: they teach colour-free shape features and a shape word that means only the
    shape. With the defaults (40% of them, 10% colour-only), that model reached 0.39 on seen and
    0.36 on held-out pairs after 600 steps, and 0.82 and 0.67 after 1500 (chance 0.17). Today's
    quickstart's figures are in benchmarks/RESULTS.md.
  * Colour-only captions ("something red") name coloured shapes: colour is so easy to see that
    held-out colour accuracy stays near 1.0 whatever the mix.
  * Full captions vary word order and phrasing ("a red star", "a star, coloured red", "a star that
    is red"), so the text tower reads words rather than positions. The shape colour is jittered,
    and backgrounds are tinted towards palette colours other than the shape's, so colour features
    must look at the shape.

Determinism. A sample is a pure function of (seed, split, index): its random numbers come from a
generator seeded with exactly these, so any index can be rendered alone, in any order, on any
process; this is what makes sharding and exact resume trivial. (Bit-exact across numpy versions
only as far as numpy's Generator distributions are.)
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable, Mapping, NamedTuple

import numpy as np
import tensorflow as tf

from clip_jax import settings

# Signed distance functions of unit-sized shapes (inscribed in the unit circle, y pointing up):
# negative inside, in units of the shape's radius. Anti-aliasing comes from the distance itself.
ShapeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _box(x, y, half_width, half_height):
  dx, dy = np.abs(x) - half_width, np.abs(y) - half_height
  outside = np.hypot(np.maximum(dx, 0.0), np.maximum(dy, 0.0))
  return outside + np.minimum(np.maximum(dx, dy), 0.0)


def _circle(x, y):
  return np.hypot(x, y) - 1.0


def _square(x, y):
  return _box(x, y, 0.7, 0.7)


def _cross(x, y):
  return np.minimum(_box(x, y, 0.94, 0.32), _box(x, y, 0.32, 0.94))


def _diamond(x, y):
  return (np.abs(x) + np.abs(y) - 1.0) / np.sqrt(2.0)


def _ring(x, y):
  return np.abs(np.hypot(x, y) - 0.72) - 0.28


def _triangle(x, y):
  """Equilateral, pointing up, centroid at the origin (after Inigo Quilez's formula)."""
  k = np.sqrt(3.0)
  half_side = k / 2.0
  x, y = np.abs(x) - half_side, y + half_side / k
  folded = x + k * y > 0.0
  x, y = np.where(folded, (x - k * y) / 2.0, x), np.where(folded, (-k * x - y) / 2.0, y)
  x = x - np.clip(x, -2.0 * half_side, 0.0)
  return -np.hypot(x, y) * np.sign(y)


def _star(x, y, inner_ratio=0.45):
  """Five-pointed, one point up: folds the plane into one arm, then measures to its edge."""
  fold_1 = np.array([0.809016994375, -0.587785252292])
  fold_2 = np.array([-fold_1[0], fold_1[1]])
  x = np.abs(x)
  for fold in (fold_1, fold_2):
    reflect = 2.0 * np.maximum(fold[0] * x + fold[1] * y, 0.0)
    x, y = x - reflect * fold[0], y - reflect * fold[1]
  x, y = np.abs(x), y - 1.0
  edge_x, edge_y = -inner_ratio * fold_1[1], inner_ratio * fold_1[0] - 1.0
  along = np.clip((x * edge_x + y * edge_y) / (edge_x**2 + edge_y**2), 0.0, 1.0)
  return np.hypot(x - edge_x * along, y - edge_y * along) * np.sign(y * edge_x - x * edge_y)


def _heart(x, y, scale=0.64, offset=0.62):
  """Two lobes and a tip (Inigo Quilez's heart, tip at the origin, moved into the unit circle)."""
  x, y = np.abs(x) * scale, y * scale + offset
  lobe = np.hypot(x - 0.25, y - 0.75) - np.sqrt(2.0) / 4.0
  diagonal = np.maximum(x + y, 0.0) / 2.0
  body = np.sqrt(np.minimum(x**2 + (y - 1.0)**2, (x - diagonal)**2 + (y - diagonal)**2))
  return np.where(x + y > 1.0, lobe, body * np.sign(x - y)) / scale


SHAPES: dict[str, ShapeFn] = {
    "circle": _circle, "square": _square, "triangle": _triangle, "star": _star,
    "cross": _cross, "heart": _heart, "diamond": _diamond, "ring": _ring,
}

# Saturated RGB in [0, 1]. The first six are the corners of the RGB cube (distance >= 0.75);
# orange and purple are closer to their neighbours, for harder variants.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.9, 0.1, 0.1), "green": (0.1, 0.75, 0.15), "blue": (0.1, 0.2, 0.9),
    "yellow": (0.95, 0.85, 0.1), "magenta": (0.85, 0.1, 0.85), "cyan": (0.1, 0.8, 0.85),
    "orange": (1.0, 0.55, 0.05), "purple": (0.5, 0.15, 0.75),
}



def _names_of(table: Mapping[str, object]) -> tuple[Callable[[object], bool], str]:
  return ((lambda value: isinstance(value, tuple) and set(value) <= set(table)
           and 2 <= len(value) == len(set(value))),
          f"two or more distinct names of {', '.join(table)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Synthetic:
  """The synthetic world's settings, data.synthetic.*: the shapes and colours drawn, the
  colour-shape diagonals held out of training, and what captions mention."""
  shapes: tuple[str, ...] = settings.setting(tuple(SHAPES)[:6], _names_of(SHAPES))
  colours: tuple[str, ...] = settings.setting(tuple(COLOURS)[:6], _names_of(COLOURS))
  holdout_diagonals: tuple[int, ...] = settings.setting((0,), (
      lambda value: isinstance(value, tuple) and all(settings.is_count(item) for item in value),
      "a tuple of fewer diagonals than colours, each in 0..len(colours) - 1"))
  shape_only_captions: float = settings.setting(0.4, settings.FRACTION)
  colour_only_captions: float = settings.setting(0.1, settings.FRACTION)


def check_settings(synthetic: Synthetic, key: str) -> None:
  """What no single key of data.synthetic can check: every colour keeps a shape to be seen with,
  and the caption fractions leave room for full captions."""
  colours = len(synthetic.colours)
  if len(set(synthetic.holdout_diagonals)) >= colours or any(
      not 0 <= diagonal < colours for diagonal in synthetic.holdout_diagonals):
    raise ValueError(f"{key}.holdout_diagonals={synthetic.holdout_diagonals!r}; allowed: fewer "
                     f"than {colours} distinct values, each in 0..{colours - 1}, so that every "
                     "colour is seen with some shape.")
  if synthetic.shape_only_captions + synthetic.colour_only_captions > 1:
    raise ValueError(f"{key}.shape_only_captions={synthetic.shape_only_captions} and "
                     f"colour_only_captions={synthetic.colour_only_captions}; allowed: a sum <= 1.")


settings.SOURCES.register(settings.SourceKind(
    name=settings.SYNTHETIC, keys=Synthetic, check=check_settings))

# Radius ranges as fractions of the image side.
SIZES = {"small": (0.15, 0.2), "large": (0.26, 0.34)}
SIZE_NAMES = tuple(SIZES)

# Phrases for the cells of the 3x3 grid, by row then column.
WHERE = (("in the top left", "at the top", "in the top right"),
         ("on the left", "in the center", "on the right"),
         ("in the bottom left", "at the bottom", "in the bottom right"))

# Captions by what they mention. The slots are {size}, {colour}, {shape} and {where}.
CAPTIONS = {
    "full": (
        "a {size} {colour} {shape} {where}",
        "a {colour} {shape}",
        "a picture of a {size} {colour} {shape}",
        "a photo of a {colour} {shape} {where}",
        "a {shape}, coloured {colour}",
        "a {size} {shape} that is {colour}",
        "{where} there is a {colour} {shape}",
        "a {shape} in {colour} {where}",
    ),
    "shape": (
        "a {shape}",
        "a picture of a {shape}",
        "a photo of a {size} {shape}",
        "a {size} {shape} {where}",
        "{where} there is a {shape}",
    ),
    "colour": (
        "something {colour}",
        "a {colour} thing",
        "a {colour} object {where}",
        "a {size} {colour} thing",
        "something {colour} {where}",
    ),
}

UNCOLOURED = -1  # The colour id of a black or white shape, which captions never name.
SPLITS = {"train": 0, "eval": 1}  # Seed streams: eval images are never training images.

COLOUR_JITTER = 0.06  # Per channel, uniform; well below the distance between colours.
MAX_TINT = 0.35  # How far a grey background may be tinted towards another palette colour.
MAX_ROTATION = np.deg2rad(15.0)  # Small enough that a square never becomes a diamond.
NOISE_STD = 0.03
CHUNK_SIZE = 64  # Samples rendered per call into Python: amortises the tf.data round trip.


class Sample(NamedTuple):
  image: np.ndarray  # uint8 [H, W, 3]
  caption: str
  shape: int  # Index into World.shapes.
  colour: int  # Index into World.colours, or UNCOLOURED.
  heldout: bool  # Whether (shape, colour) is a held-out combination.


class Scene(NamedTuple):
  """What an image shows, before it is painted. Lengths are fractions of the image side."""
  shape: int
  colour: int
  radius: float
  centre_x: float  # From the left.
  centre_y: float  # From the top.
  angle: float  # Radians, anticlockwise.
  caption: str
  slots: dict[str, str]  # What fills the caption templates: shape, colour, size, where.


@dataclasses.dataclass(frozen=True)
class World:
  """Everything a sample depends on besides its index: the data settings that matter here."""
  seed: int
  image_size: int
  shapes: tuple[str, ...]
  colours: tuple[str, ...]
  holdout_diagonals: tuple[int, ...]
  # Fractions of training captions that name only the shape (of a black or white shape), and
  # only the colour; the rest name both.
  shape_only_captions: float
  colour_only_captions: float

  @classmethod
  def from_settings(cls, data: settings.Data) -> World:
    """The world of `data.synthetic`, `data.seed` and `data.image_size` (settings.parse checked)."""
    keys = data.source or Synthetic()  # a Data made by hand, without its section: the defaults
    return cls(seed=data.seed, image_size=data.image_size, **dataclasses.asdict(keys))

  def is_heldout(self, shape: int, colour: int) -> bool:
    return colour != UNCOLOURED and (colour - shape) % len(self.colours) in self.holdout_diagonals

  @functools.cached_property
  def combinations(self) -> dict[bool, list[tuple[int, int]]]:
    """(shape, colour) pairs, keyed by whether they are held out."""
    pairs = [(shape, colour) for shape in range(len(self.shapes))
             for colour in range(len(self.colours))]
    return {heldout: [pair for pair in pairs if self.is_heldout(*pair) == heldout]
            for heldout in (False, True)}


def vocabulary() -> tuple[str, ...]:
  """Every word the grammar can produce, over all shapes and colours, sorted."""
  texts = ([template for templates in CAPTIONS.values() for template in templates]
           + list(SHAPES) + list(COLOURS) + list(SIZES)
           + [phrase for row in WHERE for phrase in row] + ["an"])
  words = {word for text in texts for word in re.findall(r"[a-z]+", re.sub(r"{\w+}", " ", text))}
  return tuple(sorted(words))


def render(world: World, split: str, index: int) -> Sample:
  """The sample `index` of `split`: the same arguments always give the same sample."""
  rng = np.random.default_rng((world.seed, SPLITS[split], index))
  scene = _draw_scene(world, split, index, rng)
  return Sample(image=_paint(world, scene, rng), caption=scene.caption, shape=scene.shape,
                colour=scene.colour, heldout=world.is_heldout(scene.shape, scene.colour))


def eval_captions(world: World, index: int) -> tuple[str, ...]:
  """Every "full" phrasing of "eval" sample `index`, its own caption among them.

  Several captions per image, as COCO has, for retrieval; the image is `render`'s.
  """
  rng = np.random.default_rng((world.seed, SPLITS["eval"], index))
  slots = _draw_scene(world, "eval", index, rng).slots
  return tuple(_phrase(template, slots) for template in CAPTIONS["full"])


def _phrase(template: str, slots: dict[str, str]) -> str:
  return re.sub(r"\ba (?=[aeiou])", "an ", template.format(**slots))


def _draw_scene(world: World, split: str, index: int, rng) -> Scene:
  """Everything but the pixels, so that a scene does not depend on the image size."""
  shape, colour = _draw_combination(world, split, index, rng)
  mention = "full" if split == "eval" else _draw_mention(world, rng)
  size = _pick(SIZE_NAMES, rng)
  radius = rng.uniform(*SIZES[size])
  row, column = rng.integers(3, size=2)
  # The centre lies in the middle half of its cell, within the range that keeps the whole shape
  # inside the image, so the position phrase is never ambiguous.
  centre_y, centre_x = radius + (np.array([row, column]) + rng.uniform(0.25, 0.75, size=2)
                                 ) / 3.0 * (1.0 - 2.0 * radius)
  angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
  slots = dict(shape=world.shapes[shape], colour=world.colours[colour], size=size,
               where=WHERE[row][column])
  return Scene(shape=shape, colour=UNCOLOURED if mention == "shape" else colour, radius=radius,
               centre_x=centre_x, centre_y=centre_y, angle=angle,
               caption=_phrase(_pick(CAPTIONS[mention], rng), slots), slots=slots)


def _paint(world: World, scene: Scene, rng) -> np.ndarray:
  """The anti-aliased shape over its background, maybe with noise: uint8 [H, W, 3]."""
  background = _background(world, scene.colour, rng)
  coverage = _coverage(SHAPES[world.shapes[scene.shape]], world.image_size, scene)[..., None]
  image = (background * (1.0 - coverage)
           + _shape_rgb(world, scene.colour, background, rng) * coverage)
  if rng.random() < 0.5:
    image = image + rng.normal(0.0, NOISE_STD, size=image.shape)
  return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _pick(options, rng):
  return options[rng.integers(len(options))]


def _draw_combination(world: World, split: str, index: int, rng) -> tuple[int, int]:
  """Training sees seen pairs only; eval alternates seen and held-out pairs (if there are any)."""
  heldout = split == "eval" and index % 2 == 1 and bool(world.combinations[True])
  return _pick(world.combinations[heldout], rng)


def _draw_mention(world: World, rng) -> str:
  """What the caption names: "shape", "colour" or "full" (both)."""
  shape_only, colour_only = world.shape_only_captions, world.colour_only_captions
  return rng.choice(("full", "shape", "colour"),
                    p=(1.0 - shape_only - colour_only, shape_only, colour_only))


def _muted_colour(world: World, shape_colour: int, rng) -> np.ndarray:
  """A grey tinted towards a palette colour other than the shape's."""
  others = [name for index, name in enumerate(world.colours) if index != shape_colour]
  weight = rng.uniform(0.0, MAX_TINT)
  return (1.0 - weight) * rng.uniform(0.15, 0.85) + weight * np.array(COLOURS[_pick(others, rng)])


def _shape_rgb(world: World, colour: int, background: np.ndarray, rng) -> np.ndarray:
  """The palette colour, jittered; black or white (whichever stands out more) if UNCOLOURED."""
  if colour == UNCOLOURED:
    return np.full(3, 0.05 if background.mean() > 0.5 else 0.95)
  jitter = rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3)
  return np.clip(np.array(COLOURS[world.colours[colour]]) + jitter, 0.0, 1.0)


@functools.lru_cache(maxsize=None)
def _pixel_grid(image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel centres in [0, 1], x to the right and y downwards, each [H, W]."""
  centres = (np.arange(image_size) + 0.5) / image_size
  return np.meshgrid(centres, centres)


def _background(world: World, shape_colour: int, rng) -> np.ndarray:
  """Plain or linear gradient between two muted colours: float [H, W, 3]."""
  first = _muted_colour(world, shape_colour, rng)
  if rng.random() < 0.5:
    return np.broadcast_to(first, (world.image_size, world.image_size, 3))
  second = _muted_colour(world, shape_colour, rng)
  angle = rng.uniform(0.0, 2.0 * np.pi)
  x, y = _pixel_grid(world.image_size)
  ramp = (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle) + 0.5  # [H, W], about [0, 1]
  ramp = np.clip(ramp, 0.0, 1.0)[..., None]
  return (1.0 - ramp) * first + ramp * second


def _coverage(shape_fn: ShapeFn, image_size: int, scene: Scene) -> np.ndarray:
  """Anti-aliased fraction of each pixel inside the shape: float [H, W] in [0, 1]."""
  x, y = _pixel_grid(image_size)
  dx, dy = (x - scene.centre_x) / scene.radius, (scene.centre_y - y) / scene.radius
  cos, sin = np.cos(scene.angle), np.sin(scene.angle)
  distance = shape_fn(cos * dx + sin * dy, cos * dy - sin * dx)  # In radii.
  return np.clip(0.5 - distance * scene.radius * image_size, 0.0, 1.0)


def _render_chunk(world: World, split: str, indices: np.ndarray):
  """`render` over a chunk of indices, as stacked arrays for tf.numpy_function."""
  samples = [render(world, split, int(index)) for index in indices]
  return (np.stack([sample.image for sample in samples]).reshape(
              len(samples), world.image_size, world.image_size, 3),
          np.array([sample.caption.encode() for sample in samples], dtype=object),
          np.array([sample.shape for sample in samples], np.int32),
          np.array([sample.colour for sample in samples], np.int32),
          np.array([sample.heldout for sample in samples], bool))


def examples(data: settings.Data, indices: tf.data.Dataset,
             split: str = "train") -> tf.data.Dataset:
  """The source: sample indices (int64) in, {'image', 'caption', 'shape', 'colour', 'heldout'} out.

  Rendering happens in Python (tf.numpy_function) in chunks of CHUNK_SIZE consecutive elements;
  the order of `indices` is kept.
  """
  world = World.from_settings(data)
  render_chunk = functools.partial(_render_chunk, world, split)
  size = world.image_size

  @tf.autograph.experimental.do_not_convert
  def render_in_graph(chunk):
    image, caption, shape, colour, heldout = tf.numpy_function(
        render_chunk, [chunk], [tf.uint8, tf.string, tf.int32, tf.int32, tf.bool],
        stateful=False)
    image.set_shape([None, size, size, 3])
    for tensor in (caption, shape, colour, heldout):
      tensor.set_shape([None])
    return dict(image=image, caption=caption, shape=shape, colour=colour, heldout=heldout)

  return (indices.batch(CHUNK_SIZE)
          .map(render_in_graph, num_parallel_calls=tf.data.AUTOTUNE)
          .unbatch())
