"""The camera oracle on clean renders (``tempoflow.metrics.camera_oracle``; README "Camera").

    python benchmarks/camera_oracle.py                          # 32 and 16 px, 8 frames, all speeds
    python benchmarks/camera_oracle.py --resolutions 48 --frames 16 --videos 2

Renders ``--videos`` start crops of every photo × motion × speed word of ``CameraConfig`` (train and
test splits, no held-out pairs) and prints the oracle's caption, photo, motion and motion-kind accuracy
per resolution, with the confusions of the motions it misread. Nothing is asserted (tests/test_camera.py
asserts >= 95 % on a smaller set).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch

from tempoflow.data.camera import CameraConfig, make_camera, parse_caption
from tempoflow.evaluate.record import hardware
from tempoflow.metrics.camera_oracle import caption_accuracy, read_motions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[32, 16])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--videos", type=int, default=4, help="start crops per caption (>= 2)")
    ap.add_argument("--no-speeds", action="store_true", help="normal speed only")
    args = ap.parse_args()
    print(f"hardware: {hardware()}")
    print("| resolution | frames | videos | caption acc. | photo | motion | motion kind | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    confusions = {}
    for res in args.resolutions:
        cfg = CameraConfig(resolution=res, num_frames=args.frames, videos_per_caption=args.videos,
                           speeds=not args.no_speeds, heldout_pairs=())
        parts = [make_camera(cfg, split) for split in ("train", "test")]
        videos = torch.cat([p.videos for p in parts])
        captions = [c for p in parts for c in p.captions]
        t0 = time.perf_counter()
        s = caption_accuracy(videos, captions, cfg)
        seconds = time.perf_counter() - t0
        print(f"| {res} | {args.frames} | {len(captions)} | {s.accuracy:.4f} | {s.photo:.4f} | {s.motion:.4f} "
              f"| {s.kind:.4f} | {seconds:.1f} |")
        wrong = [i for i, ok in enumerate(s.correct) if not ok]
        read = read_motions(videos[wrong]) if wrong else []
        confusions[res] = Counter((*parse_caption(captions[i])[1:], m) for i, m in zip(wrong, read))
    for res, c in confusions.items():
        print(f"{res} px misreads (motion, speed, read): {c.most_common(8)}")


if __name__ == "__main__":
    main()
