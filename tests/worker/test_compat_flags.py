"""The engine workers' command lines take every flag of NVIDIA Dynamo 1.6.1's (the lists below, as
its own parsers print them from the anchor install: the runtime group every worker shares, the
router group a worker set advertises, and each engine's group), so a manifest written for Dynamo's
image never crash-loops on an unknown flag. Each one takes effect, is accepted with a warning that
says why it has no effect, or is refused (exit 2) with the reason; `dynamo.deploy validate` tells the
same apart before anything runs."""

from __future__ import annotations

import pytest

from dynamo.deploy.parsers import check_args
from dynamo.sglang.args import parse_split as sglang_split
from dynamo.trtllm.args import parse_worker_args as trtllm_parse
from dynamo.vllm.args import parse_split as vllm_split

RUNTIME = """--namespace --endpoint --kv-state-endpoint --discovery-backend --request-plane --response-plane
--event-plane --fpm-trace --connector --dyn-tool-call-parser --dyn-reasoning-parser --dyn-default-thinking-mode
--exclude-tools-when-tool-choice-none --dyn-enable-structural-tag --dyn-structural-tag-scope
--dyn-structural-tag-schema --dyn-structural-tag --custom-jinja-template --endpoint-types --dyn-endpoint-types
--dump-config-to --multimodal-embedding-cache-capacity-gb --multimodal-embedding-cache-publisher
--output-modalities --media-output-fs-url --media-output-http-url --health-check-payload --engine-request-limit
--tcp-tls-cert-path --tcp-tls-key-path --tcp-tls-ca-cert-path --tcp-tls-insecure --tcp-tls-server-name
--tcp-tls-handshake-timeout --tcp-tls-client-cert-path --tcp-tls-client-key-path --tcp-tls-client-ca-cert-path
--nats-tls-ca-cert-path --nats-tls-insecure --nats-tls-client-cert-path --nats-tls-client-key-path
--frontend-decoding"""
ROUTER = """--router-mode --router-session-affinity-ttl-secs --router-session-affinity-mode
--active-decode-blocks-threshold --active-prefill-tokens-threshold --active-prefill-tokens-threshold-frac
--load-aware --router-kv-overlap-score-credit --router-kv-overlap-score-credit-decay
--router-kv-overlap-score-weight --kv-overlap-score-weight --router-prefill-load-scale
--router-decode-active-request-weight --router-host-cache-hit-weight --router-disk-cache-hit-weight
--router-temperature --router-kv-events --kv-events --router-replica-sync --router-track-active-blocks
--track-active-blocks --router-track-output-blocks --track-output-blocks --router-assume-kv-reuse
--assume-kv-reuse --router-track-prefill-tokens --router-tracking-hash --router-tracking-key-file
--router-tracking-key-id --router-prefill-load-model --router-ttl-secs --router-approximate-cache-policy
--router-queue-threshold --router-policy-config --router-conditional-disagg --router-conditional-disagg-config
--router-prefill-policy --router-decode-policy --router-event-threads --router-queue-policy --use-remote-indexer
--enable-session-prefix-index --shared-cache-multiplier --shared-cache-type --router-predicted-ttl-secs"""
ENGINE = {
    "vllm": """--benchmark-collect-imbalanced --benchmark-decode-batch-granularity
--benchmark-decode-length-granularity --benchmark-hybrid-live-state --benchmark-max-batch-size --benchmark-mode
--benchmark-output-path --benchmark-points-file --benchmark-prefill-batch-granularity
--benchmark-prefill-granularity --benchmark-prefill-kv-read-granularity --benchmark-randomize-kda-state
--benchmark-timeout --benchmark-warmup-iterations --classify-worker --custom-encoder-class
--decode-max-batch-size-samples --decode-max-kv-read-token-samples --disaggregation-mode
--embedding-frontend-tokenization --embedding-transfer-mode --embedding-worker --embedding-worker-processes
--enable-multimodal --enable-rl --gms-shadow-mode --headless --mm-prompt-template --model-express-url
--prefill-max-kv-read-token-samples --prefill-max-new-token-samples --prefix-max-batch-size-samples --realtime
--route-to-encoder --use-vllm-tokenizer""",
    "sglang": """--dedicated-mm-encoder --disagg-config --disagg-config-key --embedding-transfer-mode
--embedding-worker --enable-multimodal --enable-rl --engine-route --gateway-workers --image-diffusion-worker
--rerank-worker --sglang-trace-level --use-sglang-tokenizer --video-generation-worker""",
    "trtllm": """--allowed-local-media-path --attn-backend --conversation-affinity
--conversation-affinity-dp-rank-source --default-guidance-scale --default-height --default-num-frames
--default-num-images-per-prompt --default-num-inference-steps --default-width --disable-torch-compile
--disaggregation-mode --dit-cfg-size --dit-ring-size --dit-ulysses-size --enable-attention-dp --enable-cuda-graph
--enable-fullgraph --enable-layerwise-nvtx-marker --enable-multimodal --enable-teacache --encode-endpoint
--expert-parallel-size --extra-engine-args --free-gpu-memory-fraction --gpus-per-node --guided-decoding-backend
--kv-block-size --load-format --max-batch-size --max-beam-width --max-file-size-mb --max-num-tokens --max-seq-len
--modality --model --model-loader-extra-config --model-path --override-engine-args --pipeline-parallel-size
--publish-kv-events --publish-metrics --quant-algo --quant-dynamic --revision --served-model-name --skip-warmup
--teacache-thresh --teacache-use-ret-steps --tensor-parallel-size --torch-dtype""",
}
MODULES = {"vllm": "dynamo.vllm", "sglang": "dynamo.sglang", "trtllm": "dynamo.trtllm"}


def _parser(engine: str):
    from dynamo.deploy.parsers import _compat_flags, load_parser

    parser = load_parser(MODULES[engine])
    _compat_flags(MODULES[engine]).add_to(parser)
    return parser


@pytest.mark.parametrize("engine", sorted(ENGINE))
def test_every_flag_of_dynamos_worker_is_known(engine):
    known = set(_parser(engine)._option_string_actions)
    dynamo = {*RUNTIME.split(), *ROUTER.split(), *ENGINE[engine].split()}
    assert sorted(dynamo - known) == []


def test_flags_without_effect_are_accepted_with_their_reason():
    config, _, warnings = vllm_split(["--model", "m", "--request-plane", "tcp", "--use-vllm-tokenizer",
                                      "--router-mode", "kv", "--no-fpm-trace"], use_vllm=False)
    assert config.namespace == "dynamo"
    text = "\n".join(warnings)
    assert "--request-plane is accepted for compatibility with NVIDIA Dynamo and has no effect: requests" in text
    assert "--use-vllm-tokenizer" in text and "--router-mode" in text and "frontend" in text
    assert "fpm-trace" not in text  # turning off what is not done here anyway says nothing


def test_router_policy_config_stays_ignored_by_the_worker():
    """The frontend and `python -m dynamo.router` read it; a worker only accepts it, with a warning."""
    _, _, warnings = vllm_split(["--model", "m", "--router-policy-config", "/etc/policy.yaml"], use_vllm=False)
    assert any(w.startswith("--router-policy-config is accepted") and "has no effect" in w for w in warnings)


@pytest.mark.parametrize("argv, reason", [
    (["--headless"], "multi-node"),
    (["--connector", "nixl"], "--kv-transfer-config"),
    (["--route-to-encoder"], "multimodal input is not served"),
    (["--multimodal-encode-worker"], "multimodal input is not served"),
    (["--benchmark-mode", "prefill"], "self-benchmark"),
])
def test_flags_that_would_serve_something_else_are_refused_with_the_reason(argv, reason, capsys):
    with pytest.raises(SystemExit) as exc:
        vllm_split(["--model", "m", *argv], use_vllm=False)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err and reason in err


def test_a_model_that_also_reads_images_is_served_as_text(capsys):
    """NVIDIA's recipes for Qwen3.5 and Kimi K2.6/K3 pass --enable-multimodal for the vision path: aggregated
    vLLM and SGLang workers read images then; a disaggregated SGLang worker and TRT-LLM workers start, serving
    text, and say that media parts are refused."""
    config, _, warnings = vllm_split(["--model", "m", "--enable-multimodal"], use_vllm=False)
    assert config.enable_multimodal and not any("--enable-multimodal" in w for w in warnings)
    # SGLang's own flag: the engine gets it; aggregated, the worker reads images; disaggregated, it says it does not
    assert not any("--enable-multimodal" in w
                   for w in sglang_split(["--model-path", "m", "--enable-multimodal"], use_sglang=False)[2])
    assert any("--enable-multimodal" in w and "400" in w for w in sglang_split(
        ["--model-path", "m", "--enable-multimodal", "--disaggregation-mode", "decode"], use_sglang=False)[2])
    assert any("--enable-multimodal" in w for w in trtllm_parse(["--model", "/m", "--enable-multimodal"])[1])


def test_sglang_workers_take_the_card_settings(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    config, _, warnings, _ = sglang_split(
        ["--model-path", "m", "--dyn-reasoning-parser", "qwen3", "--dyn-tool-call-parser", "hermes",
         "--custom-jinja-template", str(template), "--dyn-default-thinking-mode", "disabled",
         "--dyn-endpoint-types", "chat", "--use-sglang-tokenizer"], use_sglang=False)
    assert (config.reasoning_parser, config.tool_call_parser) == ("qwen3", "hermes")
    assert config.custom_jinja_template == str(template) and config.default_thinking_mode == "disabled"
    assert config.model_types == ["chat"] and any("--use-sglang-tokenizer" in w for w in warnings)
    with pytest.raises(SystemExit):
        sglang_split(["--model-path", "m", "--rerank-worker"], use_sglang=False)


@pytest.mark.parametrize("argv", [["--custom-jinja-template", "/no/such/template.jinja"],
                                  ["--custom-jinja-template", "BROKEN"], ["--dyn-reasoning-parser", "nope"],
                                  ["--dyn-default-thinking-mode", "sometimes"]])
def test_bad_card_settings_stop_the_worker_at_start(argv, tmp_path, capsys):
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}")  # never closed
    argv = [str(broken) if a == "BROKEN" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        trtllm_parse(["--model", "/m", *argv])
    assert exc.value.code == 2 and argv[0] in capsys.readouterr().err


def test_trtllm_flags_that_take_effect_reach_the_engine_and_diffusion_knobs_are_noted():
    config, warnings = trtllm_parse(["--model", "/m", "--gpus-per-node", "4", "--revision", "v1", "--load-format",
                                     "dummy", "--publish-metrics", "--skip-warmup", "--torch-dtype", "float16"])
    kwargs = config.engine_kwargs()
    assert (kwargs["gpus_per_node"], kwargs["revision"], kwargs["load_format"]) == (4, "v1", "dummy")
    assert kwargs["enable_iter_perf_stats"] and "event_buffer_max_size" not in kwargs["kv_cache_config"]
    assert [w.split()[0] for w in warnings] == ["--skip-warmup", "--torch-dtype"]


def test_manifest_validation_tells_accepted_from_refused():
    ok = check_args("dynamo.vllm", ["--model", "m", "--request-plane", "tcp", "--dyn-reasoning-parser", "qwen3"])
    assert ok.errors == [] and len(ok.warnings) == 1 and "--request-plane" in ok.warnings[0]
    bad = check_args("dynamo.vllm", ["--model", "m", "--headless"])
    assert len(bad.errors) == 1 and "multi-node" in bad.errors[0]
    # vLLM's own parser takes `--flag_name` for `--flag-name` (Dynamo's recipes use both); so does the check
    assert check_args("dynamo.vllm", ["--model", "m", "--compilation_config", "{}", "--max_model_len=4096"]).errors == []
    frontend = check_args("dynamo.frontend", ["--router-mode", "kv", "--router-event-threads", "4"])
    assert frontend.errors == [] and "--router-event-threads" in frontend.warnings[0]


def test_request_plane_tls_flags_set_their_variables_on_every_worker(isolated_environ):
    import os

    for name in ("DYN_TCP_TLS_CA_CERT_PATH", "DYN_TCP_TLS_INSECURE", "DYN_TCP_TLS_SERVER_NAME"):
        isolated_environ.pop(name, None)
    _, warnings = trtllm_parse(["--model", "/m", "--tcp-tls-ca-cert-path", "/etc/dynamo/ca.pem", "--tcp-tls-insecure"])
    assert warnings == []
    assert os.environ["DYN_TCP_TLS_CA_CERT_PATH"] == "/etc/dynamo/ca.pem" and os.environ["DYN_TCP_TLS_INSECURE"] == "true"
    vllm_split(["--model", "m", "--tcp-tls-server-name", "worker.svc"], use_vllm=False)
    assert os.environ["DYN_TCP_TLS_SERVER_NAME"] == "worker.svc"
    checked = check_args("dynamo.sglang", ["--model-path", "m", "--tcp-tls-cert-path", "/c.pem", "--tcp-tls-key-path",
                                           "/k.pem", "--tcp-tls-client-ca-cert-path", "/ca.pem"])
    assert checked.errors == [] and checked.warnings == []
