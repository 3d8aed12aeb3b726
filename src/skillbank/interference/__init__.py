"""Cross-domain interference on shared parameters: measure it (update sparsity, neuron
overlap, gradient cosine, measured damage), predict it (first- and second-order Taylor terms
with Hessian-vector products, the share held by a few curvature directions), and repair it
(refresh on the damaged domain, sparse rollback of the most damaging coordinates).

The maths (``measures``, ``hessian``, ``repair``) works on any model given as named
trainable tensors plus per-domain closures (``setting.Setting``); ``control`` and ``text``
build settings for the PPO control suites and the LM text domains."""
