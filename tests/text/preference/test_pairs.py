"""The pairs file: written and read back unchanged; a malformed line is named with what was expected."""

import json

import pytest

from anyformer.text.preference.pairs import PairsFormatError, PreferencePair, read_pairs, write_pairs


def test_pairs_round_trip_through_the_jsonl_file(tmp_path):
    pairs = [
        PreferencePair("the movie", " is a delight .\n", " is a mess .\n", 0.97, 0.03),
        PreferencePair('ça "quote"', " é\t✓", "", None, None),  # unicode, escapes, an empty continuation, no scores
    ]
    path = tmp_path / "pairs.jsonl"
    assert write_pairs(path, pairs) == 2
    assert read_pairs(path) == pairs
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {
        "prompt": "the movie",
        "chosen": " is a delight .\n",
        "rejected": " is a mess .\n",
        "scores": {"chosen": 0.97, "rejected": 0.03},
    }
    assert json.loads(lines[1])["scores"] is None


def test_a_file_of_ones_own_without_scores_and_with_blank_lines_reads(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        '{"prompt": "a", "chosen": " b", "rejected": " c"}\n\n'
        '{"prompt": "d", "chosen": "e", "rejected": "f", "scores": null}\n'
    )
    assert read_pairs(path) == [PreferencePair("a", " b", " c"), PreferencePair("d", "e", "f")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", r"mine.jsonl:2: not JSON \(Expecting value at column 1\)"),
        ('["a", "b"]', r"mine.jsonl:2: found a JSON list"),
        ('{"prompt": "a", "chosen": "b"}', r"mine.jsonl:2: 'rejected' is missing"),
        ('{"prompt": 1, "chosen": "b", "rejected": "c"}', r"mine.jsonl:2: 'prompt' is a int"),
        ('{"prompt": "a", "chosen": "b", "rejected": "c", "score": 1}', r"mine.jsonl:2: unknown key\(s\) \['score'\]"),
        ('{"prompt": "a", "chosen": "b", "rejected": "c", "scores": [1, 2]}', r"mine.jsonl:2: 'scores' is \[1, 2\]"),
        ('{"prompt": "a", "chosen": "b", "rejected": "c", "scores": {"chosen": 1}}', r"mine.jsonl:2: 'scores'"),
    ],
)
def test_a_malformed_line_is_named_with_the_expected_format(tmp_path, line, message):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n' + line + "\n")
    with pytest.raises(PairsFormatError, match=message) as info:
        read_pairs(path)
    assert "expected one JSON object per line" in str(info.value)


def test_a_missing_or_empty_file_is_an_error(tmp_path):
    with pytest.raises(PairsFormatError, match="does not exist"):
        read_pairs(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(PairsFormatError, match="holds no pair"):
        read_pairs(tmp_path / "empty.jsonl")
