"""Class metadata: what a network output channel means.

Stored inside our checkpoints so a model file describes itself; the Cityscapes
table (the default, and what Detectron2's Cityscapes models predict) comes from
``cityscapesscripts``, the dataset's own label definitions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS


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
        n = len(self.names)
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
        """Inverse of :meth:`to_dict`; raises ``ValueError`` naming a missing key."""
        try:
            return cls(
                names=tuple(str(n) for n in d["names"]),
                colors=tuple((int(c[0]), int(c[1]), int(c[2])) for c in d["colors"]),
                thing_ids=tuple(int(t) for t in d["thing_ids"]),
                dataset_ids=tuple(int(t) for t in d.get("dataset_ids", ())),
                label_divisor=int(d.get("label_divisor", 1000)),
                ignore_label=int(d.get("ignore_label", 255)),
                dataset=str(d.get("dataset", "")),
            )
        except KeyError as exc:
            raise ValueError(f"class metadata lacks the key {exc.args[0]!r}") from exc


def cityscapes_metadata() -> ClassMetadata:
    """The 19 Cityscapes evaluation classes (trainIds 0..18), from cityscapesscripts."""
    train = sorted((lab for lab in _CITYSCAPES_LABELS if 0 <= lab.trainId < 255), key=lambda lab: lab.trainId)
    return ClassMetadata(
        names=tuple(lab.name for lab in train),
        colors=tuple((int(lab.color[0]), int(lab.color[1]), int(lab.color[2])) for lab in train),
        thing_ids=tuple(lab.trainId for lab in train if lab.hasInstances),
        dataset_ids=tuple(lab.id for lab in train),
        label_divisor=1000,
        ignore_label=255,
        dataset="cityscapes",
    )
