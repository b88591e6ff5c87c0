"""`fastsiren hypernet-predict CHECKPOINT IMAGE --context N`: complete one image from N of its
pixels with a trained hypernetwork (``fastsiren fit hypernet``).

    fastsiren hypernet-predict runs/hypernet photo.png --context 100 [--out completed.png]

The image is prepared as in training (centre square, resized to the model's resolution); N
random pixels (``--seed``), or the top half with ``--context half``, go to the encoder; the
predicted SIREN renders the whole image. Writes context | completion | truth side by side and
prints the MSE on [0, 1] (all pixels, and the pixels outside the context).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parse_context(text: str):
    if text == "half":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of pixels or 'half', "
                                         f"got {text!r}")
    return value


def load_hypernet(path: str | Path, device: str = "cpu"):
    """(model, settings) of a ``fit hypernet`` run folder or checkpoint file."""
    from ..checkpoint import load_checkpoint
    from ..errors import InputError
    from ..registry import model_from_checkpoint

    state = load_checkpoint(path, map_location=device)
    if state.get("task") != "hypernet":
        raise InputError(f"{path}: a checkpoint of task {state.get('task')!r}, not of "
                         "'fastsiren fit hypernet'")
    try:
        model = model_from_checkpoint(state, map_location=device)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{path}: the weights do not fit the hypernetwork it names "
                         f"({first})") from None
    return model, state["settings"]


def _predict(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..errors import InputError
    from ..hypernet.data import half_context, prepare_image, sample_context
    from ..io.image import read_image, write_image
    from ..tasks.common import pixel_grid, side_by_side

    model, settings = load_hypernet(args.checkpoint, args.device)
    resolution, channels = tuple(settings["resolution"]), settings["channels"]
    pixels = prepare_image(read_image(args.image), resolution, channels, str(args.image))
    n_pixels = resolution[0] * resolution[1]
    if args.context != "half" and args.context > n_pixels:
        raise InputError(f"--context {args.context}: larger than the model's "
                         f"{resolution[0]}x{resolution[1]} image ({n_pixels} pixels)")
    device = torch.device(args.device)
    target = (pixels.reshape(1, n_pixels, channels) * 2 - 1).to(device)
    coords = pixel_grid(*resolution, device=device)
    if args.context == "half":
        context = half_context(1, resolution, device)
    else:
        generator = torch.Generator().manual_seed(args.seed)
        context = sample_context(1, n_pixels, args.context, generator, device)
    with torch.no_grad():
        completion = model(target, coords, context).value.clamp(-1, 1)
    error = ((completion - target) / 2).square().mean(-1)[0]  # per pixel, on [0, 1]
    outside = torch.ones(n_pixels, dtype=torch.bool, device=device)
    outside[context.index[0]] = False
    keep = (~outside).float().view(1, n_pixels, 1)

    def image(values):
        return ((values + 1) / 2).clamp(0, 1).reshape(*resolution, channels).cpu().numpy()

    out = Path(args.out or f"{Path(args.image).stem}_completed.png")
    panel = side_by_side([image(target * keep), image(completion), image(target)], gap=1)
    write_image(out, np.kron(panel, np.ones((args.zoom, args.zoom, 1), dtype=np.float32)))
    print(json.dumps({
        "image": str(args.image), "context": args.context, "resolution": list(resolution),
        "mse": float(error.mean()),
        "mse_outside_context": float(error[outside].mean()) if outside.any() else 0.0,
        "written": str(out),
    }))
    return 0


def register(sub) -> None:
    parser = sub.add_parser(
        "hypernet-predict", help="complete an image from a few pixels (fit hypernet)",
        description=__doc__.strip().splitlines()[0])
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="run folder of 'fastsiren fit hypernet' or its checkpoint.pt")
    parser.add_argument("image", metavar="IMAGE", help="image to complete (PNG, JPEG, ...)")
    parser.add_argument("--context", type=parse_context, default=100, metavar="N|half",
                        help="context pixels drawn at random, or 'half' (the top half); "
                        "default 100")
    parser.add_argument("--out", metavar="PNG", default=None,
                        help="where to write context | completion | truth "
                        "(default: IMAGE-stem_completed.png)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the context pixels")
    parser.add_argument("--zoom", type=int, default=8, help="pixel size in the written PNG")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.set_defaults(func=_predict)
