"""Whether, and where, a frontend replica takes its service's listening socket from `run` (`listeners.py`),
read from what the replica is really started with: its final argv (the manifest's args, `--append-args`) and
its final environment (this shell, the operator's defaults, the manifest's env), parsed as the frontend parses
them (`FrontendConfig`: a flag beats its `DYN_*` env twin, which beats the default). The socket `run` binds is
then the one the frontend would have bound itself: same address, same port."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from dynamo.deploy.commands import CommandLine

if TYPE_CHECKING:
    from dynamo.deploy.plan import ServicePlan
    from dynamo.frontend.config import FrontendConfig

# The socket-activation variables (`runtime/listen_fds.py`): `run`'s own, if it was started with some, are not
# its replicas' (`listen_exec.py` sets a replica's).
LISTEN_ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


@dataclass(frozen=True)
class FrontendAddress:
    host: str
    port: int


def runs_frontend_itself(line: CommandLine) -> bool:
    """Whether the command is `python -m dynamo.frontend ...` itself (exec form), not a shell around it."""
    return (not line.shell and len(line.invocations) == 1 and line.invocations[0].module == "dynamo.frontend"
            and line.invocations[0].python_index == 0)


def frontend_args(argv: Sequence[str]) -> list[str] | None:
    """The frontend's own arguments in an exec-form `python -m dynamo.frontend ARGS` argv; None otherwise."""
    for i in range(len(argv) - 1):
        if argv[i] == "-m" and argv[i + 1] == "dynamo.frontend":
            return list(argv[i + 2:])
    return None


def frontend_config(args: Sequence[str], env: Mapping[str, str]) -> "FrontendConfig | None":
    """The config of the frontend started with `args` and `env`, as it parses them; None when its command line
    does not parse (the frontend says what is wrong with it)."""
    from dynamo.frontend.config import parse_frontend_args  # the frontend's own parse; loaded only for frontends

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage text: the frontend prints its own
            config, _ = parse_frontend_args(list(args), env)
    except (SystemExit, ValueError):
        return None
    return config


def inherits_socket(args: Sequence[str], env: Mapping[str, str]) -> FrontendAddress | None:
    """Where the frontend started with `args` and `env` listens, when it would serve HTTP on a socket `run`
    hands it; None when it binds its port itself (`--kserve-grpc-server`, from the manifest, `--append-args` or
    `DYN_KSERVE_GRPC_SERVER`: the gRPC server takes --http-port) or when its command line does not parse."""
    config = frontend_config(args, env)
    if config is None or config.kserve_grpc_server:
        return None
    return FrontendAddress(config.http_host, config.http_port)


def planned_address(plan: "ServicePlan") -> FrontendAddress | None:
    """The address `plan`'s replicas' shared socket takes (`ServicePlan.listen`, parsed from what `launch` gives
    each replica, less its per-replica values, with the service's port); None for a frontend that binds its own
    port, which can have no second copy beside the first. An apply that changes it recreates the frontend
    (`strategy_for`)."""
    address = plan.listen if plan.handoff else None
    return address and FrontendAddress(address.host, plan.http_port)
