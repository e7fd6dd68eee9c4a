"""The benchmark's plumbing: the table, the FLOP and byte counts, the timing loop, one quick run.

No timing is asserted: these tests prove that every column is filled and that the counts
match their closed forms, not how fast anything is.
"""

import math

import pytest

from anyformer.core.quantize import weight_bytes_per_token
from anyformer.experiments.bench.__main__ import main, parse_args
from anyformer.experiments.bench.generation import generation_rows
from anyformer.experiments.bench.memory import measure_in_subprocess
from anyformer.experiments.bench.peers import GPT_PEERS, anyformer_gpt
from anyformer.experiments.bench.report import COLUMNS, Row, Target, render_markdown, render_text
from anyformer.experiments.bench.shapes import GenerationShape, GPTShape, ViTShape
from anyformer.experiments.bench.timing import Runtime, interleaved
from anyformer.experiments.bench.train import gpt_flops_per_token, vit_train_rows

TINY = GPTShape(batch=2, context=8, n_layers=2, n_heads=2, dim=16, vocab=11)


def test_ratio_says_how_much_better_anyformer_is_whichever_way_the_unit_points():
    faster = Row("s", "throughput", "tokens/s", ours=300.0, peer="p", theirs=200.0, target=Target(1.3))
    leaner = Row("s", "memory", "MiB", ours=50.0, peer="p", theirs=100.0, higher_is_better=False)
    assert faster.ratio == pytest.approx(1.5) and faster.cells()[-1] == "yes"
    assert leaner.ratio == pytest.approx(2.0) and leaner.cells()[-1] == ""
    slower = Row("s", "throughput", "tokens/s", ours=100.0, peer="p", theirs=200.0, target=Target(1.0))
    assert slower.cells()[-1] == "NO"


def test_text_and_markdown_tables_have_every_column_on_every_line():
    rows = [Row("gpt-cpu", "train", "tokens/s", 1234.5, "minimal", 1000.0, target=Target(1.0))]
    text = render_text(rows).splitlines()
    assert text[0].split() == [word for column in COLUMNS for word in column.split()]
    markdown = render_markdown(rows, "# header").splitlines()
    table = [line for line in markdown if line.startswith("|")]
    assert [cell.strip() for cell in table[0].strip("|").split("|")] == list(COLUMNS)
    assert all(line.count("|") == len(COLUMNS) + 1 for line in table)
    assert "1.23" in table[2]  # the ratio 1234.5 / 1000


def test_flops_per_token_match_the_closed_form():
    """6 x (12 L D^2 + V D) weight FLOPs (four Linears per block plus the tied head) + 12 L D T."""
    model = anyformer_gpt(TINY).model
    L, D, V, T = TINY.n_layers, TINY.dim, TINY.vocab, TINY.context
    assert gpt_flops_per_token(model, TINY) == 6 * (12 * L * D * D + V * D) + 12 * L * D * T


def test_weight_bytes_per_token_count_linears_norms_and_the_tied_head_once():
    model = anyformer_gpt(TINY).model
    L, D, V = TINY.n_layers, TINY.dim, TINY.vocab
    per_block = 12 * D * D + 9 * D + 2 * 2 * D  # four weight matrices, their biases, two LayerNorms
    assert weight_bytes_per_token(model) == 4 * (L * per_block + 2 * D + V * D)  # + final norm + head


def test_every_gpt_peer_has_the_same_number_of_matmul_weights():
    """Configured alike: the models differ in code, not in size (x-transformers has no attention biases)."""
    counts = {name: sum(p.numel() for p in build(TINY).model.parameters()) for name, build in GPT_PEERS.items()}
    assert counts["anyformer"] == counts["transformers"] == counts["minimal"]
    n_biases_and_norm_shifts = TINY.n_layers * (4 * TINY.dim + 2 * TINY.dim) + TINY.dim
    assert counts["x-transformers"] == counts["anyformer"] - n_biases_and_norm_shifts


def test_interleaved_rotates_the_order_and_calls_each_function_warmup_plus_repeats_times_calls():
    log = []
    fns = {name: (lambda name=name: log.append(name)) for name in "abc"}
    medians = interleaved(fns, Runtime(threads=1, repeats=3), calls=2)
    assert set(medians) == set("abc") and all(value >= 0 for value in medians.values())
    assert log == list("abc") + list("aabbcc") + list("bbccaa") + list("ccaabb")


def test_peak_memory_of_a_training_step_covers_weights_grads_and_adam_state():
    """A fresh process; AdamW keeps two moments, so a step holds at least 4x the parameter bytes."""
    runtime = Runtime(threads=1)
    n_params = sum(p.numel() for p in GPT_PEERS["minimal"](GPTShape(12, 64, 4, 4, 128, 65)).model.parameters())
    assert measure_in_subprocess("gpt-cpu", "minimal", runtime) >= 4 * 4 * n_params


def test_generation_and_vit_rows_are_complete_at_tiny_sizes():
    runtime = Runtime(threads=1, repeats=1, calls=1)
    shape = GenerationShape(GPTShape(1, 16, 1, 2, 16, 11), new_tokens=(2, 4), beams=2, sample_batch=2)
    rows = generation_rows("gen", shape, runtime, quick=True)
    rows += vit_train_rows("vit", ViTShape(2, 8, 3, 4, 16, 1, 2), runtime)
    measures = [row.measure for row in rows]
    assert any("greedy" in m for m in measures) and any("beam" in m for m in measures)
    assert any("sampling" in m for m in measures) and rows[-1].unit == "images/s"
    for dtype in ("bf16", "int8"):  # each weight storage beside transformers and beside its own bound
        peers = [row.peer for row in rows if row.measure.startswith("greedy B=1, 2 new, ") and dtype in row.measure]
        assert peers == ["transformers", "weight-read bound"], dtype
    # The long generation beside transformers too, in every storage: the target holds at both lengths.
    long_rows = [row for row in rows if row.measure.startswith("greedy B=1, 4 new")]
    assert [row.measure for row in long_rows] == [
        "greedy B=1, 4 new",
        "greedy B=1, 4 new, bf16 weights",
        "greedy B=1, 4 new, int8 weights",
    ]
    assert all(row.peer == "transformers" and row.target is not None for row in long_rows)
    assert all(math.isfinite(row.ours) and row.ours > 0 and row.theirs > 0 for row in rows)


def test_quick_run_writes_one_markdown_table_with_every_column(tmp_path):
    out = tmp_path / "bench.md"
    main(["--quick", "--only", "gpt-cpu", "--threads", "1", "--no-memory", "--out", str(out)])
    table = [line for line in out.read_text().splitlines() if line.startswith("|")]
    assert [cell.strip() for cell in table[0].strip("|").split("|")] == list(COLUMNS)
    peers = {line.split("|")[5].strip() for line in table[2:]}
    assert {"transformers", "x-transformers", "minimal", "torch.mm fp32", "anyformer fp32"} <= peers  # + bf16-mixed
    assert all(line.count("|") == len(COLUMNS) + 1 for line in table)


def test_only_rejects_an_unknown_shape_by_name(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--only", "gpt-cpu,gpt-huge"])
    assert "gpt-huge" in capsys.readouterr().err


def test_runtime_rejects_an_unknown_device():
    with pytest.raises(ValueError, match=r"Runtime\.device must be 'cpu' or 'cuda', got 'tpu'"):
        Runtime(device="tpu")


def test_default_shapes_leave_the_gpu_sized_gpt_out_on_the_cpu_only():
    cpu, cuda = parse_args([]).only, parse_args(["--device", "cuda"]).only
    assert "gpt2-124m" in cuda and "gpt2-124m" not in cpu
    assert set(cuda) - set(cpu) == {"gpt2-124m"}
    assert parse_args(["--only", "gpt2-124m"]).only == ["gpt2-124m"]  # still there when asked for by name
