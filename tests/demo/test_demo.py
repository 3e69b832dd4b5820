"""The demo page's functions, called directly (no server, no browser)."""

import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the demo needs Gradio: pip install -e '.[demo]'")
pytest.importorskip("matplotlib", reason="the demo needs matplotlib: pip install -e '.[demo]'")

from mome import demo as D  # noqa: E402


def _png_header_only(path, width, height):
    """A PNG that declares width × height and holds no pixels: Pillow reads the size without decoding."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))


class FixedText:
    """The real model with its answer replaced (an untrained model never writes a box); counts overlapping calls."""

    def __init__(self, model, text, delay=0.0):
        self._model, self._text, self._delay = model, text, delay
        self.active = self.most_active = 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def generate(self, *args, **kwargs):
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            time.sleep(self._delay)
            results = self._model.generate(*args, **kwargs)
        finally:
            self.active -= 1
        for r in results:
            r.text = self._text
        return results


# -- open_image --------------------------------------------------------------------------------------------------
def test_open_image_accepts_a_path_a_gradio_payload_and_a_pil_image(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGBA", (40, 30), (10, 20, 30, 255)).save(path)
    for given in (str(path), {"path": str(path), "orig_name": "a.png"}, Image.open(path)):
        im, note = D.open_image(given)
        assert im.mode == "RGB" and im.size == (40, 30) and note == ""
        assert im.getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize("given", [None, "", {"path": None}])
def test_open_image_without_an_image_says_so(given):
    with pytest.raises(D.DemoError, match="No image"):
        D.open_image(given)


@pytest.mark.parametrize("content", [b"just some text", b"\x89PNG\r\n\x1a\n truncated", b""])
def test_open_image_of_a_file_that_is_not_an_image_says_so(tmp_path, content):
    path = tmp_path / "notes.png"
    path.write_bytes(content)
    with pytest.raises(D.DemoError, match="notes.png is not an image"):
        D.open_image(str(path))


def test_a_huge_image_is_downscaled_with_a_note(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000), "white").save(path, compress_level=1)
    im, note = D.open_image(str(path))
    assert max(im.size) == D.MAX_SIDE and im.size == (1024, 683)
    assert "3000×2000" in note and "1024×683" in note


def test_an_image_beyond_pillows_bomb_limit_is_refused_with_a_message(tmp_path):
    path = tmp_path / "bomb.png"
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 10
    _png_header_only(path, side, side)
    with pytest.raises(D.DemoError, match="too large to open safely"):
        D.open_image(str(path))


# -- overlay and charts ------------------------------------------------------------------------------------------
def test_draw_box_draws_the_normalised_box_on_an_enlarged_image():
    out = D.draw_box(Image.new("RGB", (64, 32), "white"), [0.25, 0.5, 0.75, 1.0])
    assert out.size == (384, 192)  # 6× so the longer side reaches OVERLAY_MIN_SIDE
    a = np.asarray(out)
    is_box = (a == D.BOX_COLOR).all(-1)
    ys, xs = np.nonzero(is_box)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (96, 287, 96, 191)
    assert not is_box[144, 192]  # the inside stays as it was


@pytest.mark.parametrize("box", [[0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0], [0.9, 0.2, 0.9, 0.8]])
def test_draw_box_draws_degenerate_and_full_boxes(box):
    out = D.draw_box(Image.new("RGB", (64, 64), "white"), box)
    assert (np.asarray(out) == D.BOX_COLOR).all(-1).any()


def test_vision_chart_shows_each_encoders_share_of_weight_and_importance():
    routing = {"vision": {"eva_clip": 0.2, "dinov2": 0.3, "pix2struct": 0.5},
               "vision_importance": {"eva_clip": 1.0, "dinov2": 1.0, "pix2struct": 2.0}}
    ax = D.vision_chart(routing).axes[0]
    widths = [round(p.get_width(), 6) for p in ax.patches]
    assert widths == [0.2, 0.3, 0.5, 0.25, 0.25, 0.5]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["eva_clip", "dinov2", "pix2struct"]


def test_language_chart_marks_the_chosen_expert_of_each_layer():
    ax = D.language_chart([3, 0, 0, 2, 1], num_experts=4).axes[0]
    grid = ax.images[0].get_array()
    assert grid.shape == (4, 5)
    assert grid.argmax(0).tolist() == [3, 0, 0, 2, 1] and grid.sum() == 5
    no_mole = D.language_chart(None, 0).axes[0]
    assert "no MoLE" in no_mole.texts[0].get_text()


# -- Demo.answer ---------------------------------------------------------------------------------------------------
def test_answer_runs_the_model_and_returns_text_and_both_charts(tiny_demo, example_rows):
    image, prompt = example_rows[0]
    a = tiny_demo.answer(image, prompt, "greedy", 4)
    assert a.text and "⚠️" not in a.message
    assert len(a.vision.axes[0].patches) == 2 * len(tiny_demo.model.move.names)
    layers = tiny_demo.model.config.language.num_layers
    assert a.language.axes[0].images[0].get_array().shape == (tiny_demo.num_experts, layers)
    sampled = tiny_demo.answer(image, prompt, "sampling", 4, temperature=1.0, top_p=0.9, seed=3)
    assert sampled.text and sampled.vision is not None


def test_answer_with_a_box_draws_it_and_without_one_says_none_is_drawn(tiny_demo, example_rows):
    image, prompt = example_rows[2]
    boxed = D.Demo(FixedText(tiny_demo.model, "[0.100, 0.200, 0.500, 0.600]"), "test")
    a = boxed.answer(image, prompt, max_new_tokens=2)
    assert a.overlay is not None and (np.asarray(a.overlay) == D.BOX_COLOR).all(-1).any()
    plain = D.Demo(FixedText(tiny_demo.model, "a red circle"), "test").answer(image, prompt, max_new_tokens=2)
    assert plain.overlay is None and "No box" in plain.message


@pytest.mark.parametrize("image_ok, prompt, settings, expected", [
    (False, "What is it?", {}, "No image"),
    (True, "   ", {}, "prompt is empty"),
    (True, "What is it?", {"max_new_tokens": 0}, "between 1 and"),
    (True, "What is it?", {"max_new_tokens": "many"}, "must be numbers"),
    (True, "What is it?", {"decoding": "beam"}, "greedy or sampling"),
])
def test_bad_input_gets_a_message_and_no_answer(tiny_demo, example_rows, image_ok, prompt, settings, expected):
    a = tiny_demo.answer(example_rows[0][0] if image_ok else None, prompt, **settings)
    assert a.message.startswith("⚠️") and expected in a.message
    assert a.text == "" and a.overlay is None and a.vision is None and a.language is None


def test_a_failing_model_gets_a_message_not_a_stack_trace(tiny_demo, example_rows):
    class Broken:
        def generate(self, *args, **kwargs):
            raise RuntimeError("out of memory")

    a = D.Demo(Broken(), "broken").answer(*example_rows[0])
    assert a.message == "⚠️ The model failed on this input: RuntimeError: out of memory" and a.text == ""


def test_a_huge_upload_is_answered_with_the_downscaling_note(tiny_demo, tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (2048, 1500), "white").save(path, compress_level=1)
    a = tiny_demo.answer(str(path), "What is it?", max_new_tokens=1)
    assert "downscaled to 1024×750" in a.message and a.vision is not None


def test_requests_run_one_at_a_time_on_the_model(tiny_demo, example_rows):
    slow = FixedText(tiny_demo.model, "x", delay=0.3)
    d = D.Demo(slow, "test")
    threads = [threading.Thread(target=d.answer, args=(*example_rows[0], "greedy", 1)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert slow.most_active == 1


def test_the_page_queues_every_model_action_on_one_concurrency_slot(tiny_demo, example_rows):
    page = D.build_page(tiny_demo, example_rows)
    fns = [f for f in page.fns.values() if f.name in ("on_ask", "load")]
    assert len(fns) == 3  # Ask, Enter in the prompt, Load
    assert all(f.concurrency_id == "model" and f.concurrency_limit == 1 for f in fns)


# -- models ----------------------------------------------------------------------------------------------------------
def test_load_of_a_folder_that_does_not_load_keeps_the_current_model(tiny_demo, tmp_path):
    model = tiny_demo.model
    (tmp_path / "config.yaml").write_text("not: [a config")
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    for folder, expected in ((str(tmp_path), "does not load as a MoME model"),
                             (str(tmp_path / "missing"), "is not a folder"), ("  ", "Type a model folder")):
        status, message = tiny_demo.load(folder)
        assert expected in message and "Traceback" not in message
        assert tiny_demo.model is model and status == tiny_demo.status()


def test_default_model_is_the_training_runs_output_when_it_exists(tiny_demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    final = tmp_path / D.DEFAULT_MODEL
    tiny_demo.model.save_pretrained(final)
    model, label = D.load_model()
    assert str(D.DEFAULT_MODEL) in label and "default training run" in label and "untrained" not in label
    d = D.Demo(tiny_demo.model, tiny_demo.label)
    status, message = d.load(str(final))
    assert d.model is not tiny_demo.model and "Loaded" in message and str(final) in status


def test_without_the_training_runs_output_the_untrained_tiny_preset_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, label = D.load_model()
    assert "tiny" in label and "untrained" in label and str(D.DEFAULT_MODEL) in label


def test_cli_with_a_model_folder_that_does_not_load_exits_with_a_message(tmp_path, capsys):
    assert D.main(["--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not load as a MoME model" in err and "Traceback" not in err


# -- examples --------------------------------------------------------------------------------------------------------
def test_examples_are_one_record_of_each_synthetic_dataset(example_rows):
    from mome.data.synth import DATASETS

    assert len(example_rows) == len(DATASETS)
    for (image, prompt), dataset in zip(example_rows, DATASETS):
        assert f"/{dataset}/" in image and Image.open(image).size[0] > 0
        assert prompt and "<image>" not in prompt


def test_cli_serves_the_page_on_the_given_host_and_port(tmp_path, monkeypatch, capsys):
    import gradio as gr

    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.update(kw, page=self))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # no runs/ here: the untrained tiny preset
    assert D.main(["--host", "127.0.0.2", "--port", "7999"]) == 0
    assert launched["server_name"] == "127.0.0.2" and launched["server_port"] == 7999
    examples_dir = tmp_path / "cache" / "mome" / "demo-examples"
    assert launched["allowed_paths"] == [str(examples_dir / "images" / "test")]
    assert "untrained" in capsys.readouterr().err
    status = next(b for b in launched["page"].blocks.values() if getattr(b, "elem_id", None) == "demo-status")
    assert "untrained" in status.value
