"""The live path with a (tiny) Qwen2-VL on real laparoscopic video: IndirNHFM gets keyframes of the
running clip and a caption from the process's caption worker, and refreshes see more than the
clip-start plan did. Runs through ``replay`` (the service, the embedded broker, the real pipeline)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from planner.config import MemoryConfig, PlannerConfig
from planner.engines.base import EngineSettings
from planner.factory import SharedPlanning
from planner.memory import NHFMemory
from planner.planner import Planner, PlannerSettings
from planner.prior import packaged_prior
from streamer.config import ServiceConfig
from streamer.replay import replay
from streamer.sources.video import VideoSource

if TYPE_CHECKING:
    from tests.qwen_fixtures import TinyQwen

pytest_plugins = ["tests.qwen_fixtures"]

CLIP = "VID43_303_grasper-retract-omentum.mp4"
TIMELINE = [(0.0, "Tissue Retraction"), (16.0, "Dissection")]


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


async def _decoded_frames(video: Path, size: tuple[int, int]) -> dict[str, float]:
    """Every frame as the keyframe sampler gets it (converted once, straight to ``size``): content →
    stream time."""
    source = VideoSource(str(video), output_size=(224, 224))
    await source.start()
    out: dict[str, float] = {}
    try:
        while (frame := await source.next_frame()) is not None:
            out.setdefault(_digest(frame.image_at(size)), frame.pts_s)
    finally:
        await source.stop()
    return out


@pytest.mark.slow
def test_indirnhfm_live_gets_keyframes_of_its_clip_and_a_caption(
    tiny_qwen: TinyQwen, clips_dir: Path, tmp_path: Path
) -> None:
    video = clips_dir / CLIP
    timeline = tmp_path / "timeline.csv"
    timeline.write_text("start_s,action\n" + "".join(f"{s},{a}\n" for s, a in TIMELINE))
    cfg = PlannerConfig(
        engine=f"transformers:{tiny_qwen.vl}",
        engine_settings=EngineSettings(variant="indirect", captioner=str(tiny_qwen.vl), threads=1),
        settings=PlannerSettings(deadline_s=30.0, fusion_weight=0.0),
        memory=MemoryConfig(max_keyframes=6, keyframe_size=112, keyframe_interval_s=1.0),
        refresh_s=3.0,
    )
    seen: list[NHFMemory] = []

    with SharedPlanning(cfg, packaged_prior()) as planning:

        def planner() -> Planner:
            p = planning.planner()
            rank = p.recommend_async  # what the live pipeline calls

            async def recording(memory: NHFMemory) -> Any:
                seen.append(memory)
                return await rank(memory)

            p.recommend_async = recording  # type: ignore[method-assign]
            return p

        report = asyncio.run(
            replay(
                ServiceConfig(refresh_text=False, frame_size=224),
                planner,
                str(video),
                str(timeline),
                planner_config=cfg,
            )
        )
    recs = report["recommendations"]
    assert [p["current_action"] for p in recs if p["basis"]["trigger"] == "clip_start"] == [
        a for _, a in TIMELINE
    ]
    assert report["live"]["captions"]["received"] >= 1 and report["live"]["captions"]["latency_ms"]["n"] >= 1

    # the planner's memories: keyframes of the running clip (each one a frame the service decoded,
    # of that clip, downscaled once to 112²) and, once the caption worker answered, a caption
    decoded = asyncio.run(_decoded_frames(video, (112, 112)))
    assert seen
    for memory in seen:
        assert memory.near is not None and memory.near.keyframes
        start = memory.near.start_s
        end = next((s for s, _ in TIMELINE if s > start + 1e-6), float("inf"))
        times = [decoded.get(_digest(k)) for k in memory.near.keyframes]  # type: ignore[arg-type]
        assert None not in times, "a keyframe that is not a decoded frame"
        # from this clip only, but for at most two newest frames of the next one, seen during the
        # segmenter's confirmation hold (0.5 s), before the switch was known
        ordered = [t for t in times if t is not None]
        assert ordered == sorted(ordered) and ordered[0] >= start - 1e-6, (start, ordered)
        late = [t for t in ordered if t >= end]
        assert len(late) <= 2 and all(t < end + 1.0 for t in late), (start, end, ordered)
    assert [m for m in seen if m.near is not None and m.near.caption], "no plan got a caption"

    # a refresh of a clip carries more keyframes than that clip's clip-start recommendation
    by_clip: dict[int, list[dict[str, Any]]] = {}
    for p in recs:
        by_clip.setdefault(p["clip"]["index"], []).append(p)
    grew = [
        ps
        for ps in by_clip.values()
        if len(ps) > 1 and max(p["basis"]["keyframes"] for p in ps[1:]) > ps[0]["basis"]["keyframes"]
    ]
    assert grew, f"no refresh with more keyframes: {[[p['basis'] for p in ps] for ps in by_clip.values()]}"
    assert any(p["basis"]["caption"] for ps in grew for p in ps[1:])
