"""``anyformer app``: one local web page (Gradio) to try every trained checkpoint.

    pip install -e '.[app]'                   # Gradio: an optional extra, the core install stays lean
    anyformer app                             # every runs/NAME/checkpoints/last.ckpt, one tab each
    anyformer app --ckpt runs/demo_gpt/checkpoints/last.ckpt --ckpt runs/demo_vit/checkpoints/last.ckpt
    anyformer app --runs runs/ --port 7861    # --host 0.0.0.0 serves other machines: say so explicitly

One tab per checkpoint, laid out by its task (``anyformer.app_tabs``): GPT generation with its
strategies, streamed; translation with the attention over it; text, image and audio classification
with the attention map, rollout or spectrogram; a Decision Transformer episode played for a target
return, as an animation. Beside each model, its run's record (final metrics, config.yaml, run.json).
Models are loaded by :func:`anyformer.load` and used only through :class:`anyformer.api.Model`'s
methods, the same as the commands'.

Exit codes: 0 when stopped (Ctrl+C); 2 for a bad checkpoint, ``--runs`` folder without checkpoints,
a port that cannot be listened on, or Gradio missing (one line on stderr, nothing served).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anyformer.core.cli.errors import ArgumentParser, UsageError, reports_usage_errors

logger = logging.getLogger(__name__)

PROG = "anyformer app"
DEFAULT_PORT = 7860
DEFAULT_RUNS = Path("runs")
CHECKPOINT = Path("checkpoints") / "last.ckpt"
"""The checkpoint of a run that ``--runs`` serves: ``runs/NAME/checkpoints/last.ckpt``."""
MISSING_GRADIO = (
    "anyformer app needs Gradio, an optional extra: pip install 'anyformer[app]' (a checkout: pip install -e '.[app]')"
)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Serve a local web page to try trained checkpoints, one tab each.")
    parser.add_argument(
        "--ckpt", action="extend", nargs="+", default=[], metavar="CKPT",
        help="a checkpoint (.ckpt, or a safetensors folder of `anyformer export`); repeat or list several",
    )  # fmt: skip
    parser.add_argument(
        "--runs", type=Path, metavar="DIR",
        help=f"serve every DIR/NAME/{CHECKPOINT} (default, without --ckpt: {DEFAULT_RUNS}/)",
    )  # fmt: skip
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: a free one)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload accepted (default 20 MB)")
    return parser


def run_checkpoints(runs: Path) -> list[Path]:
    """Every ``runs/NAME/checkpoints/last.ckpt``, by run name.

    Raises:
        UsageError: ``runs`` is not a folder, or holds no such checkpoint.
    """
    if not runs.is_dir():
        raise UsageError(f"--runs {runs}: no such folder (train a model first, or give --ckpt)")
    found = sorted(path for path in runs.glob(f"*/{CHECKPOINT.as_posix()}") if path.is_file())
    if not found:
        raise UsageError(f"--runs {runs}: no run folder holds {CHECKPOINT} (train a model first, or give --ckpt)")
    return found


def served_name(path: Path) -> str:
    """The run's name for ``runs/NAME/checkpoints/X.ckpt``, else the file's (or folder's) stem."""
    return path.parent.parent.name if path.parent.name == "checkpoints" else path.stem


def load_served(paths: Sequence[Path], explicit: bool, max_bytes: int) -> list[Any]:
    """Load each checkpoint through :func:`anyformer.load`.

    A checkpoint whose task has no tab is refused when it was named (``--ckpt``), skipped with a
    note when it was found (``--runs``: e.g. a BERT pretraining run).

    Raises:
        UsageError: an unreadable checkpoint, or a named one the app has no tab for.
    """
    import anyformer
    from anyformer.app_tabs import KINDS, Served

    served, names = [], set()
    for path in paths:
        model = anyformer.load(path)  # CheckpointError is a UsageError: one line naming the file
        if model.task not in KINDS:
            message = f"{path}: the app has no tab for a {model.task!r} checkpoint (it serves {', '.join(KINDS)})"
            if explicit:
                raise UsageError(message)
            print(f"{PROG}: note: skipped {message}", file=sys.stderr)
            continue
        name = served_name(path)
        while name in names:  # two checkpoints of one run, or two files of one name
            name += "'"
        names.add(name)
        served.append(Served(model, name, path, max_bytes))
    if not served:
        raise UsageError("no checkpoint the app can serve (see the notes above)")
    return served


def free_port(host: str, port: int) -> int:
    """``port`` if it can be listened on at ``host`` (0: a free port, chosen now).

    Raises:
        UsageError: the port is taken or not allowed, or the host is not an address of this machine.
    """
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is out of range: give 0..65535 (0: a free port)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise UsageError(f"--host {host}: not an address ({err.strerror or err})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(address)
        except OSError as err:
            raise UsageError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror or err})") from None
        return probe.getsockname()[1]


def build_app(served: Sequence[Any]) -> Any:
    """The page: one tab per served checkpoint (``anyformer.app_tabs.add_tab``)."""
    import gradio as gr

    from anyformer.app_tabs import add_tab

    with gr.Blocks(title="anyformer", analytics_enabled=False) as app:
        gr.Markdown("# anyformer\nAnything that can be tokenized, fed to one transformer: try each checkpoint.")
        for each in served:
            add_tab(each)
    return app.queue(default_concurrency_limit=1)  # one request at a time per event: the models are shared


def start(args: Any) -> tuple[Any, str, list[Any]]:
    """Load the checkpoints, build the page and start serving it in the background.

    Returns:
        The Gradio app (``.close()`` stops it), its URL and the served checkpoints
        (``anyformer.app_tabs.Served``), in tab order.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, one line each
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError(MISSING_GRADIO) from None
    port = free_port(args.host, args.port)  # before loading: a taken port fails at once
    if args.ckpt:
        paths, explicit = [Path(path) for path in args.ckpt], True
        if args.runs is not None:
            paths += run_checkpoints(args.runs)
    else:
        paths, explicit = run_checkpoints(args.runs or DEFAULT_RUNS), False
    served = load_served(paths, explicit, int(args.max_upload_mb * 1e6))
    app = build_app(served)
    try:
        app.launch(
            server_name=args.host, server_port=port, prevent_thread_lock=True, quiet=True, show_error=True,
            max_file_size=int(args.max_upload_mb * 1e6), ssr_mode=False, footer_links=[], theme=_theme(),
        )  # fmt: skip
    except OSError as err:
        raise UsageError(f"--port {args.port}: cannot listen on {args.host}:{port} ({err})") from None
    return app, app.local_url, served


def _theme() -> Any:
    """Gradio's default look with the system's fonts: the page fetches nothing from outside."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


@reports_usage_errors(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``anyformer app``: serve until Ctrl+C; returns the exit code (2: bad input)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    app, url, served = start(args)
    names = ", ".join(f"{each.name} ({each.model.task})" for each in served)
    print(f"{PROG}: serving {names} on {url} (Ctrl+C to stop)", flush=True)
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
    return 0
