"""Supernet families (resnet, vit), checkpoints, and training."""

from superserve.models.checkpoint import (
                                          build_supernet,
                                          checkpoint_path,
                                          file_sha256,
                                          load_checkpoint,
                                          load_supernet,
                                          save_checkpoint,
)

__all__ = ["build_supernet", "checkpoint_path", "file_sha256", "load_checkpoint",
           "load_supernet", "save_checkpoint"]
