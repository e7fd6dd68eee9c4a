"""``anyformer app`` in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright
loads the page served on loopback and, tab by tab, submits a real input and reads the answer, which
must be what :func:`anyformer.load`'s model gives for the same input (the page holds no model code).

The checkpoints are tiny fits through the CLI (one or two steps), so they need not be right, only
the same in the page as through the API. A screenshot of every tab after its request is saved
under the test's temporary folder (``app_screens/``); README's two come from there. Skips, with the
reason, where Gradio, Playwright or Chromium is missing; CI installs them (``.ci/run``, ``make install``).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

import anyformer
from anyformer.app import MISSING_GRADIO, build_parser, start
from anyformer.app import main as app_main
from tests.helpers import run_cli, untrained_cartpole_dt

gr = pytest.importorskip("gradio", reason="Gradio is not installed: pip install -e '.[app]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install -e '.[test]'")
from anyformer import app_tabs  # noqa: E402  (needs Gradio)

CHROMIUM = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
REPO = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
ONE_STEP = ["--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=1", *QUIET]
TINY = ["--model.config.transformer.dim=32", "--model.config.transformer.n_layers=1"]
TIMEOUT_MS = 20_000
PROMPT = "The "
SOURCE = "the value is returned"
SENTENCE = "the film was great"
TARGET_RETURN = 50.0


# -- checkpoints -------------------------------------------------------------------------------
@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def checkpoints(workdir) -> dict[str, Path]:
    """Task -> a tiny checkpoint in ``workdir/runs/NAME/checkpoints/last.ckpt``, each one step of its CLI fit."""
    rng = random.Random(0)
    words = {0: ["bad", "dull"], 1: ["good", "great"]}
    for split in ("train", "val"):
        rows = "".join(f"the film was {rng.choice(words[i % 2])}\t{i % 2}\n" for i in range(16))
        (workdir / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    fits = {
        "gpt": ["gpt", "fit", "--config", "experiments/text/gpt_demo.yaml", "--data.vocab_size=300",
                "--data.context_len=32", "--data.batch_size=4", "--data.val_batches=1", *TINY],
        "seq2seq": ["seq2seq", "fit", "--config", "experiments/text/seq2seq_demo.yaml", "--data.vocab_size=300",
                    "--data.batch_size=8", "--model.val_bleu_sentences=0", "--model.config.encoder.dim=32",
                    "--model.config.encoder.n_layers=1", "--model.config.decoder.dim=32",
                    "--model.config.decoder.n_layers=1", "--model.config.encoder.n_heads=2",
                    "--model.config.decoder.n_heads=2"],
        "bert-classify": ["bert-classify", "fit", "--config", "experiments/text/bert_tiny_demo_scratch.yaml",
                          "--data.source=files", "--data.train_path=train.tsv", "--data.val_path=val.tsv",
                          "--data.class_names=[negative, positive]", "--data.vocab_size=300",
                          "--data.max_seq_len=16", "--data.batch_size=8", *TINY],
        "vit": ["vit", "fit", "--config", "experiments/vision/vit_digits.yaml", "--data.batch_size=16", *TINY],
        "speech": ["speech", "fit", "--config", "experiments/speech/speech_synthetic.yaml",
                   "--data.synthetic_per_class=2", "--data.batch_size=8", *TINY],
    }  # fmt: skip
    found = {}
    for task, args in fits.items():
        run_cli(workdir, [*args, "--run-name", f"{task.split('-')[0]}_app", *ONE_STEP])
        found[task] = workdir / "runs" / f"{task.split('-')[0]}_app" / "checkpoints" / "last.ckpt"
    found["dt"] = untrained_cartpole_dt(workdir / "runs" / "dt_app" / "checkpoints" / "last.ckpt")
    return found


@pytest.fixture
def inputs(workdir) -> dict[str, Path]:
    """A test digit of the 8x8 set as a PNG, a synthesized spoken digit as an 8 kHz WAV, and bad files."""
    from sklearn.datasets import load_digits

    from anyformer.speech.synth import synthesize_digits

    digits = load_digits()
    files = {"digit": workdir / "digit.png", "clip": workdir / "seven.wav", "bad": workdir / "broken.png"}
    Image.fromarray((digits.images[-1] / 16 * 255).astype(np.uint8)).save(files["digit"])
    waves, _ = synthesize_digits(1, seed=5, sample_rate=8000, cache=False)
    soundfile.write(files["clip"], waves[7].numpy(), 8000)
    files["bad"].write_text("not an image")
    files["text"] = workdir / "notes.txt"
    files["text"].write_text("not an image either")
    return files


# -- the server and the browser ------------------------------------------------------------------
@contextlib.contextmanager
def browser_page(url: str):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            sync_api.expect.set_options(timeout=TIMEOUT_MS)
            page.goto(url)
            page.get_by_role("tab").first.wait_for()
            yield page
        finally:
            browser.close()


def open_tab(page, tab: app_tabs.Served) -> str:
    """Select ``tab`` (from the overflow menu when the tab bar is full); returns its element-id prefix."""
    button = page.locator(f"#{tab.slug}-tab-button")
    if button.count():
        button.click()
    else:
        page.locator('button[aria-label="More tabs"]').click()
        page.locator(".overflow-dropdown button", has_text=tab.name).click()
    return f"#{tab.slug}"


def error_shown(page, text: str) -> None:
    """An error toast with ``text`` is in the page; then it is closed."""
    toast = page.locator(".toast-body", has_text=text)
    sync_api.expect(toast).to_be_visible()
    toast.locator(".toast-close").click()
    sync_api.expect(toast).to_have_count(0)


def top_label(page, prefix: str) -> str:
    label = page.locator(f"{prefix}-labels [data-testid=label-output-value]")
    sync_api.expect(label).to_be_visible()
    return label.inner_text().strip()


def shown_k(model) -> int:
    """How many labels a tab shows by default (ties keep the API's order only for the same top_k)."""
    return min(app_tabs.TOP_K, len(model.module.class_names))


def upload(page, prefix: str, path: Path, *, accepted: bool = True) -> None:
    """Put ``path`` in the tab's upload field (emptied first); unless told otherwise, wait until it is there."""
    clear = page.locator(f"{prefix}-upload button[aria-label=Clear]")
    if clear.count():
        clear.click()
    page.locator(f"{prefix}-upload input[type=file]").set_input_files(str(path))
    if accepted:
        sync_api.expect(page.locator(f"{prefix}-upload td.filename")).to_have_attribute("aria-label", path.name)


def attention_shown(page, prefix: str) -> None:
    sync_api.expect(page.locator(f"{prefix}-attention img")).to_be_visible()


# -- the tabs ----------------------------------------------------------------------------------
def gpt_tab(page, tab, model, screens: Path) -> None:
    prefix = open_tab(page, tab)
    page.locator(f"{prefix}-run").click()  # no prompt yet
    error_shown(page, "the prompt is empty")
    page.locator(f"{prefix}-prompt textarea").fill(PROMPT)
    page.locator(f"{prefix}-strategy").get_by_text("greedy").click()
    page.locator(f"{prefix}-max-new-tokens input[type=number]").fill("12")
    page.locator(f"{prefix}-run").click()
    expected = PROMPT + model.generate(PROMPT, strategy="greedy", max_new_tokens=12)
    sync_api.expect(page.locator(f"{prefix}-output textarea")).to_have_value(expected)
    page.screenshot(path=screens / "gpt.png", full_page=True)
    # beside the model, its run: the name and the final metrics of metrics.csv
    sync_api.expect(page.locator(f"{prefix}-record")).to_contain_text("gpt_app")
    sync_api.expect(page.locator(f"#{tab.slug}-tab").get_by_text('"val_loss"')).to_be_visible()


def translation_tab(page, tab, model, screens: Path) -> None:
    prefix = open_tab(page, tab)
    page.locator(f"{prefix}-source textarea").fill(SOURCE)
    page.locator(f"{prefix}-beams input[type=number]").fill("2")
    page.locator(f"{prefix}-run").click()
    attention_shown(page, prefix)
    [expected] = model.translate(SOURCE, beam_size=2)
    sync_api.expect(page.locator(f"{prefix}-output textarea")).to_have_value(expected)
    page.screenshot(path=screens / "seq2seq.png", full_page=True)


def classifier_tab(page, tab, model, screens: Path) -> None:
    prefix = open_tab(page, tab)
    page.locator(f"{prefix}-text textarea").fill(SENTENCE)
    page.locator(f"{prefix}-run").click()
    attention_shown(page, prefix)
    [[(label, _), *_]] = model.classify([SENTENCE], top_k=shown_k(model))
    assert top_label(page, prefix) == label
    page.screenshot(path=screens / "bert.png", full_page=True)


def vit_tab(page, tab, model, inputs: dict[str, Path], screens: Path) -> None:
    prefix = open_tab(page, tab)
    upload(page, prefix, inputs["bad"])
    page.locator(f"{prefix}-run").click()
    error_shown(page, "broken.png: not a readable image")
    upload(page, prefix, inputs["text"], accepted=False)
    error_shown(page, "Invalid file type: notes.txt")  # Gradio checks the type as the file arrives
    upload(page, prefix, inputs["digit"])  # the server kept serving: a good request is answered
    page.locator(f"{prefix}-run").click()
    attention_shown(page, prefix)
    [[(label, _), *_]] = model.classify([inputs["digit"]], top_k=shown_k(model))
    assert top_label(page, prefix) == label
    page.screenshot(path=screens / "vit.png", full_page=True)


def speech_tab(page, tab, model, inputs: dict[str, Path], screens: Path) -> None:
    prefix = open_tab(page, tab)
    upload(page, prefix, inputs["clip"])
    page.locator(f"{prefix}-run").click()
    attention_shown(page, prefix)
    [[(label, _), *_]] = model.classify([inputs["clip"]], top_k=shown_k(model))
    assert top_label(page, prefix) == label
    page.screenshot(path=screens / "speech.png", full_page=True)


def decision_transformer_tab(page, tab, model, screens: Path) -> None:
    prefix = open_tab(page, tab)
    page.locator(f"{prefix}-target input").fill(f"{TARGET_RETURN:g}")
    page.locator(f"{prefix}-run").click()
    episode = model.play(TARGET_RETURN, seed=0)
    assert episode.episode_return == model.rollout(TARGET_RETURN, seed=0)[0] and len(episode.frames) > 1
    sync_api.expect(page.locator(f"{prefix}-return")).to_contain_text(
        f"return achieved: {episode.episode_return:g} in {episode.steps} steps"
    )
    animation = page.locator(f"{prefix}-animation img")
    sync_api.expect(animation).to_be_visible()
    assert ".gif" in (animation.get_attribute("src") or "")
    page.screenshot(path=screens / "dt.png", full_page=True)


def test_every_tab_answers_in_a_real_browser_as_the_api_does(checkpoints, inputs, workdir):
    """One test, so that the checkpoints are trained once even when pytest-xdist splits the file."""
    if CHROMIUM is None:
        pytest.skip("no Chromium (Debian's `chromium` package: apt-get install -y chromium; .ci/run installs it)")
    models = {task: anyformer.load(path) for task, path in checkpoints.items()}  # what the page must show
    screens = workdir / "app_screens"
    screens.mkdir()
    with contextlib.chdir(workdir):  # `anyformer app --port 0`: --runs runs/ and 127.0.0.1 by default
        app, url, served = start(build_parser().parse_args(["--port", "0"]))
    try:
        assert url.startswith("http://127.0.0.1:")
        tabs = {each.model.task: each for each in served}
        assert sorted(tabs) == sorted(checkpoints)
        with browser_page(url) as page:
            gpt_tab(page, tabs["gpt"], models["gpt"], screens)
            translation_tab(page, tabs["seq2seq"], models["seq2seq"], screens)
            classifier_tab(page, tabs["bert-classify"], models["bert-classify"], screens)
            vit_tab(page, tabs["vit"], models["vit"], inputs, screens)
            speech_tab(page, tabs["speech"], models["speech"], inputs, screens)
            decision_transformer_tab(page, tabs["dt"], models["dt"], screens)
        # streaming, below the page: the text grows piece by piece; beam search answers at once
        options = ("greedy", 6, 1.0, 50, 0.9, 2, 0)
        pieces = list(app_tabs.generate(tabs["gpt"], PROMPT, *options))
        assert len(pieces) > 1 and all(later.startswith(earlier) for earlier, later in itertools.pairwise(pieces))
        [beam] = app_tabs.generate(tabs["gpt"], PROMPT, "beam", *options[1:])
        assert beam == PROMPT + models["gpt"].generate(PROMPT, strategy="beam", max_new_tokens=6, beams=2)
    finally:
        app.close()
    print(f"screenshots: {screens}")


# -- handlers without the browser --------------------------------------------------------------
def test_an_oversized_or_wrongly_typed_upload_is_refused_by_name(tmp_path):
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * 2_000)
    with pytest.raises(ValueError, match=r"big\.wav is 0\.0 MB, more than the 0\.001 MB"):
        app_tabs.checked_upload(big, app_tabs.AUDIO_SUFFIXES, "an audio file", max_bytes=1_000)
    with pytest.raises(ValueError, match=r"big\.wav is not an image"):
        app_tabs.checked_upload(big, app_tabs.IMAGE_SUFFIXES, "an image", max_bytes=10_000)
    assert app_tabs.checked_upload(big, app_tabs.AUDIO_SUFFIXES, "an audio file", 10_000) == big


def test_a_drawing_becomes_light_ink_on_a_dark_ground():
    canvas = np.zeros((8, 8, 4), dtype=np.uint8)  # transparent, as Gradio's sketchpad starts
    canvas[2:6, 3, :] = [0, 0, 0, 255]  # a dark stroke
    image = app_tabs.sketch_image({"composite": Image.fromarray(canvas, "RGBA")})
    pixels = np.asarray(image)
    assert pixels[2:6, 3].min() == 255 and pixels[0, 0] == 0
    assert app_tabs.sketch_image({"composite": Image.new("RGBA", (8, 8))}) is None  # nothing drawn
    assert app_tabs.sketch_image(None) is None


def test_the_page_reports_an_input_error_as_one_line_and_a_bug_with_its_traceback():
    def handler(text: str) -> str:
        if not text:
            raise ValueError("the text is\nempty")
        return str(1 / len(text.strip()))

    with pytest.raises(gr.Error) as error:
        app_tabs.shown(handler)("")
    assert error.value.message == "the text is empty"
    with pytest.raises(ZeroDivisionError):  # not an input error: Gradio reports it as a failure
        app_tabs.shown(handler)("  ")
    assert app_tabs.shown(handler)("ab") == "0.5"


# -- the command's own errors ------------------------------------------------------------------
def test_bad_command_lines_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    checkpoints = {"dt": untrained_cartpole_dt(tmp_path / "dt.ckpt")}
    assert app_main(["--ckpt", str(tmp_path / "missing.ckpt"), "--port", "0"]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    assert app_main(["--runs", str(tmp_path / "nowhere"), "--port", "0"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert app_main(["--runs", str(tmp_path), "--port", "0"]) == 2
    assert "no run folder holds checkpoints/last.ckpt" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert app_main(["--ckpt", str(checkpoints["dt"]), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"anyformer app: error: --port {port}: cannot listen") and err.count("\n") == 1
    monkeypatch.setitem(__import__("sys").modules, "gradio", None)  # an install without the [app] extra
    assert app_main(["--ckpt", str(checkpoints["dt"]), "--port", "0"]) == 2
    assert MISSING_GRADIO in capsys.readouterr().err
