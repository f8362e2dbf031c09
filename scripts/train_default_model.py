"""Train the bundled default model: the paper's U-Net (depth 4, F = 16, halo 96) at width 8.

Data: ``nuclei2d.tif`` and ``nuclei2d_mask.tif`` (stardist 0.9.2, BSD-3; see
``shared/data/README.md``), foreground = mask > 0. Rows 0-383 train, rows 384-511 are held
out for the Dice reported in ``docs/models.md``. Runs on a 2-core CPU in a few minutes:

    python scripts/train_default_model.py --data ../shared/data --out src/napari_seamless/models/weights/nuclei_unet.pt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F

from napari_seamless.models import UNet, save_checkpoint
from napari_seamless.preprocessing import PercentileNormalization
from napari_seamless.qa import dice

SPLIT = 384  # rows [0, SPLIT) train, [SPLIT, 512) held out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument(
        "--out", type=Path, default=Path("src/napari_seamless/models/weights/nuclei_unet.pt")
    )
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=1200)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    image = tifffile.imread(args.data / "nuclei2d.tif").astype(np.float32)
    mask = (tifffile.imread(args.data / "nuclei2d_mask.tif") > 0).astype(np.int64)
    norm = PercentileNormalization.fit(image[None, :SPLIT])
    x_all = norm(image[None])[0]
    x_train, y_train = x_all[:SPLIT], mask[:SPLIT]

    model = UNet(in_channels=1, classes=2, width=args.width, depth=4)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.iterations)
    p = args.patch
    t0 = time.time()
    for it in range(args.iterations):
        xs, ys = [], []
        for _ in range(args.batch):
            r = rng.integers(0, SPLIT - p + 1)
            c = rng.integers(0, image.shape[1] - p + 1)
            xp, yp = x_train[r : r + p, c : c + p], y_train[r : r + p, c : c + p]
            k = rng.integers(4)
            xp, yp = np.rot90(xp, k), np.rot90(yp, k)
            if rng.random() < 0.5:
                xp, yp = xp[:, ::-1], yp[:, ::-1]
            xp = xp * rng.uniform(0.8, 1.25) + rng.normal(0, 0.03)  # intensity jitter
            xs.append(np.ascontiguousarray(xp))
            ys.append(np.ascontiguousarray(yp))
        x = torch.from_numpy(np.stack(xs))[:, None].float()
        y = torch.from_numpy(np.stack(ys))
        logits = model(x)
        prob = logits.softmax(1)[:, 1]
        soft_dice = 1 - (2 * (prob * y).sum() + 1) / (prob.sum() + y.sum() + 1)
        loss = F.cross_entropy(logits, y) + soft_dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % 100 == 0 or it == args.iterations - 1:
            print(f"it {it:5d} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)

    model.eval()
    with torch.inference_mode():
        pred = model(torch.from_numpy(x_all)[None, None]).argmax(1)[0].numpy()
    held = dice(pred[SPLIT:] > 0, mask[SPLIT:] > 0)
    train = dice(pred[:SPLIT] > 0, mask[:SPLIT] > 0)
    meta = {
        "name": "nuclei",
        "description": f"U-Net (paper configuration, depth 4, width {args.width}) for nuclei foreground",
        "training_data": f"stardist 0.9.2 nuclei2d.tif rows 0-{SPLIT - 1} (BBBC038 / DSB2018), BSD-3",
        "classes": ["background", "nucleus"],
        "normalization": {"kind": "percentile", "pmin": 1.0, "pmax": 99.8},
        "iterations": args.iterations,
        "patch": p,
        "batch": args.batch,
        "seed": args.seed,
        "dice_heldout": round(float(held), 4),
        "dice_train": round(float(train), 4),
        "train_seconds": round(time.time() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, args.out, meta=meta)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
