"""PyTorch Lightning: ``trainer.save_checkpoint`` / ``ModelCheckpoint`` files (``.ckpt``).

Recognised by the keys Lightning writes (``pytorch-lightning_version``) or a plateau state under
``lr_schedulers[i]``. Lightning steps an ``interval='epoch'`` plateau scheduler at the end of the training
epoch, after the validation that logs the monitored metric, and ``ModelCheckpoint`` saves before that step:
its checkpoints hold the state *before* their epoch's step, and ``fit(ckpt_path=...)`` resumes at the next
epoch, so that epoch's metric is never stepped.
"""

from __future__ import annotations

from typing import Any

from plateau_forensics.stacks import Stack


def owns_tree(tree: Any, key_path: str) -> bool:
    """A Lightning checkpoint: its version key, or the plateau state in ``lr_schedulers``."""
    return ((isinstance(tree, dict) and "pytorch-lightning_version" in tree)
            or key_path.startswith("lr_schedulers["))


STACK = Stack(
    name="lightning",
    title="PyTorch Lightning",
    owns_tree=owns_tree,
    order="ModelCheckpoint saves at the end of the training epoch, before the epoch's plateau step; "
          "fit(ckpt_path=...) resumes at the next epoch",
    saves_before_step=True,
    notes={
        "resume-skipped-step": " (Lightning's fit(ckpt_path=...) does this)",
        "saved-before-step": " (Lightning's order)",
        "scheduler-never-stepped": "; in Lightning this is a monitor that is never logged with strict=False",
    },
)
