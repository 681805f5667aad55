"""SEVLM model: frozen image encoder, GPT-2 decoder, VAD emotion modelling and heads."""

from sevlm.model.image_encoder import FrozenImageEncoder, build_image_encoder
from sevlm.model.sevlm import SEVLM, SEVLMOutput

__all__ = ["SEVLM", "SEVLMOutput", "FrozenImageEncoder", "build_image_encoder"]
