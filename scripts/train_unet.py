"""Train the built-in UNets on a synthetic training cohort, deterministically.

    python scripts/train_unet.py unet-ct          # CT arm only, CT window
    python scripts/train_unet.py unet-multimodal  # all four arms, z-normalised

The training cohort's seed (default 1000) differs from any evaluation cohort's (the suite's
default is 0); subject ids carry the seed, so no subject is both trained on and audited. The
weights go to ``models/weights/<name>.safetensors`` and, beside them, a JSON record of the
command, seeds, subjects, loss curve, versions and time taken.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from safetensors.torch import save_file

from umdbench.models.base import file_sha256
from umdbench.models.unet import (
    PATCH,
    WEIGHTS_DIR,
    CTUNet,
    MultimodalUNet,
    build_network,
    normalise,
    to_model_grid,
)
from umdbench.organs import MODALITIES
from umdbench.umd_fixtures.synthetic import build_synthetic_cohort

MODELS = {"unet-ct": (CTUNet, ("CT",)), "unet-multimodal": (MultimodalUNet, MODALITIES)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--subjects", type=int, default=12, help="training subjects (default 12)")
    parser.add_argument(
        "--seed", type=int, default=1000, help="training cohort seed (default 1000)"
    )
    parser.add_argument(
        "--iterations", type=int, default=2500, help="optimiser steps (default 2500)"
    )
    parser.add_argument("--batch", type=int, default=2, help="patches per step (default 2)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1; fixed for reproducibility)",
    )
    parser.add_argument("--cache", type=Path, default=None, help="cohort cache folder")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where the weights go")
    return parser.parse_args(argv)


def training_volumes(cohort, arms, scheme: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every training scan on the model's grid: (normalised image, label map) pairs."""
    pairs = []
    for scan in cohort.scans:
        if scan.modality not in arms:
            continue
        image = to_model_grid(scan.load_image()).as_tensor()
        label_volume = scan.load_labels()
        labels = to_model_grid(
            label_volume.with_array(label_volume.array.astype(np.float32)), mode="nearest"
        ).as_tensor()
        pairs.append((_pad(normalise(image, scheme)), _pad(labels.round().long())))
    return pairs


def _pad(tensor: torch.Tensor) -> torch.Tensor:
    """Pad (1, X, Y, Z) up to the patch size on every axis with the volume's minimum."""
    pads = []
    for size, patch in zip(reversed(tensor.shape[1:]), reversed(PATCH), strict=True):
        pads.extend([0, max(0, patch - size)])
    return torch.nn.functional.pad(tensor, pads, value=float(tensor.min()))


def random_patch(pair, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    image, labels = pair
    starts = [
        int(torch.randint(0, s - p + 1, (1,), generator=generator))
        for s, p in zip(image.shape[1:], PATCH, strict=True)
    ]
    window = tuple(slice(a, a + p) for a, p in zip(starts, PATCH, strict=True))
    return image[(slice(None), *window)], labels[(slice(None), *window)]


def train(args: argparse.Namespace) -> dict[str, object]:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    cls, arms = MODELS[args.model]
    cohort = build_synthetic_cohort(n_subjects=args.subjects, seed=args.seed, cache_dir=args.cache)
    pairs = training_volumes(cohort, arms, cls.normalisation)
    network = build_network()
    optimiser = torch.optim.Adam(network.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=args.iterations)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    generator = torch.Generator().manual_seed(args.seed)
    curve, started = [], time.time()
    network.train()
    for step in range(1, args.iterations + 1):
        chosen = torch.randint(0, len(pairs), (args.batch,), generator=generator).tolist()
        patches = [random_patch(pairs[i], generator) for i in chosen]
        images = torch.stack([p[0] for p in patches])
        labels = torch.stack([p[1] for p in patches])
        optimiser.zero_grad()
        loss = loss_fn(network(images), labels)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == 1:
            curve.append([step, round(float(loss), 4)])
            print(
                f"step {step}/{args.iterations} loss {float(loss):.4f} ({time.time() - started:.0f} s)",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / f"{args.model}.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(weights))
    return {
        "model": args.model,
        "command": "python scripts/train_unet.py " + " ".join(sys.argv[1:]),
        "arms": list(arms),
        "normalisation": cls.normalisation,
        "training_cohort": {
            "name": cohort.name,
            "seed": args.seed,
            "subjects": list(cohort.subjects),
        },
        "iterations": args.iterations,
        "batch": args.batch,
        "lr": args.lr,
        "threads": args.threads,
        "loss_curve": curve,
        "seconds": round(time.time() - started, 1),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "weights_sha256_16": file_sha256(str(weights)),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    record = train(args)
    path = args.out / f"{args.model}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out / (args.model + '.safetensors')} and {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
