"""`--scenario video --mode kafka`: the video benchmark's active-stream through the real scorer and
label sink, on the closed loop of kafka_loop.py (its rounds, oracle, trainer and settling).

Only what differs from the classification stream is here: the stream is one seed's clips (every
clip row, in order), the held-out set the digits test images, the seed labels clip rows, and the
model service sends video events (`video.event_dicts`: ten-digit `scores`, `track_id`, `bbox`,
`embedding`, `sequence_id`). The scorer runs `video.video_overrides` as its policy. With the same
strategy seed the scorer selects exactly what `video.run_seed` selects in process
(tests/integration/test_video_bench_kafka.py; docs/video.md for a full-size seed).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from services.evaluation.datasets import Dataset, Split
from services.evaluation.harness import FittedModel, Settings
from services.evaluation.kafka_loop import KafkaLoop, RoundReport
from services.evaluation.strategies import SeedContext
from services.evaluation.video import (
    CLASSES,
    VideoRun,
    VideoSeed,
    VideoSettings,
    class_proba,
    event_dicts,
    finish,
    video_overrides,
)


def loop_settings(settings: VideoSettings) -> Settings:
    """The closed loop's settings for the video run (the model's max_iter is video.fit's)."""
    return Settings("video", settings.seeds, settings.seed_labels, settings.budget,
                    settings.retrain_every, ("active-stream",), batch_size=settings.batch_size,
                    random_state=settings.random_state, max_iter=5000)


class VideoKafkaRunner:
    """A `video.VideoRunner`: active-stream on one seed through the services on `bootstrap`.
    `workdir`: service logs (seed-N/) and the sink's data; `on_round`: progress per round;
    `label_delay_s`: wall-clock wait before the oracle answers a round."""

    def __init__(self, bootstrap: str, settings: VideoSettings, workdir: Path,
                 on_round: Callable[[RoundReport], None] | None = None,
                 label_delay_s: float = 0.0) -> None:
        self.loop = KafkaLoop(bootstrap, loop_settings(settings), video_overrides(settings),
                              workdir=workdir, on_round=on_round, label_delay_s=label_delay_s)

    def __call__(self, vs: VideoSeed, strategy_seed: int) -> VideoRun:
        clips = vs.clips
        n, n_test = clips.n, vs.y_test.shape[0]
        # One row space for the loop: the clip rows (the stream, positions = rows), then the
        # test images.
        data = Dataset("video", np.vstack([clips.X, vs.X_test]), np.r_[clips.y, vs.y_test])
        split = Split(test=n + np.arange(n_test), seed=np.asarray(vs.seed_rows),
                      stream=np.arange(n))
        ctx = SeedContext(strategy_seed, CLASSES, n, self.loop.settings.budget, vs.cap, vs.cap)

        def events(model: FittedModel, version: int, lo: int, hi: int) -> list[dict[str, Any]]:
            return event_dicts(clips, lo, hi, class_proba(model, clips.X[lo:hi]), version)

        run = self.loop.run_seed(data, split, ctx, vs.seed, events=events)
        return finish("active-stream", vs, run.picked, run.curve,
                      dict(run.diagnostics.get("suppressed", {})), run.seconds)
