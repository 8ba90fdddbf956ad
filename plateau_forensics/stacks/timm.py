"""timm: ``train.py``'s checkpoints (``epoch``, ``arch``, ``state_dict``, ``optimizer``, ``version``,
``metric``).

Recognised by timm's ``CheckpointSaver`` keys. (Rules, defaults and call pattern: see the issue on stacks.)
"""

from __future__ import annotations

from typing import Any

from plateau_forensics.stacks import Stack


def owns_tree(tree: Any, key_path: str) -> bool:
    """timm's CheckpointSaver layout: ``arch``, ``version`` and ``state_dict`` at the top level."""
    return isinstance(tree, dict) and "arch" in tree and "version" in tree and "state_dict" in tree


STACK = Stack(name="timm", title="timm", owns_tree=owns_tree,
              order="train.py steps with step(epoch + 1, metric) after each epoch's eval, then saves")
