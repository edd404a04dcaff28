"""Mutation testing of the SAC core: plant one plausible bug at a time in a copy of the tree and run
the fast tests with -x; a mutant is killed when a test fails. Prints one JSON object (kill rate,
each mutant's outcome). Not part of CI: it reruns the fast tests once per mutant (minutes).

    nice -n 10 .venv/bin/python bench/mutants.py [--only NAME ...] [--tests tests/test_x.py ...]

The list holds the review's planted bugs (issue 20) and others of the same kind: a sign, a min/max,
an index, a mask, a discount power, a forgotten state update."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAST_TESTS = ["tests/test_sac_math.py", "tests/test_sac_core.py", "tests/test_collection.py",
              "tests/test_relabel.py", "tests/test_exploration.py", "tests/test_algo_switches.py",
              "tests/test_dsac_e.py"]

# name: (file, exact text, replacement); the text must occur exactly once
MUTANTS: dict[str, tuple[str, str, str]] = {
    "target_max_of_twins": ("training/critic.py", "squeeze(-1).min(0).values", "squeeze(-1).max(0).values"),
    "entropy_bonus_sign": ("training/temperature.py", "return -self.alpha * next_logp", "return self.alpha * next_logp"),
    "online_critic_as_target": ("training/critic.py", "return self.q_target(torch.cat", "return self.q(torch.cat"),
    "only_first_critic_trained": ("training/critic.py", "loss = (q - y.unsqueeze(0))", "loss = (q[:1] - y.unsqueeze(0))"),
    "actor_climbs_mean_q": ("training/critic.py", "return self.q_values(obs, act).min(0).values",
                            "return self.q_values(obs, act).mean(0)"),
    "temperature_target_sign": ("training/temperature.py", "log_prob.detach() + self.target_entropy",
                                "log_prob.detach() - self.target_entropy"),
    "next_action_from_s": ("training/sac.py", "next_act, next_logp = self.actor(next_a)",
                           "next_act, next_logp = self.actor(obs_a)"),
    "runner_stores_post_reset_obs": ("training/runner.py", "torch.as_tensor(corrected_next_obs(result)",
                                     "torch.as_tensor(result.obs"),
    "normalizer_never_fed": ("training/sac.py", "self.obs_norm.update(obs)", "pass"),
    "timeouts_as_failures": ("training/replay_buffer.py",
                             "failed = self.dones[last_row, env] & ~self.timeouts[last_row, env]",
                             "failed = self.dones[last_row, env]"),
    "collection_deterministic": ("training/runner.py", "self.agent.act(obs, noise=self._exploration_noise(obs), "
                                 "logit_scale=self._logit_scale())",
                                 "self.agent.act(obs, deterministic=True)"),
    "polyak_one_minus_tau": ("training/critic.py", "list(self.q.parameters()), tau)",
                             "list(self.q.parameters()), 1 - tau)"),
    "polyak_skipped": ("training/sac.py", "self.critic.update_target(cfg.tau)", "self.critic.update_target(0.0)"),
    "bootstrap_gamma_k": ("training/replay_buffer.py", "gamma ** (last + 1).float()", "gamma ** last.float()"),
    "alpha_loss_sign": ("training/temperature.py", "return -(self.log_alpha *", "return (self.log_alpha *"),
    "actor_entropy_sign": ("training/sac.py", "(alpha * logp - self.critic", "(-alpha * logp - self.critic"),
    "logp_without_tanh_term": ("training/actor.py", "(gauss - log_det_tanh - torch.log", "(gauss - torch.log"),
    "logp_without_scale_term": ("training/actor.py", "gauss - log_det_tanh - torch.log(self.half_range)",
                                "gauss - log_det_tanh"),
    "squash_without_anchor": ("training/actor.py", "torch.tanh(x + self.anchor)", "torch.tanh(x)"),
    "normalizer_fed_by_update": ("training/sac.py", "step = int(self.num_updates)\n",
                                 "step = int(self.num_updates)\n        self.observe(batch.obs)\n"),
    "returns_not_masked": ("training/replay_buffer.py", "(rewards * alive * discounts)", "(rewards * discounts)"),
    "discount_off_by_one": ("training/replay_buffer.py", "discounts = gamma ** k.float()",
                            "discounts = gamma ** (k + 1).float()"),
    "critic_left_frozen": ("training/sac.py", "self.critic.q.requires_grad_(True)",
                           "self.critic.q.requires_grad_(False)"),
    "policy_frequency_inverted": ("training/sac.py", "step % cfg.policy_frequency == 0",
                                  "step % cfg.policy_frequency != 0"),
    "no_grad_clipping": ("training/optim.py", "if max_grad_norm > 0:", "if False:"),
    "welford_variance": ("training/networks.py", "delta.pow(2) * w * (1 - w)", "delta.pow(2) * w"),
    "normalizer_without_eps": ("training/networks.py", "torch.sqrt(self.var + self.eps)", "torch.sqrt(self.var)"),
    "log_alpha_as_alpha": ("training/sac.py", "alpha = self.temperature.alpha", "alpha = self.temperature.log_alpha.detach()"),
    "window_includes_the_ending_step_twice": ("training/replay_buffer.py",
                                              "ended_before = torch.cumsum(done.int(), 1) - done.int()",
                                              "ended_before = torch.cumsum(done.int(), 1)"),
    "next_obs_of_first_step": ("training/replay_buffer.py", "next_obs=self.next_obs[last_row, env]",
                               "next_obs=self.next_obs[rows, env]"),
    "relabel_next_obs_only": ("training/relabel.py", "obs=self._write(batch.obs, command, chosen)", "obs=batch.obs"),
    "relabel_reached_unmasked": ("training/relabel.py", "(window[\"velocity\"] * w).sum(1) / w.sum(1)",
                                 "window[\"velocity\"].mean(1)"),
    "pink_spectrum_power": ("training/exploration.py", "self.scale = freqs.pow(-0.5)", "self.scale = freqs.pow(-1.0)"),
    "noise_scale_redraw_inverted": ("training/exploration.py", "torch.where(envs.cpu(), fresh, self.scale)",
                                    "torch.where(envs.cpu(), self.scale, fresh)"),
    "init_std_not_logged": ("training/actor.py", "fill_(math.log(init_std))", "fill_(init_std)"),
    "target_fixed_discount": ("training/critic.py", "y = returns + bootstrap * (", "y = returns + 0.97 * ("),
    "target_entropy_sign": ("training/temperature.py", "-target_entropy_scale * action_dim",
                            "target_entropy_scale * action_dim"),
    "actor_on_target_critic": ("training/sac.py", "self.critic.value_for_actor(obs_c, act)",
                               "self.critic.target_value(obs_c, act)"),
    "critic_on_unnormalized_obs": ("training/sac.py", "obs_c, next_c = self.critic_norm(batch.obs), "
                                   "self.critic_norm(batch.next_obs)",
                                   "obs_c, next_c = batch.obs, self.critic_norm(batch.next_obs)"),
    "relabel_keeps_n_step_window": ("training/relabel.py", "alive = torch.where(chosen[:, None], first, alive)",
                                    "alive = alive"),
    "relabel_rewards_unchanged": ("training/relabel.py", "rewards = torch.where(chosen[:, None], new, rewards)",
                                  "rewards = rewards"),
    "obs_before_command_resampling": ("training/envs/velocity.py", "        obs = self._observe()\n",
                                      "        obs = self._observe(state)\n"),
    "final_obs_after_reset": ("training/envs/velocity.py", "np.where(done[:, None], final, obs)", "obs"),
    "alpha_step_skipped": ("training/sac.py", "self._step(self.alpha_opt, alpha_loss", "(lambda *a: None)(self.alpha_opt, alpha_loss"),
    "actor_step_skipped": ("training/sac.py", "self._step(self.actor_opt, actor_loss", "(lambda *a: None)(self.actor_opt, actor_loss"),
    "log_std_bias_ignored": ("training/actor.py", "x = mean + log_std.exp() * (", "x = mean + ("),
    "dem_weights_mean_not_one": ("training/actor.py", "return math.log(self.act_dim) + torch.log_softmax",
                                 "return torch.log_softmax"),
    "dem_logit_scale_ignored": ("training/actor.py", "z = z * logit_scale.reshape(-1, 1)", "z = z"),
    "dem_temperature_ignored": ("training/actor.py", "z = logits / self.dem_temperature", "z = logits"),
    "gaussian_max_mean_target": ("training/critic.py", "pick = mean.argmin(0, keepdim=True)",
                                 "pick = mean.argmax(0, keepdim=True)"),
    "gaussian_variance_term_sign": ("training/critic.py", "var_term = -((y_z", "var_term = ((y_z"),
    "gaussian_sampled_mean_target": ("training/critic.py", "return returns + bootstrap * (m + next_entropy_bonus)",
                                     "return returns + bootstrap * (z + next_entropy_bonus)"),
    "gaussian_omega_frozen": ("training/critic.py", "self._track(self.omega, std.pow(2).mean())",
                              "self._track(self.omega, self.omega)"),
    "runner_dem_scales_noise": ("training/runner.py", 'if self.noise_scale is None or self.cfg.sac.actor == "dem":',
                                "if self.noise_scale is None:"),
    # DSAC-E (temperature: trajectory)
    "trajectory_reward_target_gets_entropy": ("training/temperature.py", "return torch.zeros_like(next_logp)",
                                              "return -self.alpha * next_logp"),
    "entropy_critic_target_sign": ("training/temperature.py", "next_obs, next_act, -next_logp)",
                                   "next_obs, next_act, next_logp)"),
    "entropy_critic_target_takes_reward": ("training/temperature.py",
                                           "self.entropy_critic.loss(obs, actions, torch.zeros_like(next_logp),",
                                           "self.entropy_critic.loss(obs, actions, torch.ones_like(next_logp),"),
    "pim_entropy_term_sign": ("training/temperature.py", "return -self.alpha * future.mean()",
                              "return self.alpha * future.mean()"),
    "trajectory_alpha_sign": ("training/temperature.py", "return (self.log_alpha * (cumulative - self.budget))",
                              "return -(self.log_alpha * (cumulative - self.budget))"),
    "budget_horizon_one_step": ("training/sac.py", "cfg.entropy_budget_scale, cfg.gamma ** cfg.n_step,",
                                "cfg.entropy_budget_scale, cfg.gamma,"),
    "entropy_critic_polyak_skipped": ("training/temperature.py", "self.entropy_critic.update_target(tau)",
                                      "self.entropy_critic.update_target(0.0)"),
    "entropy_critic_step_skipped": ("training/temperature.py", "gradient_step(self.critic_opt, loss",
                                    "(lambda *a: None)(self.critic_opt, loss"),
}


def _copy_tree(dst: Path) -> None:
    skip = shutil.ignore_patterns(".venv", ".git", "runs", "__pycache__", "*.egg-info", ".pytest_cache")
    for item in ("training", "deploy", "tests", "configs", "models", "bench", "pyproject.toml"):
        src = ROOT / item
        (shutil.copytree(src, dst / item, ignore=skip) if src.is_dir() else shutil.copy2(src, dst / item))


def _run_tests(tree: Path, tests: list[str], timeout: float) -> tuple[str, float]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                               "-m", "not slow", *tests], cwd=tree, env=env, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "killed (timeout)", time.perf_counter() - t0
    return ("survived" if proc.returncode == 0 else "killed"), time.perf_counter() - t0


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # still remove the tree copy
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="mutant names (default: all)")
    ap.add_argument("--tests", nargs="*", default=FAST_TESTS)
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    names = args.only or list(MUTANTS)
    unknown = sorted(set(names) - set(MUTANTS))
    if unknown:
        ap.error(f"unknown mutants {unknown} (known: {', '.join(MUTANTS)})")
    outcomes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="sac2real_mutants_") as tmp:
        tree = Path(tmp)
        _copy_tree(tree)
        baseline, secs = _run_tests(tree, args.tests, args.timeout)
        if baseline != "survived":
            print(json.dumps({"error": "the fast tests fail without any mutant", "tests": args.tests}))
            return 1
        for name in names:
            rel, old, new = MUTANTS[name]
            path = tree / rel
            source = path.read_text()
            if source.count(old) != 1:
                outcomes[name] = "not applicable (text not found once)"
                continue
            path.write_text(source.replace(old, new))
            try:
                outcomes[name], _ = _run_tests(tree, args.tests, args.timeout)
            finally:
                path.write_text(source)
            print(f"{name}: {outcomes[name]}", file=sys.stderr, flush=True)
    applied = [n for n, o in outcomes.items() if not o.startswith("not applicable")]
    killed = [n for n in applied if outcomes[n].startswith("killed")]
    print(json.dumps({"tests": args.tests, "baseline_s": round(secs, 1), "mutants": len(applied),
                      "killed": len(killed), "kill_rate": round(len(killed) / max(1, len(applied)), 3),
                      "survived": [n for n in applied if n not in killed],
                      "not_applicable": [n for n in outcomes if n not in applied]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
