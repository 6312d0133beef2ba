"""Images for Qwen2-VL on a machine without torchvision: keyframes to PIL, a working processor.

``Qwen2VLImageProcessor`` (the torchvision backend) cannot be used here, so the processor is
built from ``Qwen2VLImageProcessorPil``, and ``Qwen2VLProcessor`` is subclassed so that its
class check accepts a missing video processor (stock: ``AttributeError: type object
'VIDEO_PROCESSOR_MAPPING' has no attribute '_extra_content'``). ``processor.save_pretrained``
and ``AutoProcessor`` do not round-trip such a processor: checkpoints keep the tokenizer and the
image processor config, and :func:`load_processor` rebuilds the processor after loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from planner.exceptions import EngineError

#: Keyframes larger than this are downscaled by the image processor anyway; cap the work early.
DEFAULT_MAX_PIXELS = 448 * 448


def to_pil(ref: object) -> Any:
    """A keyframe reference (file path, RGB ndarray HxWx3, or PIL image) as an RGB PIL image."""
    from PIL import Image

    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    if isinstance(ref, str | Path):
        with Image.open(ref) as img:
            return img.convert("RGB")
    if isinstance(ref, np.ndarray):
        arr = ref
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise EngineError(f"keyframe array must be HxWx3 RGB, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(arr[..., :3]), mode="RGB")
    raise EngineError(f"keyframe must be a path, an RGB array or a PIL image, got {type(ref).__name__}")


def images_in(messages: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[object]:
    """The image references in chat messages, in order."""
    refs: list[object] = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            refs += [part["image"] for part in content if part.get("type") == "image"]
    return refs


def _processor_class() -> type:
    from transformers import Qwen2VLProcessor

    class PilQwen2VLProcessor(Qwen2VLProcessor):  # type: ignore[misc]  # transformers has no stubs
        """Qwen2VLProcessor that accepts a missing video processor (no torchvision here)."""

        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    return PilQwen2VLProcessor


def make_processor(tokenizer: Any, image_processor: Any, chat_template: str | None = None) -> Any:
    """A Qwen2-VL processor over a PIL image processor and a tokenizer."""
    cls = _processor_class()
    return cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=chat_template or tokenizer.chat_template,
    )


def load_processor(path: str | Path, tokenizer: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Any:
    """Rebuild the processor of a Qwen2-VL checkpoint folder from its image processor config."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(path))
    size = image_processor.size
    if max_pixels is not None and (size.longest_edge or 0) > max_pixels:
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(path), max_pixels=max_pixels)
    return make_processor(tokenizer, image_processor)
