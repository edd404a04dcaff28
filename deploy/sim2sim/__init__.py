"""sim2sim: the deployment Controller on MuJoCo, scenario by scenario and seed by seed, and the gate
that decides whether a bundle may be promoted (`sac2real sim2sim`).

scenarios.py the scenario file and the gate's seeds, faults.py planted faults, runner.py episodes
in one MuJoCo world, metrics.py per-episode metrics and absolute (safety) thresholds,
reference.py the same bundle rolled out as the training env does, behaviour.py the statistics
both are compared on, compare.py paired intervals and the decision, calibration.py per-robot
tolerances from good bundles, gate.py the verdict, report.py report.json and plots, power.py the
gate's power (clean vs each planted fault), cli.py the command."""
