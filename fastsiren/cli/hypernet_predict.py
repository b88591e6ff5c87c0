"""`fastsiren hypernet-predict CHECKPOINT IMAGE --context N`: complete one image from N of its
pixels with a trained hypernetwork (``fastsiren fit hypernet``).

    fastsiren hypernet-predict runs/hypernet photo.png --context 100 [--out completed.png]

The image is prepared as in training (centre square, resized to the model's resolution); N
random pixels (``--seed``), or the top half with ``--context half``, go to the encoder; the
predicted SIREN renders the whole image. Writes the context, the completion and the truth side
by side, titled, into the run folder (``IMAGE-stem_completed.png`` beside the checkpoint) unless
``--out`` names a file, and prints the MSE on [0, 1] (all pixels, and the pixels outside the
context).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = (
    "Complete an image from N of its pixels with a hypernetwork trained by 'fastsiren fit "
    "hypernet'. The image is centre-cropped and resized to the model's resolution; N random "
    "pixels (or the top half) are the context. Writes context | completion | truth into the run "
    "folder (or --out) and prints the MSE on [0, 1] as JSON.")


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


def default_output(checkpoint: str | Path, image: str | Path) -> Path:
    """``IMAGE-stem_completed.png`` in the run folder: CHECKPOINT itself when it is a folder,
    else the folder holding the checkpoint file."""
    checkpoint = Path(checkpoint)
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    return folder / f"{Path(image).stem}_completed.png"


def _predict(args: argparse.Namespace) -> int:
    import torch

    from ..errors import InputError
    from ..hypernet.data import half_context, prepare_image, sample_context
    from ..io.image import read_image
    from ..tasks.common import Panel, panel_figure, pixel_grid, save_figure

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

    out = Path(args.out) if args.out else default_output(args.checkpoint, args.image)
    mse, mse_outside = float(error.mean()), float(error[outside].mean()) if outside.any() else 0.0
    given = "top half" if args.context == "half" else f"{args.context} px"
    panels = [Panel(image(target * keep), f"context: {given} (grey: not given)"),
              Panel(image(completion), "completion"), Panel(image(target), "truth")]
    title = (f"{Path(args.image).name} completed from {given} at {resolution[0]}x"
             f"{resolution[1]}: MSE on [0, 1] {mse:.4f}, outside the context {mse_outside:.4f}")
    inches = max(1.5, args.zoom * max(resolution) / 100)
    save_figure(panel_figure([panels], title, panel_inches=inches), out)
    print(json.dumps({
        "image": str(args.image), "context": args.context, "resolution": list(resolution),
        "mse": mse, "mse_outside_context": mse_outside,
        "written": str(out),
    }))
    return 0


def register(sub) -> None:
    parser = sub.add_parser(
        "hypernet-predict", help="complete an image from a few pixels (fit hypernet)",
        description=DESCRIPTION)
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="run folder of 'fastsiren fit hypernet' or its checkpoint.pt")
    parser.add_argument("image", metavar="IMAGE", help="image to complete (PNG, JPEG, ...)")
    parser.add_argument("--context", type=parse_context, default=100, metavar="N|half",
                        help="context pixels drawn at random, or 'half' (the top half); "
                        "default 100")
    parser.add_argument("--out", metavar="PNG", default=None,
                        help="where to write context | completion | truth (default: "
                        "IMAGE-stem_completed.png in the run folder)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the context pixels")
    parser.add_argument("--zoom", type=int, default=8,
                        help="size of one image pixel in the written PNG, in screen pixels")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.set_defaults(func=_predict)
