"""A manifest with a duplicate mapping key is refused, naming the key and its line, as the API server's
strict decoding refuses a duplicate field, by `validate` and by what `render`, `run` and `apply` read
(`load_documents`); YAML merge keys may still be overridden. An apply's errors name the user's file, not the
run's temporary copy of it."""

from __future__ import annotations

import pytest
import yaml

from dynamo.deploy import strict_yaml
from dynamo.deploy.run import manifest_graph
from dynamo.deploy.validate import load_documents, validate_file
from tests.fixtures.procs import REPO

DUPLICATE = (REPO / "examples/backends/mocker/deploy/agg.yaml").read_text()


def _with_second_worker(text: str) -> str:
    """The example with its worker service written twice (the second one another model)."""
    start = text.index("    MockerWorker:")
    block = text[start:].split("\n---")[0].rstrip("\n") + "\n"
    return text[:start] + block + block.replace("MockerWorker:", "MockerWorker:  # again", 1)


def test_a_service_written_twice_is_an_error_naming_it_and_its_line(tmp_path):
    text = _with_second_worker(DUPLICATE)
    second = next(i for i, line in enumerate(text.splitlines(), 1) if "# again" in line)
    first = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("    MockerWorker:"))
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    report = validate_file(path)
    assert not report.ok and len(report.errors) == 1
    assert f"duplicate key 'MockerWorker' (first on line {first})" in report.errors[0]
    assert f"line {second}, column 5" in report.errors[0]
    with pytest.raises(yaml.YAMLError, match="duplicate key 'MockerWorker'"):  # render's and run's reading
        load_documents(path)


def test_a_field_written_twice_is_an_error_and_merge_keys_are_not():
    with pytest.raises(yaml.YAMLError, match=r"duplicate key 'replicas' \(first on line 2\)"):
        strict_yaml.load_all("a:\n  replicas: 1\n  replicas: 3\n")
    merged = strict_yaml.load_all("base: &b {replicas: 1, image: x}\nsvc:\n  <<: *b\n  replicas: 2\n")
    assert merged == [{"base": {"replicas": 1, "image": "x"}, "svc": {"replicas": 2, "image": "x"}}]


def test_an_apply_of_a_duplicate_key_is_refused_naming_the_users_file(tmp_path):
    with pytest.raises(ValueError) as refused:
        manifest_graph(_with_second_worker(DUPLICATE), str(tmp_path), "mocker-agg", "m/agg_dup.yaml")
    assert "duplicate key 'MockerWorker'" in str(refused.value) and '"m/agg_dup.yaml"' in str(refused.value)
    assert "apply-" not in str(refused.value)


def test_an_apply_of_malformed_yaml_names_the_users_file(tmp_path):
    with pytest.raises(ValueError) as refused:
        manifest_graph(DUPLICATE.replace("  services:", "  services: [", 1), str(tmp_path), "mocker-agg",
                       "m/broken.yaml")
    assert '"m/broken.yaml", line' in str(refused.value) and "apply-" not in str(refused.value)
