"""Named conditions of a class-conditional generator: ``"D"``, ``"D+H"`` (multi-label), ``"null"`` (unconditional)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["NULL_CONDITION", "condition_vectors"]

NULL_CONDITION = "null"
"""The name of the unconditional (null) condition, sampled with the generator's learned null embedding."""


def condition_vectors(conditions: Sequence[str], class_names: Sequence[str]) -> dict[str, torch.Tensor | None]:
    """Multi-hot ``(C,)`` float vectors of named conditions, in the given order.

    Args:
        conditions: names; a class name (``"G"``), several joined by ``+`` (``"D+H"``: both findings), or
            ``"null"`` for unconditional samples (mapped to None).
        class_names: the label vector's classes in order, e.g. ODIR's ``("N", "D", "G", "C", "A", "H", "M", "O")``
            (:data:`medvq.data.CLASSES`) or ImageNet-100's class ids.

    Raises:
        ValueError: no conditions, a repeated name, or a class not in ``class_names`` (the message lists them).

    Example:
        >>> condition_vectors(["G", "D+H"], ["N", "D", "G", "H"])["D+H"].tolist()
        [0.0, 1.0, 0.0, 1.0]
    """
    if isinstance(conditions, str):
        conditions = [conditions]
    if len(conditions) == 0:
        raise ValueError("conditions is empty: name at least one class (e.g. 'N'), a combination ('D+H') or 'null'.")
    if len(set(conditions)) != len(conditions):
        raise ValueError(f"conditions has repeated names: {list(conditions)}.")
    index = {name: i for i, name in enumerate(class_names)}
    out: dict[str, torch.Tensor | None] = {}
    for name in conditions:
        if name == NULL_CONDITION:
            out[name] = None
            continue
        vector = torch.zeros(len(class_names))
        for part in str(name).split("+"):
            if part.strip() not in index:
                raise ValueError(
                    f"conditions: {part.strip()!r} (in {name!r}) is not a class; classes are {list(class_names)}, "
                    f"combine them with '+', or use {NULL_CONDITION!r} for unconditional samples."
                )
            vector[index[part.strip()]] = 1.0
        out[name] = vector
    return out
