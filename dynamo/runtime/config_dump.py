"""Start-up config dumps (NVIDIA Dynamo's `--dump-config-to` / `DYN_DUMP_CONFIG_TO`): the
boundary between what a component parsed and the JSON file an operator, a support bundle or
a test reads to see what a process actually ran with.

A component config inherits `DumpConfigTo` (one field, so the flag, its env twin and its
`--help` line come from the same generated CLI as every other setting) and its entry point
calls `write_config_dump(config, component)` once, after parsing and before serving. The
file holds a small header (component, dynamo version, argv, pid), the component's effective
config (every field, after flag > env > default), the process's `RuntimeSettings`, and any
engine sections the caller adds (vLLM's or SGLang's own arguments). Fields declared
`setting(..., secret=True)` and the names a caller passes in `redact` are written as
`<redacted>`.

A path that names a directory (one that exists, or any path ending in `/`) gets one file per
process, `<component>-<pid>.json`: `deploy run` or a shell that sets DYN_DUMP_CONFIG_TO once for
a frontend and its workers on one machine must not have each process overwrite the last one's.

A path that cannot be written ends start-up with a message naming it (SystemExit), never a
traceback: the dump was asked for, so serving without it would hide the mistake.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping

from dynamo.runtime.config import REDACTED, config_values, redact_url_passwords, setting
from dynamo.runtime.settings import RuntimeSettings


@dataclass
class DumpConfigTo:
    """Mixin for a component config: adds `--dump-config-to` / DYN_DUMP_CONFIG_TO."""

    dump_config_to: str | None = setting(
        None, "At start-up, write this process's effective config (its settings after flag > env > default, "
              "the runtime settings, version and argv) as JSON to this file; a directory (existing, or a "
              "path ending in /) gets <component>-<pid>.json, one per process", metavar="PATH")


def dynamo_version() -> str | None:
    try:
        from dynamo import __version__
    except ImportError:
        return None
    return __version__


def config_record(config: Any, component: str, *, sections: Mapping[str, Any] | None = None,
                  redact: Collection[str] = (), argv: list[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The dump's content as a JSON-ready dict (header, config, runtime settings, sections)."""
    record: dict[str, Any] = {
        "component": component,
        "dynamo_version": dynamo_version(),
        "argv": list(sys.argv if argv is None else argv),
        "pid": os.getpid(),
        "config_type": type(config).__name__,
        "config": config_values(config),
        "runtime_settings": config_values(RuntimeSettings.from_env(environ)),
    }
    for name, value in (sections or {}).items():
        record[name] = _section(value, redact)
    # One JSON round trip turns whatever the engines hold (enums, paths, objects) into text now,
    # so the write below cannot fail half way on a value json does not know.
    return json.loads(json.dumps(record, default=str))


def _section(value: Any, redact: Collection[str]) -> Any:
    """An engine's own arguments (a dataclass, namespace or plain dict, not ours: no `secret`
    marks), with the fields named in `redact` hidden when set and passwords in URLs hidden
    wherever they appear."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        values = config_values(value)
    elif isinstance(value, Mapping):
        values = dict(value)
    elif hasattr(value, "__dict__"):
        values = dict(vars(value))
    else:
        return _without_url_passwords(value)
    return {k: REDACTED if k in redact and v not in (None, "", False) else _without_url_passwords(v)
            for k, v in values.items()}


def _without_url_passwords(value: Any) -> Any:
    """`value` with `redact_url_passwords` applied to every string inside lists and dicts."""
    if isinstance(value, str):
        return redact_url_passwords(value) if "@" in value else value
    if isinstance(value, Mapping):
        return {k: _without_url_passwords(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_url_passwords(v) for v in value]
    return value


def write_config_dump(config: Any, component: str, *, sections: Mapping[str, Any] | None = None,
                      redact: Collection[str] = (), path: str | None = None) -> Path | None:
    """Write the dump to `path` (default: the config's `dump_config_to`); None when neither is
    set. Raises SystemExit naming the path when it cannot be written."""
    given = path or getattr(config, "dump_config_to", None)
    if not given:
        return None
    target = dump_file(given, component)
    # Not sorted: the header reads first, then each config in its declaration order (grouped).
    text = json.dumps(config_record(config, component, sections=sections, redact=redact), indent=2) + "\n"
    try:
        return _write_atomically(Path(target), text)
    except OSError as exc:
        raise SystemExit(f"--dump-config-to {target}: cannot write the config dump "
                         f"({_what_failed(Path(target), exc)})") from None


def dump_file(given: str, component: str, pid: int | None = None) -> str:
    """The file a dump asked for at `given` goes to: `given` itself, or `<component>-<pid>.json`
    inside it when it names a directory."""
    if given.endswith(("/", os.sep)) or os.path.isdir(given):
        name = f"{component.replace('/', '_')}-{os.getpid() if pid is None else pid}.json"
        return os.path.join(given, name)
    return given


def _what_failed(path: Path, exc: OSError) -> str:
    """`exc` in words, naming the path the OS refused when that is not `path` itself (a parent
    that is a file, the directory our temporary file could not be created in)."""
    where = Path(exc.filename2 or exc.filename or path)  # filename2: os.replace's destination
    if where.name.startswith(f".{path.name}."):  # our temporary file: the directory is at fault
        where = path.parent
    return f"{exc.strerror or exc}: {where}" if where != path else str(exc.strerror or exc)


def _write_atomically(path: Path, text: str) -> Path:
    # Renamed into place: a reader polling for the file never sees half of it.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the dump from a sidecar or another user
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
