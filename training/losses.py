"""Losses of joint training and finetuning: label-smoothed CE and soft-target distillation."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ['soft_target_loss']


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                     temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's softened distribution (OFA's KD loss).

    ``teacher_logits`` must already be detached; the loss is scaled by T² so that its gradient
    does not shrink with the temperature.
    """
    t = temperature
    target = F.softmax(teacher_logits.float() / t, dim=1)
    log_prob = F.log_softmax(student_logits.float() / t, dim=1)
    return -(target * log_prob).sum(dim=1).mean() * (t * t)
