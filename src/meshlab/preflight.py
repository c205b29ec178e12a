"""Preflight: refuse a broken lab file before anything starts, and say where it is broken.

Each file the learner edits is checked by what it is: YAML must parse (file, line,
column); an Envoy config must pass `envoy --mode validate`; Python must compile. Envoy's
own error is mapped back to the YAML path and line it is about, with a "did you mean"
for misspelled field names, found in Envoy's API descriptors (xds-protos).
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
from functools import lru_cache
from pathlib import Path

from meshlab import yamlfile
from meshlab.course import Lab
from meshlab.envoy import EnvoyBinary, find_binary, validate
from meshlab.errors import EnvoyConfigError, InputError, Location

# Envoy's errors contain a path like `static_resources.clusters[0].type`, or a chain of
# protoc-gen-validate errors, or quoted values; these patterns pull those apart.
_CRITICAL = re.compile(r"error initializing configuration '[^']*': (.*)", re.S)
_AT_PATH = re.compile(r"invalid JSON in (?P<root>[\w.]+) @ (?P<path>\S+): (?P<type>[^,]+), near [^:]+:\d+ \(offset \d+\): (?P<reason>.*)")
_AT_ROOT = re.compile(r"invalid JSON in (?P<root>[\w.]+), near [^:]+:\d+ \(offset \d+\): (?P<reason>.*)")
_PGV = re.compile(r"Proto constraint validation failed \((?P<chain>.*)\)")
_PGV_STEP = re.compile(r"(?P<message>\w+)ValidationError\.(?P<field>\w+)(?:\[(?P<index>[^\]]+)\])?")
_QUOTED = re.compile(r"'([^']+)'")
# Lua names a chunk loaded from a string after its first line: [string "-- Lab 05..."]:12:
_LUA_CHUNK = re.compile(r'\[string "(?P<head>(?:[^"\\]|\\.)*)"\]:(?P<line>\d+): (?P<reason>.*)')


# Set by `meshlab watch` for the checker it starts right after its own preflight passed:
# the digest of the files as they passed (see `digest`). Equal files need no second
# `envoy --mode validate`; a file saved in between changes the digest, and preflight runs.
PASSED_ENV = "MESHLAB_PREFLIGHT_PASSED"


def prepare_and_check(lab: Lab, lab_dir: Path, *, passed: str | None = None, run_envoy: bool = True) -> None:
    """Everything before a lab starts: its prepare steps, then the file checks; none of
    it when PASSED is the digest of the files as they are (they passed a moment ago).
    Without RUN_ENVOY, `envoy --mode validate` is left out (see `check_files`)."""
    from meshlab.runtime.local import run_prepare_steps

    if passed and passed == digest(lab, lab_dir):
        return
    run_prepare_steps(lab, lab_dir)
    check_files(lab, lab_dir, run_envoy=run_envoy)


def digest(lab: Lab, lab_dir: Path) -> str:
    """What preflight reads, by content: the learner's files, the Envoy configs and every
    service's inputs."""
    import hashlib

    names = sorted({*lab.edit, *(spec.target for spec in lab.envoys),
                    *(name for spec in lab.services for name in spec.inputs)})
    summary = hashlib.sha256()
    for name in names:
        path = Path(lab_dir) / name
        summary.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"(none)") + b"\0")
    return summary.hexdigest()


def check_files(lab: Lab, lab_dir: Path, *, binary: EnvoyBinary | None = None, run_envoy: bool = True) -> None:
    """Raise an InputError for the first learner file that is broken.

    Without RUN_ENVOY, every check but `envoy --mode validate` runs: a caller that is about
    to start the lab's Envoys anyway (a check) lets them be the test, and calls this again
    with RUN_ENVOY only when one of them fails to start. Envoy's validate mode loads a
    config as a start does, so a config it refuses is one that does not start, and the
    learner sees the same message, file and line; the right config is spared an Envoy
    start per Envoy of the lab on every check."""
    envoy_configs = {spec.target for spec in lab.envoys}
    if envoy_configs and binary is None:
        # A missing Envoy is said first, before the lab's ports are even looked at.
        binary = find_binary()
    files = list(dict.fromkeys([*lab.edit, *sorted(envoy_configs)]))
    for name in files:
        path = lab_dir / name
        if not path.exists():
            raise InputError(f"{name} is missing from {lab_dir}", where=Location(path),
                             fix=f"create it, or run `meshlab reset {lab.number}` to restore the starter")
        if path.suffix in (".yaml", ".yml"):
            doc = yamlfile.load(path)
            if name in envoy_configs:
                if run_envoy:
                    check_envoy_config(doc, cwd=lab_dir, binary=binary)
                else:
                    check_envoy_config_shape(doc)
        elif path.suffix == ".py":
            check_python(path)


def check_python(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    try:
        compile(source, str(path), "exec")
    except SyntaxError as exc:
        line = exc.lineno or 1
        raise InputError(
            f"{path.name} is not valid Python: {exc.msg}",
            where=Location(path, line, exc.offset),
            details=yamlfile._excerpt(source, line),
            fix="fix the syntax at this position",
        ) from None


def check_envoy_config(doc: yamlfile.YamlDoc, *, cwd: Path, binary: EnvoyBinary) -> None:
    _check_mapping(doc)
    accepted, output = validate(binary, doc.file.resolve(), cwd=cwd)
    if not accepted:
        raise explain(output, doc)
    check_grpc_clusters(doc)


def check_envoy_config_shape(doc: yamlfile.YamlDoc) -> None:
    """What check_envoy_config finds without running Envoy."""
    _check_mapping(doc)
    check_grpc_clusters(doc)


def _check_mapping(doc: yamlfile.YamlDoc) -> None:
    if not isinstance(doc.data, dict):
        raise EnvoyConfigError(f"{doc.file.name} must be a YAML mapping (an Envoy bootstrap)",
                               where=Location(doc.file, 1, 1),
                               fix="an Envoy config is a mapping of top-level keys such as `admin:` and "
                                   "`static_resources:`")


def check_grpc_clusters(doc: yamlfile.YamlDoc) -> None:
    """A gRPC service (rate limit, tracer, ext_authz) naming a cluster that does not exist.

    Envoy accepts such a config and starts: the filter then fails every call at run time
    (a rate limit fails open, spans are counted as sent and dropped), far from the typo.
    Clusters that may still arrive over CDS make the name unknowable here: skip then.
    """
    data = doc.data
    if (data.get("dynamic_resources") or {}).get("cds_config") is not None:
        return
    clusters = (data.get("static_resources") or {}).get("clusters") or []
    names = [c.get("name") for c in clusters if isinstance(c, dict)]
    for path, value in doc.walk():
        if len(path) < 2 or path[-2:] != ("envoy_grpc", "cluster_name") or value in names:
            continue
        guess = difflib.get_close_matches(str(value), [n for n in names if isinstance(n, str)], n=1)
        raise EnvoyConfigError(
            f"{doc.file.name}: the gRPC service names cluster '{value}', which is not among "
            f"the clusters ({yamlfile.format_path(path)})",
            where=doc.location(path),
            fix=(f"did you mean '{guess[0]}'?" if guess else
                 "add a cluster with this name under static_resources.clusters, or name an existing one"),
            details="  Envoy starts with it, and every call to the service then fails at run time.",
        )


def explain(output: str, doc: yamlfile.YamlDoc) -> EnvoyConfigError:
    """Turn Envoy's validate output into an error at the right line of DOC."""
    message = _envoy_message(output)
    lua = _lua_error(message, doc)
    if lua is not None:
        return lua
    text = doc.file.read_text(encoding="utf-8") if doc.file.exists() else ""
    path, summary, fix = _locate(message, doc)
    where = doc.location(path) if path is not None else Location(doc.file)
    shown_path = f" ({yamlfile.format_path(path)})" if path else ""
    details = []
    if where.line:
        details.append(yamlfile._excerpt(text, where.line) or "")
    details.append(f"  Envoy said: {message}")
    return EnvoyConfigError(
        f"Envoy refused {doc.file.name}: {summary}{shown_path}",
        where=where,
        fix=fix,
        details="\n".join(d for d in details if d),
    )


def _lua_error(message: str, doc: yamlfile.YamlDoc) -> EnvoyConfigError | None:
    """An error Envoy's Lua reported about a script of DOC, at the line of that script:
    in its own file (`filename: bucket.lua`) or inside the YAML (`inline_string`)."""
    match = _LUA_CHUNK.search(message)
    if match is None:
        return None
    head = " ".join(match["head"].removesuffix("...").split())
    line = int(match["line"])
    for path, node in doc.walk():
        if not path or path[-1] not in ("filename", "inline_string") or not isinstance(node, str):
            continue
        if path[-1] == "filename":
            file = doc.file.parent / node
            text = file.read_text(encoding="utf-8", errors="replace") if file.is_file() else ""
        else:
            file, text = doc.file, node
        if not text or not " ".join(text.split()).startswith(head):
            continue
        at = line
        if file == doc.file:  # the script's first line, found in the YAML from the field on
            yaml_lines = doc.file.read_text(encoding="utf-8").splitlines()
            first = next((t for t in text.splitlines() if t.strip()), "").strip()
            start = doc.location(path).line or 1
            offset = next((n for n in range(start, len(yaml_lines) + 1) if first and first in yaml_lines[n - 1]), start)
            at = offset + line - 1 - (len(text) - len(text.lstrip("\n")))
            text = "\n".join(yaml_lines)
        return EnvoyConfigError(
            f"Envoy refused {file.name}: the Lua script does not load: {match['reason']}",
            where=Location(file, at),
            details="\n".join(d for d in (yamlfile._excerpt(text, at), f"  Envoy said: {message}") if d),
            fix="fix the Lua at this line (Lua reports a missing word where it noticed it: look at the line "
                "before it too)",
        )
    return None


def _envoy_message(output: str) -> str:
    match = _CRITICAL.search(output)
    raw = match.group(1) if match else (output.strip().splitlines() or ["(no output)"])[-1]
    # Envoy inserts random extra spaces in error texts (so nobody parses them by
    # accident); collapse them, then drop the debug dumps of the whole config.
    message = " ".join(raw.split())
    pgv = _PGV.search(message)
    if pgv:
        return pgv.group(0)
    message = re.sub(r"^Unable to parse JSON as proto \((.*)\): \{.*$", r"\1", message)
    message = re.sub(r"^Protobuf message \(type [\w.]+ reason (.*)\) has unknown fields$", r"\1", message)
    message = re.sub(r"^INVALID_ARGUMENT: ", "", message)
    return message


def _locate(message: str, doc: yamlfile.YamlDoc) -> tuple[tuple | None, str, str | None]:
    """(YAML path, one-line summary, fix) for Envoy's MESSAGE."""
    at = _AT_PATH.search(message) or _AT_ROOT.search(message)
    if at:
        path = _parse_path(at.groupdict().get("path") or "")
        reason = at.group("reason")
        message_type = at.group("root")
        if at.groupdict().get("type", "").startswith("message "):
            message_type = at.group("type").split()[1]
        unknown = re.match(r"no such field: '([^']+)'", reason)
        if unknown:
            field = unknown.group(1)
            fields = message_fields(message_type)
            guess = difflib.get_close_matches(field, fields, n=1, cutoff=0.6)
            fix = _where_field_belongs(field, at.group("root"), at.groupdict().get("path") or "", doc) or (
                f"did you mean '{guess[0]}'?" if guess else
                f"{_short(message_type)} has no field '{field}'" + (f"; its fields: {', '.join(fields)}" if fields else ""))
            return path + (field,), f"unknown field '{field}' in {_short(message_type)}", fix
        if "missing @type in Any" in reason:
            return path, f"{path[-1] if path else 'a typed config'} has no \"@type\"", _type_fix(doc, path)
        kind = at.groupdict().get("type") or ""
        return path, f"wrong value ({reason}; expected {kind.strip()})", \
            "give this field a value of the expected type (durations look like 0.25s, ports are numbers)"

    pgv = _PGV.search(message)
    if pgv:
        steps = pgv.group("chain").split(" | caused by ")
        relative: list = []
        root_message = None
        reason = steps[-1].split(": ", 1)[-1]
        for step in steps:
            match = _PGV_STEP.search(step)
            if not match:
                continue
            root_message = root_message or match.group("message")
            relative.append(_snake(match.group("field")))
            index = match.group("index")
            if index is not None and index.isdigit():
                relative.append(int(index))
        path = tuple(relative) if root_message == "Bootstrap" else _find_suffix(doc, tuple(relative))
        return path, f"invalid value: {reason}", "see the constraint Envoy states above"

    unknown_type = re.search(r"could not find @type '(?:type\.googleapis\.com/)?([^']+)'", message)
    if unknown_type:
        name = unknown_type.group(1)
        guess = difflib.get_close_matches(name, package_messages(name.rsplit(".", 1)[0]), n=1, cutoff=0.6)
        fix = f"did you mean 'type.googleapis.com/{guess[0]}'?" if guess else \
            "check the spelling of the @type (copy it from the extension's page in Envoy's API reference)"
        return _find_value(doc, unknown_type.group(0).split("'")[1]), f"unknown @type '{name}'", fix

    unknown_cluster = re.search(r"unknown cluster '([^']+)'", message)
    if unknown_cluster:
        name = unknown_cluster.group(1)
        clusters = [c.get("name") for c in (doc.get(("static_resources", "clusters")) or []) if isinstance(c, dict)]
        guess = difflib.get_close_matches(name, [c for c in clusters if c], n=1, cutoff=0.5)
        fix = f"did you mean '{guess[0]}'?" if guess else "define a cluster with this name under static_resources.clusters"
        return _find_value(doc, name, key="cluster"), f"a route sends to cluster '{name}', which is not defined", fix

    enum = re.search(r"unknown enum value: '([^']+)'", message)
    if enum:
        return _find_value(doc, enum.group(1)), f"unknown value '{enum.group(1)}'", \
            "use one of the names the field's type lists in Envoy's API reference (they are UPPER_CASE)"

    for token in _QUOTED.findall(message):
        path = _find_value(doc, token)
        if path is not None:
            return path, message, None
    return None, message, None


def _where_field_belongs(field: str, root: str, envoy_path: str, doc: yamlfile.YamlDoc) -> str | None:
    """For a field unknown where it was written but known one level down or somewhere up
    the path (Envoy's API descriptors say), where it belongs: an indentation mistake."""
    chain = _message_chain(root, envoy_path, doc)
    if not chain:
        return None
    here = chain[-1]
    for child in here.fields:
        kind = child.message_type
        if kind is not None and kind.full_name != "google.protobuf.Any" and field in kind.fields_by_name:
            return f"this field belongs under `{child.name}:` ({kind.name}), not directly in {here.name}: " \
                   "check the indentation"
    for ancestor in reversed(chain[:-1]):
        if field in ancestor.fields_by_name:
            return f"this field belongs on {ancestor.name}, not on {here.name}: check the indentation"
    return None


def _message_chain(root: str, envoy_path: str, doc: yamlfile.YamlDoc) -> list:
    """The message descriptors along Envoy's path (`a.b[0].typed_config.<any>.c`) from
    ROOT; the `@type` of an Any is read from DOC. Shorter when a step cannot be followed."""
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    try:
        chain = [pool.FindMessageTypeByName(root)] if _import_package(_package_of(root)) else []
    except KeyError:
        return []
    yaml_path: list = []
    for piece in (p for p in envoy_path.split(".") if p):
        if piece == "<any>":
            type_name = str((doc.get(tuple(yaml_path)) or {}).get("@type", "")).rsplit("/", 1)[-1]
            try:
                _import_package(_package_of(type_name))
                chain[-1] = pool.FindMessageTypeByName(type_name)  # the Any, resolved
            except (KeyError, TypeError):
                return chain[:-1]
            continue
        match = re.fullmatch(r"([^\[]+)((?:\[\d+\])*)", piece)
        field = chain[-1].fields_by_name.get(match.group(1)) if match else None
        if field is None or field.message_type is None or field.message_type.GetOptions().map_entry:
            return chain
        yaml_path += [match.group(1), *(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))]
        chain.append(field.message_type)
    return chain


def _type_fix(doc: yamlfile.YamlDoc, path: tuple) -> str:
    """What to write for a missing "@type": the message of the extension the sibling
    `name:` names, when its package has one message named after it."""
    name = doc.get(tuple(path[:-1]) + ("name",)) if path else None
    if isinstance(name, str) and name.startswith("envoy."):
        last = name.rsplit(".", 1)[-1]
        package = "envoy.extensions." + name.removeprefix("envoy.") + ".v3"
        matches = [m for m in package_messages(package) if _snake(_short(m)) == last]
        if len(matches) == 1:
            return f'add `"@type": type.googleapis.com/{matches[0]}` as its first key (Envoy finds the ' \
                   "config's message by it)"
    return 'add `"@type": type.googleapis.com/<the message of this config>` as its first key; the ' \
           "extension's page in Envoy's API reference names the message"


def _parse_path(text: str) -> tuple:
    parts: list = []
    for piece in text.split("."):
        if not piece or piece == "<any>":
            continue  # the content of an Any sits inline under typed_config in YAML
        match = re.fullmatch(r"([^\[]+)((?:\[\d+\])*)", piece)
        if not match:
            parts.append(piece)
            continue
        parts.append(match.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(parts)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _short(message_type: str) -> str:
    return message_type.rsplit(".", 1)[-1]


def _find_suffix(doc: yamlfile.YamlDoc, relative: tuple) -> tuple | None:
    """The document path that ends with RELATIVE (PGV paths start inside an Any)."""
    while relative:
        for path, _ in doc.walk():
            if len(path) >= len(relative) and path[-len(relative):] == relative:
                return path
        relative = relative[:-1]  # the failing field may be absent: point at its parent
    return None


def _find_value(doc: yamlfile.YamlDoc, value: str, key: str | None = None) -> tuple | None:
    fallback = None
    for path, node in doc.walk():
        if isinstance(node, (str, int)) and str(node) == value:
            if key is None or (path and path[-1] == key):
                return path
            fallback = fallback or path
    return fallback


# Envoy's API, from xds-protos: which fields a message has, which messages a package has.

@lru_cache(maxsize=None)
def _import_package(package: str) -> bool:
    try:
        module = importlib.import_module(package)
    except ImportError:
        return False
    for folder in getattr(module, "__path__", []):
        for entry in sorted(os.listdir(folder)):
            if entry.endswith("_pb2.py"):
                try:
                    importlib.import_module(f"{package}.{entry[:-3]}")
                except Exception:  # noqa: BLE001 - a broken optional module only costs a suggestion
                    pass
    return True


def _package_of(full_name: str) -> str:
    parts = full_name.split(".")
    package = []
    for part in parts:
        if part[:1].isupper():
            break
        package.append(part)
    return ".".join(package)


def message_fields(full_name: str) -> list[str]:
    """Field names of an Envoy API message, or [] when it cannot be found."""
    from google.protobuf import descriptor_pool

    if not _import_package(_package_of(full_name)):
        return []
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
    except KeyError:
        return []
    return [f.name for f in descriptor.fields]


def package_messages(package: str) -> list[str]:
    """Full names of the top-level messages in an Envoy API package."""
    from google.protobuf import descriptor_pool

    if not _import_package(package):
        return []
    pool = descriptor_pool.Default()
    names = []
    module = importlib.import_module(package)
    for folder in getattr(module, "__path__", []):
        for entry in os.listdir(folder):
            if entry.endswith("_pb2.py"):
                proto_file = f"{package.replace('.', '/')}/{entry[:-7]}.proto"
                try:
                    file_descriptor = pool.FindFileByName(proto_file)
                except KeyError:
                    continue
                names.extend(f"{package}.{name}" for name in file_descriptor.message_types_by_name)
    return names
