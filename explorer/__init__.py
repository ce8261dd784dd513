"""Transformer Explorer: our own transformer implementation, its loaders and analyses."""

from explorer.config import ModelConfig
from explorer.device import available_devices, pick_device

__all__ = ["ModelConfig", "available_devices", "pick_device"]
