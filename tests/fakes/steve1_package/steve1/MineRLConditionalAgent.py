"""Fake `steve1.MineRLConditionalAgent`: the official agent's API and quirks."""

import numpy as np
import torch
from torch import nn

BUTTONS = ["attack", "back", "forward", "jump", "left", "right", "sneak", "sprint", "use", "drop",
           "inventory"] + [f"hotbar.{i}" for i in range(1, 10)]  # fmt: skip


class FakePolicy(nn.Module):
    def __init__(self):
        super().__init__()
        self.mineclip_embed_linear = nn.Linear(512, 16)  # float32, as the official policy
        self.buttons = nn.Linear(16, len(BUTTONS))
        self.camera = nn.Linear(16, 2)


class MineRLConditionalAgent:
    def __init__(self, env, device, policy_kwargs, pi_head_kwargs):
        if not hasattr(env, "task") or not hasattr(env, "action_space"):
            raise AttributeError("the agent validates env.task and env.action_space")
        self.device = device
        self.policy = FakePolicy().to(device)
        self.policy_kwargs, self.pi_head_kwargs = policy_kwargs, pi_head_kwargs
        self.reset(cond_scale=None)

    def reset(self, cond_scale):
        self.cond_scale = cond_scale
        self.hidden_state = torch.zeros(2 if cond_scale is not None else 1, 16)

    def load_weights(self, path):
        state = torch.load(path, map_location=self.device)
        self.policy.load_state_dict(state, strict=False)
        self.reset(cond_scale=None)  # the upstream quirk: guidance is switched off

    def get_action(self, minerl_obs, goal_embed):
        goal = torch.from_numpy(goal_embed).to(self.device)  # dtype kept as given
        with torch.no_grad():
            hidden = self.policy.mineclip_embed_linear(goal)  # float16 here raises upstream's error
            # Sampled with torch's global generator (no generator=), as upstream's
            # policy.act(..., stochastic=True).
            chance = torch.sigmoid(self.policy.buttons(hidden))
            pressed = (torch.rand_like(chance) < chance).cpu().numpy().astype(np.int64)
            mean = torch.tanh(self.policy.camera(hidden))
            camera = (mean + 0.5 * torch.randn_like(mean)).cpu().numpy() * 10
        action = {name: pressed[:, i] for i, name in enumerate(BUTTONS)}
        action["camera"] = camera.astype(np.float64)
        return action
