"""Train SSNet U-ResNet weights on synthetic LArTPC events.

The shipped default weights were made with (CPU, 2 cores)::

    nice -n 10 python examples/ssnet/train.py --out pvaflow/processors/ssnet/weights

It generates ``--events`` training events (3 planes of 128x128, seed
``--seed``), trains on random ``--crop`` x ``--crop`` crops with flips for
``--steps`` steps (Adam, one-cycle learning rate, class-weighted cross
entropy), then measures per-class pixel accuracy on ``--eval-events`` fresh
events (seed ``--eval-seed``) and writes ``<name>.pt`` (a state dict) and
``<name>.json`` (architecture, classes, normalisation, recipe, accuracy,
sha256). ``--device cuda`` (the default when a GPU is visible) trains on a GPU.

To learn from a live or replayed stream instead of the generator, see
:class:`pvaflow.processors.ssnet.feeder.StreamFeeder` (``--channel``).
"""

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
from torch.nn import functional as F

from pvaflow.processors.ssnet import model as zoo
from pvaflow.sim.lartpc import CLASSES, LArTPCGenerator

NORMALISATION = {"mean": 0.0, "std": 20.0, "clip": [-1.0, 10.0]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--out", default=".", help="directory for the .pt and .json files")
    p.add_argument("--name", default="uresnet_small_lartpc_v1", help="file name stem")
    p.add_argument("--model", default="uresnet_small", choices=zoo.list_models())
    p.add_argument("--base-filters", type=int, default=8)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--max-filters", type=int, default=32)
    p.add_argument("--shared", action="store_true", help="one network for all planes")
    p.add_argument("--size", type=int, default=128, help="plane size of generated events")
    p.add_argument("--events", type=int, default=2000, help="training events generated")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--class-weights", default="1,8,6")
    p.add_argument("--eval-events", type=int, default=60)
    p.add_argument("--eval-seed", type=int, default=999)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channel", default=None,
                   help="learn from this PVA channel (frames with truth) instead of the generator")
    return p.parse_args(argv)


def generated_batches(args, rng):
    """Random crops of pre-generated events: (images, labels) numpy batches, forever."""
    generator = LArTPCGenerator(args.size, args.size, seed=args.seed)
    started = time.monotonic()
    images = np.empty((args.events, 3, args.size, args.size), np.float16)
    labels = np.empty(images.shape, np.uint8)
    for k in range(args.events):
        event = generator.event(k)
        images[k], labels[k] = event.image, event.label
    print(f"generated {args.events} events in {time.monotonic() - started:.0f} s", flush=True)
    crop = args.crop
    while True:
        pick = rng.integers(0, args.events, args.batch_size)
        top, left = rng.integers(0, args.size - crop + 1, 2)
        x = images[pick, :, top:top + crop, left:left + crop].astype(np.float32)
        y = labels[pick, :, top:top + crop, left:left + crop]
        if rng.random() < 0.5:
            x, y = x[..., ::-1, :], y[..., ::-1, :]
        if rng.random() < 0.5:
            x, y = x[..., ::-1], y[..., ::-1]
        yield np.ascontiguousarray(x), np.ascontiguousarray(y)


def stream_batches(args):
    """Batches of whole frames with truth read from ``--channel`` (see the feeder; no crops)."""
    # pylint: disable-next=import-outside-toplevel
    from pvaflow.processors.ssnet.feeder import StreamFeeder
    feeder = StreamFeeder(args.channel, batch_size=args.batch_size, require_labels=True,
                          normalisation=None, as_tensors=False)
    while True:
        got = 0
        for images, labels, _ in feeder:
            got += 1
            yield images, labels
        if not got:
            raise RuntimeError(f"no frame with labels came from {args.channel}")


def evaluate(model, args, device):
    """Per-class pixel accuracy (recall), precision and confusion on fresh events."""
    generator = LArTPCGenerator(args.size, args.size, seed=args.eval_seed)
    confusion = np.zeros((3, 3), np.int64)
    model.eval()
    with torch.inference_mode():
        for start in range(0, args.eval_events, 8):
            count = min(8, args.eval_events - start)
            images, labels = generator.batch(count, start)
            x = zoo.normalise(torch.from_numpy(images).to(device), NORMALISATION)
            predicted = model(x).argmax(2).cpu().numpy()
            confusion += np.bincount(labels.ravel().astype(np.int64) * 3 + predicted.ravel(),
                                     minlength=9).reshape(3, 3)
    recall = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
    precision = confusion.diagonal() / np.maximum(confusion.sum(0), 1)
    return {"events": args.eval_events, "seed": args.eval_seed,
            "accuracy": {c: round(float(r), 4) for c, r in zip(CLASSES, recall)},
            "precision": {c: round(float(p), 4) for c, p in zip(CLASSES, precision)},
            "confusion": confusion.tolist()}


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = zoo.get_model(args.model, base_filters=args.base_filters, depth=args.depth,
                          max_filters=args.max_filters, shared=args.shared).to(device)
    weights = torch.tensor([float(w) for w in args.class_weights.split(",")], device=device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, args.lr, total_steps=args.steps,
                                                   pct_start=0.15)
    rng = np.random.default_rng(args.seed)
    batches = stream_batches(args) if args.channel else generated_batches(args, rng)
    started = time.monotonic()
    running = None
    model.train()
    for step in range(1, args.steps + 1):
        images, labels = next(batches)
        x = zoo.normalise(torch.from_numpy(images).to(device), NORMALISATION)
        y = torch.from_numpy(labels).to(device).long()
        scores = model(x)  # [N, planes, classes, H, W]
        loss = F.cross_entropy(scores.flatten(0, 1), y.flatten(0, 1), weight=weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step}/{args.steps} loss {running:.4f}"
                  f" ({time.monotonic() - started:.0f} s)", flush=True)
    train_seconds = time.monotonic() - started
    result = evaluate(model, args, device)
    print(json.dumps(result["accuracy"]), flush=True)
    save(model, args, result, train_seconds)
    return 0


def save(model, args, result, train_seconds):
    """Write the state dict and its JSON metadata."""
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{args.name}.pt")
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    torch.save(state, path)
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    meta = {
        "name": args.name,
        "model": args.model,
        "architecture": {"planes": model.planes, "shared": model.shared,
                         "num_classes": model.num_classes, "base_filters": args.base_filters,
                         "depth": args.depth, "blocks": 1, "max_filters": args.max_filters},
        "classes": list(CLASSES),
        "planes": ["U", "V", "Y"],
        "input_size": [args.size, args.size],
        "normalisation": NORMALISATION,
        "num_params": sum(p.numel() for p in model.parameters()),
        "recipe": {"data": "pvaflow.sim.lartpc.LArTPCGenerator" if not args.channel
                   else f"PVA channel {args.channel}",
                   "events": args.events, "seed": args.seed, "steps": args.steps,
                   "batch_size": args.batch_size, "crop": args.crop, "lr": args.lr,
                   "optimiser": "AdamW, one-cycle", "class_weights": args.class_weights,
                   "device": str(args.device), "threads": args.threads,
                   "train_seconds": round(train_seconds), "torch": torch.__version__,
                   "command": " ".join(["examples/ssnet/train.py"] + sys.argv[1:])},
        "metrics": result,
        "sha256": digest,
    }
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as handle:
        json.dump(meta, handle, indent=2)
        handle.write("\n")
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB) and its .json", flush=True)


if __name__ == "__main__":
    sys.exit(main())
