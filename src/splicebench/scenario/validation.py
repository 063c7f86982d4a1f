"""Validation: parsed YAML data -> a Scenario, or one ScenarioError for the first problem (pure).

Walks the sections of a scenario (servers and their roles, backend, workload, repetitions, matrix,
placement), fills in defaults, and checks what spans sections (labels, baseline, a parameter set in
one place only). The message shape and the checks of single values live in checks.py; the allowed
values come from the same tables (registry.py) the JSON Schema is generated from.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from splicebench.registry import (ACCEL_MODES, ACCEL_NONE, COMMON_SERVER_OPTIONS, CPU_MAX, CPU_ROLES, DEFAULT_MAX_CONNS,
                                  ECHO, LOADED, MAX_CONNS_MAX, PAYLOAD_FACTORS, PAYLOAD_MAX, PEER_MAX_CONNS, PROXY,
                                  SEED_MAX, SERVERS, WORKERS, WORKLOAD_FIELDS, WORKLOADS, Option, parse_cpu_list)
from splicebench.scenario.checks import Checker, closest, found, join_path
from splicebench.scenario.model import (
    DEFAULT_ADAPTIVE_MAX,
    DEFAULT_ADAPTIVE_MIN,
    DEFAULT_MEASURED,
    DEFAULT_SEED,
    DEFAULT_TIMEOUT_S,
    DEFAULT_WARMUP,
    DIRECT,
    ACCEL_LABEL_SEP,
    LOCAL,
    MATRIX_SERVER_KEYS,
    NAME_ALLOWED,
    NAME_RE,
    SYSCTL_NAME_ALLOWED,
    SYSCTL_NAME_RE,
    SYSCTL_VALUE_ALLOWED,
    Backend,
    Placement,
    Scenario,
    ServerConfig,
    is_sysctl,
    sysctl_value,
)
from splicebench.units import DURATION_HELP, format_size, parse_duration

# The keys each mapping of a scenario file may have.
TOP_KEYS = (
    "name",
    "description",
    "servers",
    "workload",
    "repetitions",
    "baseline",
    "stop_on_failure",
    "profile",
    "timeout",
    "seed",
    "matrix",
    "placement",
    "backend",
    "cpus",
    "sysctls",
    "accelerate",
)
SERVER_KEYS = ("name", "label", "options")
REPETITION_KEYS = ("warmup", "measured", "min", "max", "target_ci_width")
PLACEMENT_KEYS = ("server", "clients")
BACKEND_KEYS = ("name", "options", "host")


def validate(data: Any, source: str = "<string>", *, known_hosts: Iterable[str] = (LOCAL,),
             default_name: str | None = None) -> Scenario:
    """Validate parsed YAML data; return the Scenario or raise ScenarioError for the first problem."""
    c = Checker(source)
    top_allowed = "a mapping with keys " + ", ".join(TOP_KEYS)
    if data is None:
        c.fail("(top level)", "empty file", "nothing", top_allowed)
    c.mapping(data, "(top level)", TOP_KEYS, top_allowed)

    # name, description
    if "name" in data:
        name = c.name(data["name"], "name")
    elif default_name is not None and NAME_RE.match(default_name):
        name = default_name
    else:
        c.fail("name", "missing", "nothing", NAME_ALLOWED)
    description = data.get("description", "")
    if not isinstance(description, str):
        c.fail("description", "not a string", found(description), "text")

    # servers
    if "servers" not in data:
        c.fail("servers", "missing", "nothing", "a non-empty list of servers, e.g. [naive, splice, sockmap]")
    listed = _servers(c, data["servers"])  # as written: field paths name these
    backend = _backend(c, data["backend"], tuple(known_hosts)) if "backend" in data else None
    servers = _roles(c, listed, backend)
    accelerate = _accelerate(c, data["accelerate"]) if "accelerate" in data else (ACCEL_NONE,)
    servers = _accelerated(c, servers, listed, backend, accelerate)

    # workload
    if "workload" not in data:
        c.fail("workload", "missing", "nothing", "a mapping with 'type' (" + ", ".join(sorted(WORKLOADS)) + ")")
    wl = data["workload"]
    if not isinstance(wl, Mapping):
        c.fail("workload", "not a mapping", found(wl), "a mapping with 'type' and workload parameters")
    wtype = wl.get("type")
    if "type" not in wl:
        c.fail("workload.type", "missing", "nothing", ", ".join(sorted(WORKLOADS)))
    if not isinstance(wtype, str) or wtype not in WORKLOADS:
        c.fail("workload.type", "unknown workload", found(wtype), ", ".join(sorted(WORKLOADS)),
               closest(wtype, WORKLOADS))
    applicable = WORKLOADS[wtype]
    for key in wl:
        if key == "type":
            continue
        if isinstance(key, str) and key in WORKLOAD_FIELDS and key not in applicable:
            c.fail(join_path("workload", key), f"does not apply to workload type {wtype!r}", found(key),
                   ", ".join(("type",) + applicable))
        if not isinstance(key, str) or key not in applicable:
            c.fail(join_path("workload", str(key)), "unknown key", found(key), ", ".join(("type",) + applicable),
                   closest(key, applicable))
    params = {k: WORKLOAD_FIELDS[k].default for k in applicable}
    for key in applicable:
        if key in wl:
            params[key] = c.workload_value(key, wl[key], f"workload.{key}")

    # repetitions
    warmup, measured = DEFAULT_WARMUP, DEFAULT_MEASURED
    min_measured, target_ci_width = None, None
    if "repetitions" in data:
        reps = c.mapping(data["repetitions"], "repetitions", REPETITION_KEYS,
                         "a mapping with keys warmup, measured")
        if "warmup" in reps:
            warmup = c.integer(reps["warmup"], "repetitions.warmup", 0)
        if "measured" in reps:
            measured = c.integer(reps["measured"], "repetitions.measured", 1)
        min_measured, target_ci_width, adaptive_max = _adaptive(c, reps)
        if adaptive_max is not None:
            measured = adaptive_max

    # baseline
    labels = [s.label for s in servers]
    if "baseline" in data:
        baseline = data["baseline"]
        if not isinstance(baseline, str) or baseline not in labels:
            c.fail("baseline", "not one of the scenario's servers", found(baseline), ", ".join(labels),
                   closest(baseline, labels))
    else:
        default = "proxy-naive" if backend else "naive"
        baseline = default if default in labels else labels[0]

    stop = c.boolean(data["stop_on_failure"], "stop_on_failure") if "stop_on_failure" in data else False
    profile = c.boolean(data["profile"], "profile") if "profile" in data else False

    timeout_s = DEFAULT_TIMEOUT_S
    if "timeout" in data:
        try:
            timeout_s = parse_duration(data["timeout"])
        except ValueError:
            c.fail("timeout", "not a duration", found(data["timeout"]), DURATION_HELP)
        if timeout_s <= 0:
            c.fail("timeout", "must be positive", found(data["timeout"]), DURATION_HELP)

    seed = c.integer(data["seed"], "seed", 0, SEED_MAX) if "seed" in data else DEFAULT_SEED

    sysctls = _sysctls(c, data["sysctls"]) if "sysctls" in data else {}

    # matrix
    matrix: list[tuple[str, tuple[Any, ...]]] = []
    if "matrix" in data:
        matrix = _matrix(c, data["matrix"], wtype, wl, servers, sysctls)

    placements = _placements(c, data["placement"], tuple(known_hosts)) if "placement" in data else (Placement(),)
    cpus = _cpus(c, data["cpus"], backend) if "cpus" in data else ()

    swept_values = dict(matrix)
    conns_path = "matrix.conns" if "conns" in swept_values else "workload.conns"
    conns = swept_values.get("conns", (params["conns"],))
    if wtype == LOADED:  # the bulk streams are connections too
        conns = [n + max(swept_values.get("bulk_conns", (params["bulk_conns"],))) for n in conns]
    _connection_limits(c, listed, backend, conns, placements, conns_path)
    _payload(c, wtype, params, swept_values)

    swept = {k for k, _ in matrix}
    params = {k: v for k, v in params.items() if k not in swept}

    return Scenario(
        name=name,
        description=description.strip(),
        servers=tuple(servers),
        workload_type=wtype,
        workload=tuple(params.items()),
        warmup=warmup,
        measured=measured,
        baseline=baseline,
        stop_on_failure=stop,
        profile=profile,
        timeout_s=timeout_s,
        seed=seed,
        matrix=tuple(matrix),
        placements=placements,
        backend=backend,
        source=source,
        min_measured=min_measured,
        target_ci_width=target_ci_width,
        cpus=cpus,
        sysctls=tuple(sorted(sysctls.items())),
        accelerate=accelerate,
    )


def _sysctl_name(c: Checker, key: Any, path: str) -> str:
    if not isinstance(key, str) or not SYSCTL_NAME_RE.match(key):
        c.fail(path, "not a sysctl name", found(key), SYSCTL_NAME_ALLOWED)
    return key


def _sysctl_value(c: Checker, value: Any, path: str) -> str:
    text = sysctl_value(value)
    if text is None:
        c.fail(path, "not a sysctl value", found(value), SYSCTL_VALUE_ALLOWED)
    return text


def _sysctls(c: Checker, value: Any) -> dict[str, str]:
    """The `sysctls` section: name -> value, set on every host for the run (checked on the hosts
    before any sample runs; here only their form)."""
    if not isinstance(value, Mapping) or not value:
        c.fail("sysctls", "not a non-empty mapping", found(value), "a mapping of sysctl name -> value, "
               "e.g. {net.core.rmem_max: 4194304}")
    out = {}
    for key, val in value.items():
        path = join_path("sysctls", str(key))
        out[_sysctl_name(c, key, path)] = _sysctl_value(c, val, path)
    return out


def _accelerate(c: Checker, value: Any) -> tuple[str, ...]:
    """The `accelerate` list: distinct modes of registry.ACCEL_MODES, e.g. [none, sk_msg]."""
    allowed = "a non-empty list of " + ", ".join(ACCEL_MODES) + ", e.g. [none, sk_msg]"
    if not isinstance(value, list):
        c.fail("accelerate", "not a list", found(value), allowed)
    if not value:
        c.fail("accelerate", "empty list", found(value), allowed)
    out: list[str] = []
    for i, mode in enumerate(value):
        if not isinstance(mode, str) or mode not in ACCEL_MODES:
            c.fail(f"accelerate[{i}]", "unknown mode", found(mode), ", ".join(ACCEL_MODES), closest(mode, ACCEL_MODES))
        if mode in out:
            c.fail(f"accelerate[{i}]", "duplicate mode", found(mode), "each mode once")
        out.append(mode)
    return tuple(out)


def _accelerated(c: Checker, servers: list[ServerConfig], listed: list[ServerConfig], backend: Backend | None,
                 modes: tuple[str, ...]) -> list[ServerConfig]:
    """Every server once per mode, next to each other (naive, naive+sk_msg, splice, ...); a program
    that cannot be correct with its sockets in the acceleration's sockmap is refused with the reason."""
    if modes == (ACCEL_NONE,):
        return servers
    if any(m != ACCEL_NONE for m in modes):
        path_of = {s.label: f"servers[{i}]" for i, s in enumerate(listed)}
        if backend is not None:
            why = SERVERS[backend.kind].accel_conflict(dict(backend.options))
            if why:
                c.fail("backend.name", f"cannot run with accelerate {_first_accel(modes)}: {why}", found(backend.kind),
                       "another backend, or accelerate: [none]")
        for s in servers:
            why = SERVERS[s.kind].accel_conflict(dict(s.options))
            if why and s.label in path_of:
                c.fail(path_of[s.label], f"cannot run with accelerate {_first_accel(modes)}: {why}", found(s.kind),
                       "remove it from servers, or accelerate: [none]")
    return [ServerConfig(s.label if m == ACCEL_NONE else f"{s.label}{ACCEL_LABEL_SEP}{m}", s.kind, s.options, m)
            for s in servers for m in modes]


def _first_accel(modes: tuple[str, ...]) -> str:
    return next(m for m in modes if m != ACCEL_NONE)


def _adaptive(c: Checker, reps: Mapping[str, Any]) -> tuple[int | None, float | None, int | None]:
    """(min, target_ci_width, max) of adaptive repetitions, or Nones for a fixed count."""
    if "target_ci_width" not in reps:
        for key in ("min", "max"):
            if key in reps:
                c.fail(f"repetitions.{key}", "only applies with repetitions.target_ci_width", found(reps[key]),
                       "measured: N for a fixed count, or min, max and target_ci_width for adaptive repetitions")
        return None, None, None
    width = reps["target_ci_width"]
    allowed = "a fraction of the median greater than 0 and at most 1, e.g. 0.05 for 5 %"
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        c.fail("repetitions.target_ci_width", "not a number", found(width), allowed)
    if not 0 < width <= 1:
        c.fail("repetitions.target_ci_width", "out of range", found(width), allowed)
    if "measured" in reps:
        c.fail("repetitions.measured", "does not combine with target_ci_width", found(reps["measured"]),
               "min and max bound the measured repetitions when target_ci_width is set")
    lo = c.integer(reps["min"], "repetitions.min", 1) if "min" in reps else DEFAULT_ADAPTIVE_MIN
    hi = c.integer(reps["max"], "repetitions.max", 1) if "max" in reps else max(lo, DEFAULT_ADAPTIVE_MAX)
    if hi < lo:
        c.fail("repetitions.max", "smaller than repetitions.min", found(hi), f"an integer >= {lo}")
    return lo, float(width), hi


def _servers(c: Checker, value: Any) -> list[ServerConfig]:
    kinds = ", ".join(sorted(SERVERS))
    allowed = f"a non-empty list of server names ({kinds}) or mappings with keys name, label, options"
    if not isinstance(value, list):
        c.fail("servers", "not a list", found(value), allowed)
    if not value:
        c.fail("servers", "empty list", found(value), allowed)
    out: list[ServerConfig] = []
    labels: set[str] = set()
    for i, entry in enumerate(value):
        path = f"servers[{i}]"
        kpath = path
        if isinstance(entry, str):
            entry = {"name": entry}
        elif isinstance(entry, Mapping):
            kpath = f"{path}.name"
            c.mapping(entry, path, SERVER_KEYS, "keys name, label, options")
            if "name" not in entry:
                c.fail(f"{path}.name", "missing", "nothing", kinds)
        else:
            c.fail(path, "not a server", found(entry), allowed)
        kind = entry["name"]
        if not isinstance(kind, str) or kind not in SERVERS:
            c.fail(kpath, "unknown server", found(kind), kinds, closest(kind, SERVERS))
        label = c.name(entry["label"], f"{path}.label") if "label" in entry else kind
        if label in labels:
            c.fail(path, "duplicate server label", found(label),
                   "each label once (give repeated servers a distinct 'label')")
        labels.add(label)
        opts = _server_options(c, kind, entry["options"], f"{path}.options") if "options" in entry else {}
        out.append(ServerConfig(label, kind, tuple(sorted(opts.items()))))
    return out


def _server_options(c: Checker, kind: str, raw: Any, path: str) -> dict[str, Any]:
    known = SERVERS[kind].all_options()
    if not isinstance(raw, Mapping):
        c.fail(path, "not a mapping", found(raw), ", ".join(sorted(known)))
    opts: dict[str, Any] = {}
    for key, val in raw.items():
        opath = join_path(path, str(key))
        if not isinstance(key, str) or key not in known:
            c.fail(opath, f"unknown option for server {kind!r}", found(key), ", ".join(sorted(known)),
                   closest(key, known))
        opts[key] = c.option(known[key], val, opath)
    return opts


def _backend(c: Checker, value: Any, known_hosts: tuple[str, ...]) -> Backend:
    echo = [k for k, s in SERVERS.items() if s.role == ECHO]
    b = c.mapping(value, "backend", BACKEND_KEYS, "a mapping with keys name, options, host")
    if "name" not in b:
        c.fail("backend.name", "missing", "nothing", ", ".join(echo))
    kind = b["name"]
    if not isinstance(kind, str) or kind not in SERVERS or SERVERS[kind].role != ECHO:
        c.fail("backend.name", "not an echo server", found(kind), ", ".join(echo), closest(kind, echo))
    opts = _server_options(c, kind, b["options"], "backend.options") if "options" in b else {}
    host = b.get("host")
    if host is not None and (not isinstance(host, str) or host not in known_hosts):
        c.fail("backend.host", "unknown host", found(host), ", ".join(known_hosts), closest(host, known_hosts))
    return Backend(kind, tuple(sorted(opts.items())), host)


def _roles(c: Checker, servers: list[ServerConfig], backend: Backend | None) -> list[ServerConfig]:
    """Without a backend: echo servers only. With one: proxies only, and the DIRECT row first."""
    proxies = [k for k, s in SERVERS.items() if s.role == PROXY]
    if backend is None:
        for i, s in enumerate(servers):
            if SERVERS[s.kind].role == PROXY:
                c.fail(f"servers[{i}]", "a proxy needs a 'backend' section", found(s.kind),
                       "echo servers, or add e.g. backend: {name: naive}")
        return servers
    direct = ServerConfig(DIRECT, backend.kind, backend.options)
    out = [direct]
    for i, s in enumerate(servers):
        if s.label == DIRECT:
            if s != direct:
                c.fail(f"servers[{i}]", "the label 'direct' is the backend without a proxy", found(s.kind),
                       f"name {backend.kind!r} with the backend's options, or another label")
            continue
        if SERVERS[s.kind].role != PROXY:
            c.fail(f"servers[{i}]", "not a proxy (with a 'backend' section the servers are proxies)",
                   found(s.kind), ", ".join(proxies), closest(s.kind, proxies))
        out.append(s)
    if len(out) == 1:
        c.fail("servers", "no proxy", "only 'direct'", ", ".join(proxies))
    return out


def _matrix(c: Checker, value: Any, wtype: str, wl: Mapping[str, Any], servers: Sequence[ServerConfig],
            sysctls: Mapping[str, str]) -> list[tuple[str, tuple[Any, ...]]]:
    keys = WORKLOADS[wtype] + MATRIX_SERVER_KEYS
    allowed = ("a mapping of parameter -> non-empty list of values; parameters: " + ", ".join(keys)
               + ", or a sysctl name")
    if not isinstance(value, Mapping):
        c.fail("matrix", "not a mapping", found(value), allowed)
    if not value:
        c.fail("matrix", "empty matrix", found(value), allowed)
    out = []
    for key, vals in value.items():
        path = join_path("matrix", str(key))
        if is_sysctl(key):
            out.append((key, _swept_sysctl(c, key, vals, path, sysctls)))
            continue
        if key == "servers" or key == "server":
            c.fail(path, "servers cannot be a matrix key", found(key),
                   ", ".join(keys) + " (every server in 'servers' runs at every matrix point)")
        if isinstance(key, str) and key in WORKLOAD_FIELDS and key not in keys:
            c.fail(path, f"does not apply to workload type {wtype!r}", found(key), ", ".join(keys))
        if not isinstance(key, str) or key not in keys:
            c.fail(path, "unknown matrix key", found(key), ", ".join(keys), closest(key, keys))
        if key in wl:
            c.fail(path, f"also set in workload.{key}", found(key), "each parameter in one place")
        for s in servers:
            if key in dict(s.options):
                c.fail(path, f"also set in the options of server {s.label!r}", found(key),
                       "each parameter in one place")
        if not isinstance(vals, list):
            c.fail(path, "not a list", found(vals), "a non-empty list of values")
        if not vals:
            c.fail(path, "empty list", found(vals), "a non-empty list of values")
        parsed = []
        for i, v in enumerate(vals):
            vpath = f"{path}[{i}]"
            if key in WORKLOAD_FIELDS:
                n = c.workload_value(key, v, vpath)
            elif (opt := _tightest(key, servers)) is None:
                c.fail(path, "none of the servers has worker threads", found(key),
                       "servers with a workers option: " + ", ".join(k for k, kind in SERVERS.items()
                                                                      if WORKERS in kind.options))
            else:  # a socket buffer for every server: the smallest bound among them applies
                n = c.option(opt, v, vpath)
            if n in parsed:
                c.fail(vpath, "duplicate value", found(v), "distinct values")
            parsed.append(n)
        out.append((key, tuple(parsed)))
    return out


def _swept_sysctl(c: Checker, key: str, vals: Any, path: str, sysctls: Mapping[str, str]) -> tuple[str, ...]:
    _sysctl_name(c, key, path)
    if key in sysctls:
        c.fail(path, f"also set in sysctls.{key}", found(key), "each setting in one place")
    if not isinstance(vals, list) or not vals:
        c.fail(path, "not a non-empty list", found(vals), "a non-empty list of values")
    parsed: list[str] = []
    for i, v in enumerate(vals):
        text = _sysctl_value(c, v, f"{path}[{i}]")
        if text in parsed:
            c.fail(f"{path}[{i}]", "duplicate value", found(v), "distinct values")
        parsed.append(text)
    return tuple(parsed)


def _placements(c: Checker, value: Any, known_hosts: tuple[str, ...]) -> tuple[Placement, ...]:
    """One placement (a mapping) or several (a non-empty list of mappings, distinct)."""
    if not isinstance(value, list):
        return (_placement(c, value, known_hosts, "placement"),)
    if not value:
        c.fail("placement", "empty list", found(value), "a mapping with keys server, clients, or a non-empty "
                                                        "list of them")
    out: list[Placement] = []
    for i, v in enumerate(value):
        p = _placement(c, v, known_hosts, f"placement[{i}]")
        if p in out:
            c.fail(f"placement[{i}]", "duplicate placement", found(v), "distinct placements")
        out.append(p)
    return tuple(out)


def _placement(c: Checker, value: Any, known_hosts: tuple[str, ...], path: str) -> Placement:
    p = c.mapping(value, path, PLACEMENT_KEYS, "a mapping with keys server, clients")
    hosts = ", ".join(known_hosts)
    server = p.get("server", LOCAL)
    if not isinstance(server, str) or server not in known_hosts:
        c.fail(f"{path}.server", "unknown host", found(server), hosts, closest(server, known_hosts))
    clients = p.get("clients", [LOCAL])
    if not isinstance(clients, list):
        c.fail(f"{path}.clients", "not a list", found(clients), f"a non-empty list of hosts ({hosts})")
    if not clients:
        c.fail(f"{path}.clients", "empty list", found(clients), f"a non-empty list of hosts ({hosts})")
    for i, h in enumerate(clients):
        if not isinstance(h, str) or h not in known_hosts:
            c.fail(f"{path}.clients[{i}]", "unknown host", found(h), hosts, closest(h, known_hosts))
    return Placement(server, tuple(clients))


def _cpus(c: Checker, value: Any, backend: Backend | None) -> tuple[tuple[str, str], ...]:
    """The `cpus` mapping: role -> CPU list ('0,2-3', or one CPU as an integer), normalised."""
    roles = CPU_ROLES if backend is not None else tuple(r for r in CPU_ROLES if r != "backend")
    m = c.mapping(value, "cpus", roles, "a mapping of " + ", ".join(roles) + " to a CPU list like '0,2-3'")
    out = []
    for role in roles:
        if role not in m:
            continue
        v = m[role]
        allowed = f"a CPU list like '0,2-3' or one CPU number (CPUs 0 to {CPU_MAX})"
        try:
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise ValueError(v)
            listed = parse_cpu_list(str(v))
        except ValueError:
            c.fail(f"cpus.{role}", "not a CPU list", found(v), allowed)
        out.append((role, ",".join(map(str, listed))))
    return tuple(out)


def _tightest(key: str, servers: Sequence[ServerConfig]) -> Option | None:
    """The option `key` of all the servers with the smallest maximum (a matrix value reaches them all;
    `workers` only those that have it, None when none has)."""
    opts = [SERVERS[s.kind].all_options()[key] for s in servers if key in SERVERS[s.kind].all_options()]
    if not opts and key in COMMON_SERVER_OPTIONS:
        opts = [COMMON_SERVER_OPTIONS[key]]
    return min(opts, key=lambda o: o.maximum if o.maximum is not None else float("inf")) if opts else None


def _connection_limits(c: Checker, servers: Sequence[ServerConfig], backend: Backend | None, conns: Sequence[int],
                       placements: Sequence[Placement], conns_path: str) -> None:
    """A SOCKMAP server's map, and a peer's connection limit, must hold every connection of the largest
    cell (all clients together)."""
    clients = max(len(p.clients) for p in placements)
    need = max(conns) * clients
    programs = [(f"servers[{i}]", s.kind, s.options) for i, s in enumerate(servers)]
    if backend is not None:
        programs.append(("backend", backend.kind, backend.options))
    for path, kind, options in programs:
        if "max_conns" not in SERVERS[kind].options:
            continue
        size = dict(options).get("max_conns", DEFAULT_MAX_CONNS)
        if need > size:
            c.fail(f"{path}.options.max_conns", f"the map holds fewer connections than the scenario opens "
                   f"({max(conns)} conns x {clients} client(s) = {need})", found(size),
                   f"max_conns >= {need} (at most {MAX_CONNS_MAX})")
    for i, s in enumerate(servers):
        if SERVERS[s.kind].peer and need > PEER_MAX_CONNS:
            c.fail(conns_path, f"more connections than servers[{i}] ({s.kind}) is configured for "
                   f"({max(conns)} conns x {clients} client(s) = {need})", found(max(conns)),
                   f"conns x clients <= {PEER_MAX_CONNS} with a peer proxy")


def _payload(c: Checker, wtype: str, params: Mapping[str, int], swept: Mapping[str, Sequence[int]]) -> None:
    """sb-client's bytes per connection, a product for pingpong and burst, within PAYLOAD_MAX in every cell."""
    if wtype not in PAYLOAD_FACTORS:
        return
    a, b = PAYLOAD_FACTORS[wtype]
    va, vb = (max(swept.get(k, (params[k],))) for k in (a, b))
    if va * vb > PAYLOAD_MAX:
        path = next((f"matrix.{k}" for k in (b, a) if k in swept), f"workload.{b}")
        c.fail(path, f"bytes per connection too large for the program ({a} {va} x {b} {vb})", found(va * vb),
               f"{a} x {b} <= {PAYLOAD_MAX} ({format_size(PAYLOAD_MAX)})")
