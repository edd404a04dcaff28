"""sim2sim: the deployment Controller on MuJoCo, scenario by scenario, and the gate that decides
whether a bundle may be promoted (`sac2real sim2sim`).

scenarios.py the scenario file, faults.py planted faults, runner.py episodes in one MuJoCo world,
metrics.py per-episode metrics and thresholds, gate.py verdict, report.py report.json and plots,
power.py the gate's power (clean vs each planted fault), cli.py the command."""
