"""Agents: the batched `Policy` interface and its registry, expert controllers, the joint diffusion planner and the RLlib modules."""
