"""Local learning rules: Hebbian rules (chapter 8) and learned plasticity rules (chapter 9).

They do not turn an output error into per-layer signals the way the FA family does
(:mod:`dfa_lib.rules`), so they live apart, on many small networks trained at once:

- :mod:`.nets`        batched networks: one ``(n_nets, n_out, n_in)`` tensor per layer, the ONE
                      forward pass, success, the one-pattern-per-step online loop;
- :mod:`.hebbian`     Hebbian step functions with one signature, ``step(weights, x, t, lr, ...)``;
- :mod:`.plasticity`  learned rules (:class:`PlasticityRule` and its MLP, LSTM and delta-rule kinds);
- :mod:`.meta`        episodes, meta-training by backpropagation and by evolution strategies.

Every public name is also available as ``dfa_lib.local.<name>``, which is how the chapters
use them.  Import graph: ``nets <- hebbian``, ``nets <- meta``, ``plasticity <- meta``
(``plasticity`` works on plain weight tensors and needs only :func:`dfa_lib.rules.init_feedback`);
nothing here imports upwards.
"""
from .hebbian import (
    STEP_ACTIVATIONS,
    STEPS,
    run_setting,
    semisupervised_hebbian_step,
    soft_bounded_hebbian_step,
    supervised_hebbian_step,
    train_nets,
    unsupervised_hebbian_step,
)
from .meta import count_solved, episode_loss, es_meta_train, meta_train, run_episode, sample_task
from .nets import forward, init_nets, one_pattern_per_step, predict, sample_patterns, success, success_rate
from .plasticity import (
    FEATURES,
    MODULATIONS,
    DeltaRule,
    LSTMRule,
    MLPRule,
    PlasticityRule,
    init_net_feedback,
    local_features,
    modulatory_inputs,
    reference_rules,
    rule_response,
)

__all__ = [
    "init_nets", "forward", "predict", "success", "success_rate", "sample_patterns", "one_pattern_per_step",
    "STEPS", "STEP_ACTIVATIONS", "supervised_hebbian_step", "unsupervised_hebbian_step",
    "semisupervised_hebbian_step", "soft_bounded_hebbian_step", "train_nets", "run_setting",
    "FEATURES", "MODULATIONS", "PlasticityRule", "MLPRule", "LSTMRule", "DeltaRule", "init_net_feedback",
    "local_features", "modulatory_inputs", "rule_response", "reference_rules",
    "run_episode", "episode_loss", "sample_task", "meta_train", "es_meta_train", "count_solved",
]
