"""A local web page to try a MoME model: upload an image, ask, and see the answer with its routing.

    python -m mome.demo                          # runs/tiny-synth/stage2/final if it exists, else the untrained tiny
    python -m mome.demo --model DIR              # a directory written by MoME.save_pretrained
    python -m mome.demo --preset tiny [key=value ...] [--host 127.0.0.1] [--port 7860]

The page (Gradio) shows the answer; for an answer holding a normalised box ``[x1, y1, x2, y2]`` (as the records write
them, `mome.data.records.parse_box`) the box drawn on the image; the soft router's weights G_s(I)_i and Fig. 4's
importance mean |G_s(I)_i · f̂_i| per encoder; and the MoLE expert each decoder layer chose (the routing of
`mome.model.generate`). The synthetic benchmark's tasks are one click away as examples. Requests are queued and run
one at a time: one model, one lock. A bad input (no image, a file that is not an image, an empty prompt, a model folder
that does not load) gets a message on the page, and an image larger than `MAX_SIDE` is downscaled with a note.

The page's functions (`Demo.answer`, `Demo.load`, `open_image`, `draw_box`, the charts) are plain Python, so they are
tested without a browser; `build_page` only wires them to Gradio components.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, UnidentifiedImageError

from mome.cli import parse, run
from mome.data.records import parse_box

__all__ = ["Demo", "Answer", "DemoError", "open_image", "draw_box", "vision_chart", "language_chart", "examples",
           "build_page", "main", "DEFAULT_MODEL", "MAX_SIDE"]

DEFAULT_MODEL = Path("runs/tiny-synth/stage2/final")  # `python -m mome.train`'s output, from the same directory
MAX_SIDE = 1024  # longer sides are downscaled: every encoder resizes far below this, so only decoding time is saved
MAX_NEW_TOKENS = 256
BOX_COLOR = (255, 0, 200)  # a magenta that no synthetic scene uses, so the box is visible on every example
OVERLAY_MIN_SIDE = 384  # small images (the benchmark's are 64 px) are enlarged before drawing so the box is visible


class DemoError(Exception):
    """A problem with the user's input, shown on the page as it is."""


# -- inputs --------------------------------------------------------------------------------------------------------
def open_image(image) -> tuple[Image.Image, str]:
    """An uploaded image (a path, Gradio's file payload ``{"path": ...}`` or a PIL image) → (RGB image, note).

    The note says when the image was downscaled to `MAX_SIDE`; an image too large for Pillow to open safely
    (its decompression-bomb limit) and anything that is not an image raise `DemoError`."""
    if isinstance(image, dict):
        image = image.get("path")
    if image is None or image == "":
        raise DemoError("No image: upload one, or click one of the examples below.")
    if isinstance(image, Image.Image):
        im, size = image.convert("RGB"), image.size
    else:
        name = Path(image).name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we downscale those below
                with Image.open(image) as f:
                    size = f.size
                    f.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced scale, far less memory
                    im = f.convert("RGB")
        except Image.DecompressionBombError as e:
            raise DemoError(f"{name} is too large to open safely ({e}). Downscale it first.") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise DemoError(f"{name} is not an image that can be read (PNG, JPEG, WebP, GIF, BMP, TIFF ...).") from None
    note = ""
    if max(size) > MAX_SIDE:
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        note = f"The image is {size[0]}×{size[1]} pixels; it was downscaled to {im.width}×{im.height}."
    return im, note


# -- outputs -------------------------------------------------------------------------------------------------------
def draw_box(image: Image.Image, box: list[float]) -> Image.Image:
    """The image (enlarged to at least `OVERLAY_MIN_SIDE` on its longer side) with the normalised box drawn."""
    scale = max(1, OVERLAY_MIN_SIDE // max(image.size))
    out = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    W, H = out.size
    x1, y1, x2, y2 = box
    width = max(2, round(max(W, H) / 120))
    # the last pixel inside is x2·W − 1; a zero-width box (x1 = x2) still gets a line
    corners = [x1 * W, y1 * H, max(x1 * W, x2 * W - 1), max(y1 * H, y2 * H - 1)]
    ImageDraw.Draw(out).rectangle(corners, outline=BOX_COLOR, width=width)
    return out


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in Gradio's worker threads

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def vision_chart(routing: dict):
    """MoVE: each encoder's share of the soft router's weight G_s(I)_i and of Fig. 4's importance mean |G_s(I)_i · f̂_i|
    (both normalised to sum 1 over the encoders, as `mome.analyze` plots them), raw values as labels."""
    import numpy as np

    encoders = list(routing["vision"])
    weight = np.array([routing["vision"][e] for e in encoders], dtype=float)
    importance = np.array([routing["vision_importance"][e] for e in encoders], dtype=float)
    fig = _figure(5.2, 0.6 + 0.55 * len(encoders))
    ax = fig.add_subplot()
    y = np.arange(len(encoders))
    for offset, values, color, label in ((-0.2, weight, "tab:gray", "router weight $G_s(I)_i$"),
                                         (0.2, importance, "tab:purple", "importance (Fig. 4)")):
        share = values / (values.sum() or 1.0)
        bars = ax.barh(y + offset, share, height=0.4, color=color, label=label)
        ax.bar_label(bars, [f"{v:.3g}" for v in values], padding=2, fontsize=7)
    ax.set_yticks(y, encoders)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.15)
    ax.set_xlabel("share over the encoders")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("MoVE: soft router", fontsize=10)
    return fig


def language_chart(experts: list[int] | None, num_experts: int):
    """MoLE: the expert each decoder layer chose for this prompt (a cell per layer and expert)."""
    import numpy as np

    fig = _figure(5.2, 0.9 + 0.3 * max(num_experts, 1))
    ax = fig.add_subplot()
    if experts is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "This model has no MoLE adapters.", ha="center", va="center")
        return fig
    grid = np.zeros((num_experts, len(experts)))
    grid[experts, np.arange(len(experts))] = 1
    ax.imshow(grid, cmap="Greens", vmin=0, vmax=1.25, aspect="auto", interpolation="nearest")
    step = max(1, len(experts) // 16)
    ax.set_xticks(range(0, len(experts), step), [str(i) for i in range(0, len(experts), step)], fontsize=7)
    ax.set_yticks(range(num_experts), [str(k) for k in range(num_experts)], fontsize=7)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("expert")
    ax.set_title("MoLE: chosen expert per layer", fontsize=10)
    return fig


# -- the model behind the page ---------------------------------------------------------------------------------------
@dataclass
class Answer:
    """What one request puts on the page. ``message`` is markdown (notes and errors); a failed request has only it."""

    message: str
    text: str = ""
    overlay: Image.Image | None = None
    vision: object = None  # matplotlib Figure
    language: object = None  # matplotlib Figure


def load_model(model_dir: str | os.PathLike | None = None, preset: str | None = None,
               overrides: list[str] | None = None, device: str = "cpu"):
    """(model, description for the page). With neither argument: `DEFAULT_MODEL` if it exists, else ``tiny``.

    A folder that does not load raises `DemoError` with the reason (never a stack trace on the page)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mome.model import MoME, MoMEConfig

    if model_dir is None and preset is None:
        if (DEFAULT_MODEL / "config.yaml").is_file():
            model_dir, why = DEFAULT_MODEL, "the default training run's model"
        else:
            preset, why = "tiny", (f"**untrained** — `{DEFAULT_MODEL}` does not exist (train it with "
                                   f"`python -m mome.train`), so the answers are noise")
    else:
        why = ""
    if model_dir is not None:
        path = Path(model_dir)
        if not path.is_dir():
            raise DemoError(f"`{path}` is not a folder.")
        try:
            model = MoME.from_pretrained(path, overrides or None, device=device)
        except Exception as e:  # any failure is the folder's: show it, keep the page alive
            raise DemoError(f"`{path}` does not load as a MoME model: {type(e).__name__}: {e}") from None
        label = f"`{path}`" + (f" ({why})" if why else "")
    else:
        try:
            model = MoME(MoMEConfig.preset(preset, overrides or None)).to(device)
        except Exception as e:
            raise DemoError(f"preset `{preset}` does not build: {type(e).__name__}: {e}") from None
        label = f"the `{preset}` preset, " + (why or "**untrained**, so the answers are noise")
    model.eval()
    return model, label


class Demo:
    """One model and the lock that serialises its requests; `answer` and `load` are the page's two actions."""

    def __init__(self, model, label: str, device: str = "cpu"):
        self.model, self.label, self.device = model, label, device
        self.lock = threading.Lock()

    @property
    def num_experts(self) -> int:
        from mome.model.mole import mole_modules

        return max((m.num_experts for m in mole_modules(self.model.llm)), default=0)

    def status(self) -> str:
        return f"**Model:** {self.label}"

    def load(self, folder: str) -> tuple[str, str]:
        """Load another model folder → (status, message). On failure the current model stays."""
        folder = (folder or "").strip()
        if not folder:
            return self.status(), "Type a model folder (one written by `MoME.save_pretrained`) to load it."
        try:
            with self.lock:
                model, label = load_model(folder, device=self.device)
                self.model, self.label = model, label
        except DemoError as e:
            return self.status(), f"⚠️ {e}\n\nThe current model stays loaded."
        return self.status(), f"Loaded {label}."

    def answer(self, image, prompt: str, decoding: str = "greedy", max_new_tokens: int = 32,
               temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> Answer:
        try:
            im, note = open_image(image)
            prompt = (prompt or "").strip()
            if not prompt:
                raise DemoError("The prompt is empty: ask a question or give an instruction about the image.")
            try:
                max_new_tokens = int(max_new_tokens)
                temperature, top_p, seed = float(temperature), float(top_p), int(seed)
            except (TypeError, ValueError):
                raise DemoError("The generation settings must be numbers.") from None
            if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
                raise DemoError(f"Max new tokens must be between 1 and {MAX_NEW_TOKENS}, got {max_new_tokens}.")
            if decoding not in ("greedy", "sampling"):
                raise DemoError(f"Decoding must be greedy or sampling, got {decoding!r}.")
        except DemoError as e:
            return Answer(f"⚠️ {e}")
        try:
            with self.lock:
                result = self.model.generate([im], [prompt], max_new_tokens=max_new_tokens,
                                             do_sample=decoding == "sampling", temperature=temperature,
                                             top_p=top_p, seed=seed)[0]
                num_experts = self.num_experts
        except Exception as e:  # the page reports it; the server keeps serving
            return Answer(f"⚠️ The model failed on this input: {type(e).__name__}: {e}")
        box = parse_box(result.text)
        notes = [note] if note else []
        if box is None:
            notes.append("No box `[x1, y1, x2, y2]` in the answer, so none is drawn.")
        return Answer(message=" ".join(notes), text=result.text or "(empty answer)",
                      overlay=None if box is None else draw_box(im, box),
                      vision=vision_chart(result.routing),
                      language=language_chart(result.routing["language"], num_experts))


# -- examples ------------------------------------------------------------------------------------------------------
def examples(cache_dir: str | os.PathLike | None = None) -> list[list[str]]:
    """One [image path, prompt] per synthetic dataset (`mome.data.synth`, test split, seed 0), drawn once into
    ``cache_dir`` (default ``$XDG_CACHE_HOME/mome/demo-examples``)."""
    import json

    from mome.data.synth import DATASETS, make_split

    if cache_dir is None:
        cache_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mome" / "demo-examples"
    cache_dir = Path(cache_dir)
    index = cache_dir / "examples.json"
    if not index.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        records = make_split(cache_dir, "test", 16, seed=0)  # 16 give each dataset one (the smallest share: 1/12)
        first = {}
        for r in records:
            first.setdefault(r["dataset"], [r["image"], r["conversations"][0]["value"].replace("<image>", "").strip()])
        tmp = index.with_suffix(".tmp")
        tmp.write_text(json.dumps([first[d] for d in DATASETS if d in first]))
        os.replace(tmp, index)
    return [[str(cache_dir / image), prompt] for image, prompt in json.loads(index.read_text())]


# -- the page ------------------------------------------------------------------------------------------------------
def build_page(demo: Demo, example_rows: list[list[str]] | None = None):
    """The Gradio Blocks of the page. Element ids (``demo-*``) are what the browser test finds."""
    import gradio as gr

    with gr.Blocks(title="MoME demo") as page:
        gr.Markdown("# MoME: Mixture of Multimodal Experts\nUpload an image, ask about it, and see which vision "
                    "encoders (MoVE) and which language experts (MoLE) answered.")
        status = gr.Markdown(demo.status(), elem_id="demo-status")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=320,
                                 elem_id="demo-image")
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="demo-prompt",
                                    placeholder="e.g. What colour is the circle?")
                with gr.Row():
                    decoding = gr.Radio(["greedy", "sampling"], value="greedy", label="Decoding",
                                        elem_id="demo-decoding")
                    max_new = gr.Slider(1, MAX_NEW_TOKENS, value=32, step=1, label="Max new tokens",
                                        elem_id="demo-max-new-tokens")
                with gr.Accordion("Sampling settings", open=False):
                    temperature = gr.Slider(0.05, 2.0, value=1.0, step=0.05, label="Temperature")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p")
                    seed = gr.Number(0, precision=0, label="Seed")
                ask = gr.Button("Ask", variant="primary", elem_id="demo-ask")
            with gr.Column(scale=1):
                message = gr.Markdown("", elem_id="demo-message")
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="demo-answer")
                overlay = gr.Image(label="Predicted box", interactive=False, height=320, elem_id="demo-overlay")
        with gr.Row():
            vision = gr.Plot(label="MoVE routing", format="png", elem_id="demo-vision-chart")
            language = gr.Plot(label="MoLE routing", format="png", elem_id="demo-language-chart")
        if example_rows:
            gr.Examples(example_rows, [image, prompt], label="Examples from the synthetic benchmark")
        with gr.Accordion("Load another model", open=False):
            with gr.Row():
                folder = gr.Textbox(label="Model folder", placeholder="runs/tiny-synth/stage2/final", scale=4,
                                    elem_id="demo-folder")
                load = gr.Button("Load", scale=1, elem_id="demo-load")

        def on_ask(image, prompt, decoding, max_new, temperature, top_p, seed):
            a = demo.answer(image, prompt, decoding, max_new, temperature, top_p, seed)
            return a.message, a.text, a.overlay, a.vision, a.language

        # preprocess=False: the raw upload reaches open_image, which turns a non-image into a message instead of
        # Gradio's own error; one concurrency id for every model action, so requests queue on the one model.
        ask_args = dict(fn=on_ask, inputs=[image, prompt, decoding, max_new, temperature, top_p, seed],
                        outputs=[message, answer, overlay, vision, language], preprocess=False,
                        concurrency_limit=1, concurrency_id="model")
        ask.click(**ask_args)
        prompt.submit(**ask_args)
        load.click(demo.load, inputs=[folder], outputs=[status, message], concurrency_limit=1,
                   concurrency_id="model")
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mome.demo", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help=f"a directory written by MoME.save_pretrained (default: {DEFAULT_MODEL} "
                                        "if it exists, else --preset tiny)")
    source.add_argument("--preset", help="build a fresh, untrained model from a preset (e.g. tiny)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also MOME_DEBUG=1)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (flags and overrides in any order)")
    args = parse(parser, argv)

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local page: no usage reports to Gradio
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("mome.demo needs Gradio: pip install -e '.[demo]'", file=sys.stderr)
        return 2
    try:
        model, label = load_model(args.model, args.preset, args.overrides, args.device)
    except DemoError as e:
        print(f"mome.demo: {e}", file=sys.stderr)
        return 2
    print(f"mome.demo: model: {label.replace('`', '').replace('*', '')}", file=sys.stderr)
    demo = Demo(model, label, args.device)
    try:
        rows = examples()
    except OSError as e:  # e.g. a read-only home: the page works without them
        print(f"mome.demo: no examples ({e})", file=sys.stderr)
        rows = []
    page = build_page(demo, rows)
    page.queue(default_concurrency_limit=1)
    page.launch(server_name=args.host, server_port=args.port,
                allowed_paths=[os.path.commonpath([r[0] for r in rows])] if rows else None)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "python -m mome.demo"))
