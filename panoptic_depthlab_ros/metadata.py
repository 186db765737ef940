"""Class metadata: what a network output channel means.

Stored inside our checkpoints so a model file describes itself.  The Cityscapes
table (what Detectron2's Cityscapes models predict, and what a converted checkpoint
records) is written out here: a vehicle running the node needs neither the dataset's
scripts nor their plotting dependencies.  The training package checks it against
``cityscapesscripts``' own label definitions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .fields import check_int, check_ints

# Panoptic ids are int32: train_id * label_divisor + instance must fit.
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class ClassMetadata:
    """Names, colours and thing/stuff split of the network's semantic channels.

    Channel ``i`` of the semantic output is train id ``i``; ``names[i]``,
    ``colors[i]`` (RGB) and ``dataset_ids[i]`` (Cityscapes labelId) describe it.
    A panoptic id is ``train_id * label_divisor + instance`` (instance 0 for stuff).
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    thing_ids: tuple[int, ...]
    dataset_ids: tuple[int, ...] = ()
    label_divisor: int = 1000
    ignore_label: int = 255
    dataset: str = "cityscapes"
    _thing_set: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Every field checked (type, range, consistency); ``ValueError`` names the field and value."""
        if not (isinstance(self.names, tuple) and self.names and all(isinstance(x, str) for x in self.names)):
            raise ValueError(f"metadata: names must be a non-empty list of strings, got {self.names!r}")
        n = len(self.names)
        if not isinstance(self.colors, tuple):
            raise ValueError(f"metadata: colors must be a list of [r, g, b], got {self.colors!r}")
        for i, color in enumerate(self.colors):
            check_ints(f"metadata: colors[{i}]", color, 0, 255, length=3)
        check_int("metadata: label_divisor", self.label_divisor, 1, _INT32_MAX)
        check_int("metadata: ignore_label", self.ignore_label, 0, 65535)
        check_ints("metadata: thing_ids", self.thing_ids, 0, _INT32_MAX, min_length=0)
        check_ints("metadata: dataset_ids", self.dataset_ids, 0, 65535, min_length=0)
        if not isinstance(self.dataset, str):
            raise ValueError(f"metadata: dataset must be a string, got {self.dataset!r}")
        if n * self.label_divisor > _INT32_MAX:
            raise ValueError(f"metadata: label_divisor {self.label_divisor} x {n} classes overflows int32 panoptic ids")
        if len(self.colors) != n:
            raise ValueError(f"metadata: {len(self.colors)} colors for {n} class names")
        if self.dataset_ids and len(self.dataset_ids) != n:
            raise ValueError(f"metadata: {len(self.dataset_ids)} dataset_ids for {n} class names")
        bad = [t for t in self.thing_ids if not 0 <= t < n]
        if bad:
            raise ValueError(f"metadata: thing_ids {bad} outside 0..{n - 1}")
        if n > self.label_divisor:
            raise ValueError(f"metadata: label_divisor {self.label_divisor} < {n} classes")
        object.__setattr__(self, "_thing_set", frozenset(self.thing_ids))

    @property
    def num_classes(self) -> int:
        """Number of semantic channels."""
        return len(self.names)

    def is_thing(self, train_id: int) -> bool:
        """Whether ``train_id`` is a countable class (gets instances)."""
        return train_id in self._thing_set

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for checkpoint headers and export sidecars)."""
        d = asdict(self)
        d.pop("_thing_set", None)
        d["colors"] = [list(c) for c in self.colors]
        for key in ("names", "thing_ids", "dataset_ids"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassMetadata:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` naming a missing key or a bad value."""

        def listed(key: str, value: Any) -> tuple:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"metadata: {key} must be a list, got {value!r}")
            return tuple(tuple(v) if isinstance(v, list) else v for v in value)

        if not isinstance(d, dict):
            raise ValueError(f"class metadata must be a mapping, got {d!r}")
        try:
            return cls(
                names=listed("names", d["names"]),
                colors=listed("colors", d["colors"]),
                thing_ids=listed("thing_ids", d["thing_ids"]),
                dataset_ids=listed("dataset_ids", d.get("dataset_ids", ())),
                label_divisor=d.get("label_divisor", 1000),
                ignore_label=d.get("ignore_label", 255),
                dataset=d.get("dataset", ""),
            )
        except KeyError as exc:
            raise ValueError(f"class metadata lacks the key {exc.args[0]!r}") from exc


# The 19 Cityscapes evaluation classes, by trainId: (name, labelId, RGB colour, has instances),
# as ``cityscapesscripts.helpers.labels`` defines them.
CITYSCAPES_CLASSES: tuple[tuple[str, int, tuple[int, int, int], bool], ...] = (
    ("road", 7, (128, 64, 128), False),
    ("sidewalk", 8, (244, 35, 232), False),
    ("building", 11, (70, 70, 70), False),
    ("wall", 12, (102, 102, 156), False),
    ("fence", 13, (190, 153, 153), False),
    ("pole", 17, (153, 153, 153), False),
    ("traffic light", 19, (250, 170, 30), False),
    ("traffic sign", 20, (220, 220, 0), False),
    ("vegetation", 21, (107, 142, 35), False),
    ("terrain", 22, (152, 251, 152), False),
    ("sky", 23, (70, 130, 180), False),
    ("person", 24, (220, 20, 60), True),
    ("rider", 25, (255, 0, 0), True),
    ("car", 26, (0, 0, 142), True),
    ("truck", 27, (0, 0, 70), True),
    ("bus", 28, (0, 60, 100), True),
    ("train", 31, (0, 80, 100), True),
    ("motorcycle", 32, (0, 0, 230), True),
    ("bicycle", 33, (119, 11, 32), True),
)


def cityscapes_metadata() -> ClassMetadata:
    """The 19 Cityscapes evaluation classes (trainIds 0..18)."""
    return ClassMetadata(
        names=tuple(name for name, _, _, _ in CITYSCAPES_CLASSES),
        colors=tuple(color for _, _, color, _ in CITYSCAPES_CLASSES),
        thing_ids=tuple(i for i, (_, _, _, thing) in enumerate(CITYSCAPES_CLASSES) if thing),
        dataset_ids=tuple(label_id for _, label_id, _, _ in CITYSCAPES_CLASSES),
        label_divisor=1000,
        ignore_label=255,
        dataset="cityscapes",
    )
