"""Vector envs: many skill envs, one batched policy, worlds in their own processes."""
