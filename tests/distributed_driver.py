"""Runs a list of trainings in one process of a run across processes (or in one process alone), for
tests/test_distributed.py: joining once costs less than starting `mdc-jax train` once per run.

    python tests/distributed_driver.py PLAN.json RESULTS.json [COORDINATOR NUM_PROCESSES PROCESS_ID]

``PLAN.json``: a list of ``{"config", "overrides", "out" | "resume", "overrides_of": {process id: overrides}}``,
or of ``{"config", "overrides", "step_hlo": FILE}``: the config's training step compiled, its HLO text written
to FILE. With ``"dies": I`` (the plan's last entry), process I kills itself (SIGKILL) once process 0 has logged
step 2 of that run. ``"plots": false`` leaves the plots out (matplotlib's import and drawing are a second a
run, and the suite's time is short). Each entry's outcome goes into ``RESULTS.json`` (this process's own file): ``"ok"``, or the
message of the ConfigError, or of the DistributedError that stopped it.
"""

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from mdc_jax.experiment import distributed, mesh, trainer
from mdc_jax.experiment.config import ConfigError, load_config
from mdc_jax.experiment.models import find_config
from mdc_jax.experiment.trainer import plot_run, train


def main(plan_path, results_path, *joined):
    processes = distributed.join(distributed.resolve(joined[0], int(joined[1]), int(joined[2]), timeout=60)) \
        if joined else None
    pid = str(processes.process_id) if processes else "0"
    results = []
    for run in json.loads(open(plan_path).read()):
        overrides = run.get("overrides", []) + run.get("overrides_of", {}).get(pid, [])
        try:
            cfg = load_config(find_config(run["config"]), overrides)
            if "step_hlo" in run:
                with open(run["step_hlo"], "w") as f:
                    f.write(step_hlo(cfg))
                results.append("ok")
                continue
            if str(run.get("dies")) == pid:
                threading.Thread(target=die_at_step_2, args=(Path(run["out"]) / "metrics.jsonl",), daemon=True).start()
            trainer.plot_run = plot_run if run.get("plots", True) else lambda *args: None
            train(cfg, out_dir=run.get("out"), resume=run.get("resume"), tty=False, processes=processes)
            results.append("ok")
        except (ConfigError, distributed.DistributedError) as err:
            results.append(str(err))
    with open(results_path, "w") as f:
        json.dump(results, f)
    if processes and results[-1].startswith("step "):  # a peer died: no shutdown barrier to wait at
        os._exit(0)
    if processes:
        distributed.leave(processes)


def die_at_step_2(metrics: Path):
    while not (metrics.exists() and '"step": 2' in metrics.read_text()):
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)


def step_hlo(cfg) -> str:
    """The compiled training step of ``cfg`` (no DP, no second order), as XLA's per-device HLO text."""
    import jax.numpy as jnp

    model = trainer._build_model(trainer.get_model(cfg.model.kind), cfg)
    shardings, opt = mesh.mesh_shardings(cfg, model.batch_axes), trainer.make_optimizer(cfg)
    state = trainer._initial_state(cfg, model, opt)
    params, opt_state = mesh.replicate((state.params, state.opt_state), shardings)
    step = trainer._compile_step(cfg, model, opt, shardings, None, state.data_key)
    return step.lower(params, opt_state, jnp.asarray(1, jnp.int32)).compile().as_text()


if __name__ == "__main__":
    main(*sys.argv[1:])
