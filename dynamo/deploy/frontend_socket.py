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
from dynamo.runtime.listen_fds import ENV as LISTEN_ENV

if TYPE_CHECKING:
    from dynamo.deploy.plan import ServicePlan
    from dynamo.frontend.config import FrontendConfig

__all__ = ["LISTEN_ENV", "FrontendAddress", "FrontendSocket", "frontend_args", "frontend_config", "inherits_socket",
           "planned_address", "runs_frontend_itself", "shared_address", "socket_of"]
# LISTEN_ENV, the socket-activation variables (`runtime/listen_fds.py`): `run`'s own, if it was started with
# some, are not its replicas' (`listen_exec.py` sets a replica's).


@dataclass(frozen=True)
class FrontendAddress:
    host: str
    port: int


@dataclass(frozen=True)
class FrontendSocket:
    """How a frontend service's replicas listen: `listen`, the address of the socket `run` binds and hands every
    replica (None: each binds its own port); `kserve_port`, a KServe frontend's HTTP-routes port (None: not
    KServe), as the manifest, `--append-args` or this shell's env make it."""

    listen: FrontendAddress | None
    kserve_port: int | None

    @property
    def handoff(self) -> bool:
        return self.listen is not None


def socket_of(line: CommandLine, kserve_port: int | None, args: Sequence[str],
              env: Mapping[str, str]) -> FrontendSocket:
    """A frontend service's socket, decided from its command `line` (the manifest's KServe HTTP-routes port
    `kserve_port`) and its own `args` and `env` as each replica gets them (less per-replica values): only
    `python -m dynamo.frontend` run directly takes a socket (the pid `run` starts is the frontend's, as
    LISTEN_PID says), and only for HTTP (KServe's gRPC server binds its own port, so it is recreated on a
    change). A command line that does not parse keeps the manifest's view (the frontend says what is wrong)."""
    if not runs_frontend_itself(line):
        return FrontendSocket(None, kserve_port)
    config = frontend_config(args, env)
    if config is None:
        return FrontendSocket(None, kserve_port)
    if config.kserve_grpc_server:  # KServe by the manifest, --append-args or this shell's env
        return FrontendSocket(None, kserve_port if kserve_port is not None else config.grpc_metrics_port)
    return FrontendSocket(FrontendAddress(config.http_host, config.http_port), None)


def shared_address(handoff: bool, argv: Sequence[str], env: Mapping[str, str]) -> FrontendAddress | None:
    """The address of the socket `run` hands a replica started with exactly `argv` and `env`: the one the
    frontend would listen on itself; None: it binds its own."""
    args = frontend_args(argv) if handoff else None
    return inherits_socket(args, env) if args is not None else None


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
