"""Sampling from the policy: image and answer rollouts and the fast decoding stack under them.

`rollout` (what the trainer, the evaluations and the commands call), `records` (the typed rollouts),
`sampling` (drawing a token from logits), `decoding` (preallocated KV cache, shared prefill, lean and
static decode steps), `step_compiler` (AOTInductor / torch.compile of the static step) and `cpu_linear`
(float32 CPU linears through oneDNN). Builds on `corl.policy`; its settings are `corl.config.RolloutConfig`.
"""
