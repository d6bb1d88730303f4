"""`python -m dynamo.deploy {validate,run,render,scale,apply}`: one DGD manifest, checked, run on
this machine as supervised processes, or rendered to plain Kubernetes objects."""

from __future__ import annotations

import argparse
import sys


def _number(kind: type, least: float, strict: bool):
    """An argparse type: a `kind` number above `least` (strict) or at least `least`; anything else is a usage
    error (exit 2) rather than a value quietly replaced by a default."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value != value or value < least or (strict and value == least):  # NaN too
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {least:g}, got {text}")
        return value
    return parse


POSITIVE, NON_NEGATIVE, COUNT = _number(float, 0, True), _number(float, 0, False), _number(int, 0, False)


def port_number(text: str) -> int:
    """A TCP port, 0 (pick a free one) to 65535; anything else is a usage error naming the flag (exit 2)."""
    value = COUNT(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dynamo.deploy", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    v = sub.add_parser("validate", help="check DGD manifests against the schema and our CLIs")
    v.add_argument("files", nargs="+")
    v.add_argument("--strict", action="store_true", help="treat warnings as errors")
    v.add_argument("-q", "--quiet", action="store_true", help="print findings only")

    r = sub.add_parser("run", help="run a DGD on this machine without Kubernetes")
    r.add_argument("file")
    r.add_argument("--frontend-port", type=port_number, default=8000, help="HTTP port of the (first) frontend")
    r.add_argument("--model", default=None, help="local model dir replacing every worker's model")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="SVC.replicas=N",
                   help="override a service's replicas (repeatable)")
    r.add_argument("--append-args", action="append", default=[], metavar="SVC=ARGS",
                   help="append flags to a service's dynamo command (e.g. CPU-only engine flags; repeatable)")
    r.add_argument("--volume", dest="volumes", action="append", default=[], metavar="PVC=DIR",
                   help="serve PVC's mount point from a local directory (repeatable)")
    r.add_argument("--namespace", default=None, help="Kubernetes namespace to emulate (default: manifest's)")
    r.add_argument("--control-port", type=port_number, default=0,
                   help="port of the control endpoint (GET /status, POST /scale); 0 picks a free one")
    r.add_argument("--prometheus-endpoint", default=None, metavar="URL",
                   help="Prometheus that scrapes this graph, handed to planner components as PROMETHEUS_ENDPOINT "
                        "(default: $PROMETHEUS_ENDPOINT; none: a planner's sla target runs on forward-pass metrics)")
    r.add_argument("--hpa-sync-period", type=float, default=15.0, metavar="SECS",
                   help="how often the file's HorizontalPodAutoscalers are evaluated (Kubernetes' "
                        "--horizontal-pod-autoscaler-sync-period; a KEDA ScaledObject polls at its pollingInterval)")
    r.add_argument("--log-dir", default=None, help="also write each replica's output to DIR/<replica>.log")
    r.add_argument("--log-max-mb", type=NON_NEGATIVE, default=100.0, metavar="MB",
                   help="rotate a replica's --log-dir file once it passes MB (to .1, older ones shifted up; 0: never)")
    r.add_argument("--log-backups", type=COUNT, default=3, metavar="N",
                   help="rotated files kept per replica (.1 .. .N; the oldest beyond N is deleted)")
    r.add_argument("--engine", choices=["mocker"], default=None,
                   help="run the graph's vLLM / SGLang / TRT-LLM workers on the mocker (same model and served name; "
                        "engine-only flags left out, with a warning): a GPU manifest on a machine without the engine")
    r.add_argument("--grace", type=NON_NEGATIVE, default=15.0,
                   help="seconds between SIGTERM and SIGKILL when the whole run stops (a scaled-down or unhealthy "
                        "replica gets its pod's terminationGracePeriodSeconds, 60 unless the manifest sets it)")
    r.add_argument("--no-status", action="store_true", help="do not print the status table")
    r.add_argument("--progress-deadline", type=POSITIVE, default=600.0, metavar="SECS",
                   help="an apply's rollout that makes no progress this long stalls, the old replicas serving "
                        "(the Deployment's progressDeadlineSeconds)")

    k = sub.add_parser("render", help="print plain Kubernetes objects (Deployments, Services, ConfigMaps)")
    k.add_argument("file")
    k.add_argument("--namespace", default=None, help="Kubernetes namespace (default: manifest's, else default)")
    k.add_argument("--etcd-endpoints", default="http://etcd:2379", help="discovery for the rendered graph")
    k.add_argument("--include-etcd", action="store_true", help="also render a single-node etcd")
    k.add_argument("--discovery", choices=["etcd", "kubernetes"], default=None,
                   help="etcd, or kubernetes (DynamoWorkerMetadata + EndpointSlices, no etcd); default: the DGD's "
                        "nvidia.com/dynamo-discovery-backend annotation, else etcd")
    k.add_argument("--include-crd", action="store_true",
                   help="with kubernetes discovery, also render the DynamoWorkerMetadata CRD (cluster-scoped)")
    k.add_argument("--pod-monitors", action="store_true",
                   help="also render prometheus-operator PodMonitors (monitoring.coreos.com/v1) for the frontends, "
                        "workers and planner, as Dynamo's operator creates them; off by default: a cluster without "
                        "the prometheus-operator CRDs rejects them (and `kubectl apply` of the file fails)")
    k.add_argument("--pull-secret", dest="pull_secrets", action="append", default=[], metavar="NAME=REGISTRY",
                   help="a docker-config Secret in the namespace, for image-pull-secret discovery (repeatable)")
    k.add_argument("--pull-secrets-from", action="append", default=[], metavar="FILE",
                   help="Secret objects (e.g. `kubectl get secrets -o yaml`) to discover image pull secrets from")

    s = sub.add_parser("scale", help="change a service's replicas in a running `run`")
    s.add_argument("control", help="control URL printed by `run` (http://127.0.0.1:PORT)")
    s.add_argument("assignments", nargs="*", metavar="SERVICE=REPLICAS",
                   help="replicas per service; several are applied one after another (one request each); "
                        "none prints the status")
    a = sub.add_parser("apply", help="roll a changed manifest out to a running `run` (as kubectl apply of a DGD)")
    a.add_argument("control", help="control URL printed by `run` (http://127.0.0.1:PORT)")
    a.add_argument("file", help="the manifest, in the format `run` takes (its --set / --append-args apply again)")
    a.add_argument("--no-wait", action="store_true", help="return once the change is accepted")
    a.add_argument("--timeout", type=float, default=900.0, metavar="SECS",
                   help="how long to wait for every rollout to complete (exit 1 after it)")
    a.add_argument("--progress-deadline", type=POSITIVE, default=None, metavar="SECS",
                   help="a rollout making no progress this long stalls (default: run's --progress-deadline, 600)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd in ("run", "render"):
        from dynamo.profiler.pipeline import deploy_main, is_request

        if is_request(args.file):  # a DGDR: profile it into a DGD first
            return deploy_main(args.cmd, args)
    if args.cmd == "validate":
        from dynamo.deploy.validate import main as validate_main

        return validate_main(args.files, strict=args.strict, quiet=args.quiet)
    if args.cmd == "run":
        from dynamo.deploy.run import main as run_main

        return run_main(args)
    if args.cmd == "render":
        from dynamo.deploy.render_file import main as render_main

        return render_main(args)
    if args.cmd == "apply":
        from dynamo.deploy.control import apply_main

        return apply_main(args.control, args.file, not args.no_wait, args.timeout, args.progress_deadline)
    from dynamo.deploy.control import scale_main

    return scale_main(args.control, args.assignments)


if __name__ == "__main__":
    sys.exit(main())
