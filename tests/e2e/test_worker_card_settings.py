"""A worker's `--custom-jinja-template` and `--dyn-default-thinking-mode`, end to end: the worker
puts them in its model card, and the frontend renders every chat prompt with that template, with
thinking set as the deployment's default unless the request controls it. The mocker replays an
answer chosen by what the rendered prompt holds, so the answers show which template rendered it
and how thinking was set."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.procs import Cluster

pytestmark = pytest.mark.e2e

MODEL = "templated"
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if enable_thinking is defined and not enable_thinking %}CUSTOM-NO-THINK{% else %}CUSTOM-THINK"
            "{% endif %}<|im_start|>assistant\n")
ANSWERS = {"CUSTOM-NO-THINK": "Rendered by the custom template, thinking off.",
           "CUSTOM-THINK": "Rendered by the custom template, thinking on."}


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("card-settings")
    (tmp / "custom.jinja").write_text(TEMPLATE)
    (tmp / "replay.json").write_text(json.dumps(ANSWERS))
    c = Cluster(tmp, tiny_model)
    try:
        c.mocker("--replay-file", str(tmp / "replay.json"), "--custom-jinja-template", "$TEMPLATES/custom.jinja",
                 "--dyn-default-thinking-mode", "disabled", model_name=MODEL, system_port=False,
                 env={"TEMPLATES": str(tmp)})
        c.frontend()
        c.wait_workers(MODEL, 1, timeout=120)
        yield c
    finally:
        c.stop()


def _answer(cluster, **extra) -> str:
    resp = cluster.openai_client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Which template?"}], max_tokens=40, **extra)
    return resp.choices[0].message.content


def test_the_custom_template_renders_with_the_deployments_thinking_default(cluster):
    assert _answer(cluster) == ANSWERS["CUSTOM-NO-THINK"]


def test_the_requests_own_thinking_control_wins_over_the_default(cluster):
    assert _answer(cluster, extra_body={"chat_template_kwargs": {"enable_thinking": True}}) == ANSWERS["CUSTOM-THINK"]
    assert _answer(cluster, reasoning_effort="high") == ANSWERS["CUSTOM-THINK"]
    assert _answer(cluster, reasoning_effort="none") == ANSWERS["CUSTOM-NO-THINK"]

