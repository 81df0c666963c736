"""Experiment: DPPO fine-tuning of the pre-trained planner on onramp_merge against the pre-trained planner, MLP PPO
and CACC: `experiments/rl_baselines.py` on that one scenario (its docstring describes the steps, the table and the
figures), with this experiment's former output folder.

    .venv/bin/python experiments/dppo_onramp.py --planner runs/planner_mix_r1_21k.pt
    .venv/bin/python experiments/dppo_onramp.py --planner P --iterations 4 --batch 500 --episodes 10   # a quick look

Any option of `rl_baselines.py` may follow (a later ``--scenarios`` or ``--out`` wins).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("rl_baselines", Path(__file__).with_name("rl_baselines.py"))
rl_baselines = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rl_baselines)

if __name__ == "__main__":
    rl_baselines.main(["--scenarios", "onramp_merge", "--out", "runs/dppo_onramp", *sys.argv[1:]])
