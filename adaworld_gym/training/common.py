"""Small pieces shared by the training loops."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch


def is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def budget_spent(max_steps: int | None, max_minutes: float | None, step: int, train_seconds: float) -> bool:
    """True once the step budget or the wall-clock budget (both counted across resumes) is used up."""
    if max_steps is not None and step >= max_steps:
        return True
    return max_minutes is not None and train_seconds >= max_minutes * 60


def plain_config(model: Any) -> dict[str, Any]:
    """A diffusers model's config without its private bookkeeping keys."""
    return {k: v for k, v in dict(model.config).items() if not k.startswith("_")}


def save_model_atomic(model: Any, model_dir: Path) -> None:
    """``save_pretrained`` into a side directory, then swap it in, so a kill never leaves half a model."""
    tmp = model_dir.with_name(f".{model_dir.name}-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if model_dir.exists():
        old = model_dir.with_name(f".{model_dir.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(model_dir, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, model_dir)


def image_grid(f_t: torch.Tensor, f_t1: torch.Tensor, pred: torch.Tensor, n: int = 8) -> torch.Tensor:
    """Columns of (f_t, f_t1, prediction, 4x |error|), one row per sample, as a [3, H', W'] image in [0, 1]."""
    n = min(n, f_t.shape[0])
    err = ((pred.float() - f_t1).abs() * 4).clamp(0, 1)
    cols = [x[:n].detach().float().cpu() for x in (f_t, f_t1, pred, err)]
    rows = torch.cat(cols, dim=3)  # [n, 3, H, 4W]
    return torch.cat(list(rows), dim=1)  # [3, nH, 4W]
