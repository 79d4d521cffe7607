"""Runs a list of trainings in one process of a run across processes (or in one process alone), for
tests/test_distributed.py: joining once costs less than starting `mdc-jax train` once per run.

    python tests/distributed_driver.py PLAN.json RESULTS.json [COORDINATOR NUM_PROCESSES PROCESS_ID]

``PLAN.json``: a list of ``{"config", "overrides", "out" | "resume", "overrides_of": {process id: overrides}}``.
Each run's outcome goes into ``RESULTS.json`` (this process's own file): ``"ok"`` or the ConfigError's message.
"""

import json
import sys

from mdc_jax.experiment import distributed
from mdc_jax.experiment.config import ConfigError, load_config
from mdc_jax.experiment.models import find_config
from mdc_jax.experiment.trainer import train


def main(plan_path, results_path, *joined):
    processes = distributed.join(distributed.resolve(joined[0], int(joined[1]), int(joined[2]), timeout=60)) \
        if joined else None
    pid = str(processes.process_id) if processes else "0"
    results = []
    for run in json.loads(open(plan_path).read()):
        overrides = run.get("overrides", []) + run.get("overrides_of", {}).get(pid, [])
        try:
            cfg = load_config(find_config(run["config"]), overrides)
            train(cfg, out_dir=run.get("out"), resume=run.get("resume"), tty=False, processes=processes)
            results.append("ok")
        except ConfigError as err:
            results.append(str(err))
    with open(results_path, "w") as f:
        json.dump(results, f)
    if processes:
        distributed.leave(processes)


if __name__ == "__main__":
    main(*sys.argv[1:])
