"""Training across processes on JAX's own distributed runtime: joining, agreeing, and not hanging.

`mdc-jax train` runs one process per host (or per accelerator), all executing the same program on one
global mesh: :func:`jax.distributed.initialize` joins them (on CPU over gloo), the trainer's ``batch``
axis spans every device of every process, the parameters stay replicated, and process 0 alone writes
the run directory. mdc-jax adds only what the runtime leaves to the caller:

* **Who joins** (:func:`resolve`): ``--coordinator HOST:PORT --num-processes P --process-id I``, or the
  variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, or ``--distributed``
  alone for the cluster auto-detection of ``jax.distributed.initialize()`` (SLURM, Open MPI, Kubernetes,
  Cloud TPU). Nothing given: one process, and this module's :data:`SINGLE`, which waits for nobody.
* **Failing clearly instead of aborting** (:func:`join`): on jax 0.10, ``initialize`` with a coordinator
  that never answers (or peers that never come) aborts the process with SIGABRT, naming nothing. So a
  process other than 0 first waits for the coordinator's port to accept a connection, and a
  :class:`Watchdog` bounds every wait (joining, the start-up agreement, each step's collectives) by
  ``--timeout`` and stops the process with a message naming what it waited for.
* **Agreeing at start** (:meth:`Processes.agree`): every process sends its resolved config's hash, its
  run directory and any problem it met; a problem anywhere, or a config that differs from process 0's,
  stops every process with the same message naming the process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import sys
import threading
import time

DEFAULT_TIMEOUT = 300.0  # seconds: joining, the start-up agreement, one training step
EXIT_DISTRIBUTED = 4  # the exit status of a process stopped because another one failed or stalled
STOP_GRACE = 3.0  # seconds process 0 (the coordinator's host) waits, after an error, for the others to leave
ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


class DistributedError(RuntimeError):
    """Joining or keeping in step with the other processes failed (not the model, not the config)."""


@dataclasses.dataclass(frozen=True)
class Options:
    """Who joins: what :func:`resolve` read from the flags and the environment."""

    coordinator: str | None  # HOST:PORT, or None for jax's cluster auto-detection
    num_processes: int | None
    process_id: int | None
    timeout: float = DEFAULT_TIMEOUT


def _parse_int(value, flag: str, env: str) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{flag} (or {env}): expected an integer, got {value!r}") from None


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` (``[::1]:PORT`` for IPv6); a ``ValueError`` naming the flag otherwise."""
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--coordinator (or {ENV['coordinator']}): expected HOST:PORT with a port in 1..65535, "
                         f"got {address!r}")
    return host, int(port)


def resolve(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
            auto: bool = False, timeout: float | None = None, environ=os.environ) -> Options | None:
    """The processes to join, from the flags, else the ``JAX_*`` variables (:data:`ENV`); ``None`` for one
    process (nothing given). Checked before anything starts: a ``ValueError`` names the flag and the value."""
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    from_env = {k: environ.get(v) or None for k, v in ENV.items()}
    values = {k: given[k] if given[k] is not None else from_env[k] for k in given}
    coordinator = values["coordinator"]
    num_processes = _parse_int(values["num_processes"], "--num-processes", ENV["num_processes"])
    process_id = _parse_int(values["process_id"], "--process-id", ENV["process_id"])
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if not (isinstance(timeout, int | float) and timeout > 0 and timeout < float("inf")):
        raise ValueError(f"--timeout: expected a positive number of seconds, got {timeout!r}")
    if coordinator is None and num_processes is None and process_id is None:
        return Options(None, None, None, float(timeout)) if auto else None
    if coordinator is None or num_processes is None or process_id is None:
        missing = [f"--{k.replace('_', '-')} (or {ENV[k]})" for k, v in
                   (("coordinator", coordinator), ("num_processes", num_processes), ("process_id", process_id)) if v is None]
        raise ValueError(f"training across processes needs --coordinator HOST:PORT, --num-processes P and "
                         f"--process-id I together; missing {', '.join(missing)} (or give --distributed alone for "
                         f"the cluster auto-detection of jax.distributed.initialize)")
    split_address(coordinator)
    if num_processes < 1:
        raise ValueError(f"--num-processes: expected at least 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id: expected 0 .. {num_processes - 1} (--num-processes is {num_processes}), "
                         f"got {process_id}")
    return Options(coordinator, num_processes, process_id, float(timeout))


class Watchdog:
    """Stops the process when a wait outlives its deadline: a daemon thread checks every half second, and
    on expiry prints what was waited for and calls ``os._exit`` (the main thread may be blocked inside a
    collective that never returns, so no exception could reach it)."""

    def __init__(self, label: str, timeout: float):
        self.label, self.timeout = label, timeout
        self._what, self._deadline, self._hint, self._lock = None, None, "", threading.Lock()
        threading.Thread(target=self._watch, name="mdc-jax-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def waiting(self, what: str, hint: str = ""):
        with self._lock:
            self._what, self._deadline, self._hint = what, time.monotonic() + self.timeout, hint
        try:
            yield
        finally:
            with self._lock:
                self._what = self._deadline = None

    def _watch(self):
        while True:
            time.sleep(0.5)
            with self._lock:
                expired = self._deadline is not None and time.monotonic() > self._deadline
                what, hint = self._what, self._hint
            if expired:
                sys.stdout.flush()
                print(f"mdc-jax train: {self.label}: {what} has waited {self.timeout:g} s (--timeout {self.timeout:g}) "
                      f"for the other processes: {hint or 'one of them has died or stalled, or the network is down'}; "
                      f"stopping", file=sys.stderr, flush=True)
                os._exit(EXIT_DISTRIBUTED)


@dataclasses.dataclass
class Single:
    """One process: it writes the run directory and waits for nobody (the trainer's default)."""

    writer: bool = True
    distributed: bool = False
    label: str = "process 0 of 1"

    def waiting(self, what: str):
        return contextlib.nullcontext()

    def local(self, tree):
        return tree


SINGLE = Single()


@dataclasses.dataclass
class Processes:
    """This process's place among the joined processes, and how it waits for them."""

    process_id: int
    num_processes: int
    timeout: float
    watchdog: Watchdog
    distributed: bool = True

    @property
    def writer(self) -> bool:
        """Process 0 alone writes the run directory."""
        return self.process_id == 0

    @property
    def label(self) -> str:
        return f"process {self.process_id} of {self.num_processes}"

    @contextlib.contextmanager
    def waiting(self, what: str):
        """A context bounding a wait for the other processes (a step, a collective) by ``--timeout``; an error
        of the runtime inside it (a collective whose peer is gone) becomes a :class:`DistributedError`."""
        with self.watchdog.waiting(what):
            try:
                yield
            except (RuntimeError, ValueError) as err:  # gloo reports a vanished peer as a ValueError
                if isinstance(err, DistributedError) or not _runtime_failure(err):
                    raise
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
                raise DistributedError(f"{what} failed in the runtime ({first}): another process has most likely "
                                       f"stopped (see its output); the run resumes from its newest checkpoint with "
                                       f"--resume RUN_DIR") from err

    def local(self, tree):
        """A replicated global pytree as this process's own copy (on its first local device), for the
        host-side work each process does alone (evaluation, reports, checks)."""
        import jax

        return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)

    def agree(self, payload: dict) -> list[dict]:
        """Every process's ``payload`` (a JSON-able dict), in process order, by two all-gathers of bytes."""
        import numpy as np
        from jax.experimental import multihost_utils

        data = np.frombuffer(json.dumps(payload).encode(), np.uint8)
        with self.waiting("the start-up agreement (config hash, run directory)"):
            sizes = multihost_utils.process_allgather(np.array([data.size], np.int32))
            padded = np.zeros(int(np.max(sizes)), np.uint8)
            padded[:data.size] = data
            gathered = multihost_utils.process_allgather(padded)
        return [json.loads(bytes(row[:int(n)]).decode()) for row, n in zip(gathered, np.ravel(sizes))]


def _runtime_failure(err: Exception) -> bool:
    """An error raised by XLA's runtime or its collectives, not by mdc-jax's own checks."""
    import jax

    text = str(err)
    return isinstance(err, jax.errors.JaxRuntimeError) or any(w in text for w in ("Gloo", "UNAVAILABLE", "DEADLINE",
                                                                                  "collective", "NCCL"))


def config_hash(config: dict) -> str:
    """The SHA-256 of a resolved config (:func:`~.config.config_to_dict`), keys sorted."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def check_agreement(payloads: list[dict]) -> None:
    """Raises ``ValueError`` naming the process when one reported a problem or resolved another config than
    process 0's (``payload["config_hash"]``): every process raises the same message."""
    for i, p in enumerate(payloads):
        if p.get("problem"):
            raise ValueError(f"process {i} cannot start: {p['problem']}")
    ref = payloads[0].get("config_hash")
    differ = [i for i, p in enumerate(payloads) if p.get("config_hash") != ref]
    if differ:
        names = ", ".join(f"process {i} ({payloads[i].get('config_hash', '')[:12]})" for i in differ)
        raise ValueError(f"the resolved config differs across processes: {names} against process 0's "
                         f"({(ref or '')[:12]}), by SHA-256 of the config; start every process with the same config "
                         f"file and --set overrides")


def wait_for_port(host: str, port: int, timeout: float, label: str) -> None:
    """Returns once ``host:port`` accepts a TCP connection; a :class:`DistributedError` naming the address
    after ``timeout`` seconds of trying (process 0 may start later than the others)."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                return
        except OSError as err:
            last = err
        if time.monotonic() >= deadline:
            raise DistributedError(f"{label}: the coordinator at {host}:{port} could not be reached within "
                                   f"{timeout:g} s (--timeout; last error: {last}): is process 0 running there, with "
                                   f"the same --coordinator, and is the address reachable from this host?")
        time.sleep(0.2)


def check_port_free(port: int, label: str) -> None:
    """Process 0 serves the coordinator on ``port`` (all interfaces): refuses a port another program holds."""
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((address, port))
            return
        except OSError as err:
            if err.errno == 98 or "in use" in str(err).lower():
                raise DistributedError(f"{label}: the coordinator's port {port} is in use on this host (another "
                                       f"run, or another program): choose another --coordinator port") from None
    # neither family could bind for another reason (no IPv6, say): leave it to jax


def join(options: Options) -> Processes:
    """Joins the processes ``options`` name through :func:`jax.distributed.initialize` (gloo collectives on
    CPU), every wait bounded by ``options.timeout``. Call before anything else touches JAX's backends."""
    import jax

    label = (f"process {options.process_id} of {options.num_processes}" if options.process_id is not None
             else "this process")
    if options.coordinator is not None:
        host, port = split_address(options.coordinator)
        if options.process_id == 0:
            check_port_free(port, label)
        else:
            wait_for_port(host, port, options.timeout, label)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    watchdog = Watchdog(label, options.timeout)
    where = f"the coordinator at {options.coordinator}" if options.coordinator else "the coordinator jax detected"
    hint = (f"not every process joined {where} (each needs the same --coordinator and --num-processes "
            f"{options.num_processes}, and its own --process-id)" if options.coordinator else
            "the cluster auto-detection found no peers")
    with watchdog.waiting(f"joining {where}", hint):
        try:
            jax.distributed.initialize(options.coordinator, options.num_processes, options.process_id,
                                       initialization_timeout=int(options.timeout) + 30,  # our watchdog speaks first
                                       heartbeat_timeout_seconds=int(options.timeout) + 30,
                                       shutdown_timeout_seconds=int(options.timeout) + 30)
        except (ValueError, RuntimeError) as err:
            if options.coordinator is not None:
                raise
            raise DistributedError(f"--distributed: jax.distributed.initialize() found no cluster to join ({err}); "
                                   f"it detects SLURM, Open MPI, Kubernetes and Cloud TPU by their variables. "
                                   f"Elsewhere give --coordinator HOST:PORT --num-processes P --process-id I") from None
    watchdog.label = f"process {jax.process_index()} of {jax.process_count()}"
    return Processes(jax.process_index(), jax.process_count(), options.timeout, watchdog)


def leave(processes: Processes) -> None:
    """Leaves the runtime after a finished run: jax's shutdown barrier waits for every process (process 0
    may still be writing the run's files), bounded by the watchdog."""
    import jax

    with processes.waiting("the shutdown barrier (the other processes finishing)"):
        jax.distributed.shutdown()


def stop(processes: Processes, message: str, code: int) -> None:
    """Ends this process after an error without jax's shutdown barrier (which would wait for peers that may
    be gone, then abort): the message, flushed, then ``os._exit``. Process 0 serves the coordinator, so it
    leaves last: an error every process meets at once (a config check, a non-finite loss) lets the others
    print theirs and exit before the service they poll goes away (which would abort them)."""
    sys.stdout.flush()
    if message:
        print(message, file=sys.stderr, flush=True)
    if processes.writer and processes.num_processes > 1:
        time.sleep(min(STOP_GRACE, processes.timeout))
    os._exit(code)
