"""Which code a run exercises (anyformer.experiments.report_git.code_paths), on this repository."""

from pathlib import Path

from anyformer.experiments.report_git import CORE, code_paths

REPO = Path(__file__).resolve().parents[2]


def test_a_task_exercises_core_and_the_domain_modules_it_imports_and_no_other_task():
    gpt = code_paths("gpt", root=REPO)
    assert gpt[0] == CORE and {"text/gpt/gpt_task.py", "text/gpt/gpt.py", "text/gpt/data.py"} <= set(gpt)
    assert "text/tokenizer.py" in gpt and "text/__init__.py" in gpt  # through imports, and the package's init
    assert not any(path.startswith(("text/seq2seq/", "vision/", "rl/", "anyformer/")) for path in gpt)
    seq2seq = code_paths("seq2seq", root=REPO)
    assert "text/seq2seq/seq2seq_task.py" in seq2seq and "text/gpt/gpt_task.py" not in seq2seq
    assert set(code_paths("gru-seq2seq", root=REPO)) > set(seq2seq)  # the GRU reuses the seq2seq data and metrics
    assert all((REPO / path).is_file() for path in gpt[1:])


def test_an_evaluation_exercises_its_tool_and_the_task_it_reads():
    rollout = code_paths("rollout", root=REPO)
    assert "rl/rollout.py" in rollout
    both = code_paths("rollout", "dt", root=REPO)
    assert set(both) == set(rollout) | set(code_paths("dt", root=REPO)) and "rl/dt_task.py" in both
    assert code_paths("attention", root=REPO) == (CORE,)  # a core tool: its checkpoint's task adds the domain


def test_imports_inside_functions_count_and_typing_only_imports_do_not(tmp_path):
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "__init__.py").write_text("")
    (tmp_path / "text" / "lazy.py").write_text("")
    (tmp_path / "text" / "typing_only.py").write_text("")
    (tmp_path / "text" / "task.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from anyformer.text import typing_only\n"
        "def fit():\n    from . import lazy\n"
    )
    paths = code_paths("gpt", root=tmp_path)  # the registry's gpt modules are absent here: nothing of them
    assert paths == (CORE,)
    from anyformer.experiments import report_git

    found = report_git._domain_closure(tmp_path.resolve(), ("anyformer.text.task",))
    assert found == ("text/__init__.py", "text/lazy.py", "text/task.py")
