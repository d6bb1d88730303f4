"""A `python -m dynamo.trtllm` value argparse cannot convert names the type it wanted, not `<lambda>`."""

from __future__ import annotations

import pytest

from dynamo.trtllm.args import parse_worker_args


@pytest.mark.parametrize("flag,kind", [("--kv-block-size", "int"), ("--free-gpu-memory-fraction", "float")])
def test_a_value_that_is_not_a_number_names_the_type(capsys, flag, kind):
    with pytest.raises(SystemExit) as exc:
        parse_worker_args([flag, "abc"])
    assert exc.value.code == 2
    assert f"argument {flag}: invalid {kind} value: 'abc'" in capsys.readouterr().err
