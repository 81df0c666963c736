"""RLlib training of platoon policies: the CTDE MLP PPO module, the training driver and `rllib:<checkpoint>` policies.

- `mlp_module.SharedMLPModule`: parameter-shared Gaussian actor on a member's observation, centralized critic.
- `train.train(config, resume=, ray_address=)`: YAML config → PPOConfig → iterations, metrics, checkpoints, resume
  (`train_config`: the config and module kinds; `run_folder`: checkpoints, metrics, learning curve).
- `policy.RLlibPolicy`: a checkpoint as a batched `Policy` for the evaluator (registered as ``rllib:<path>``).

Submodules import Ray lazily where they can; import them directly.
"""
