"""Data files that are not YAML configs: weight checkpoints in, outlier profiles out.

Placement in the layers: ``sim.io`` sits between ``numerics`` and ``hw``. It may import
``config`` and ``numerics``; nothing in ``config``, ``core`` or ``numerics`` imports it, so the
numerics layer stays pure numpy on arrays while file formats live here.

* :mod:`sim.io.weights` -- ``.safetensors`` / ``.npz`` readers (numpy only), a safetensors
  writer, and tensor-name canonicalization (``model.layers.3.self_attn.q_proj.weight`` ->
  ``(3, "q_proj")``).
* :mod:`sim.io.profiles` -- outlier profiles measured from checkpoints
  (:func:`~sim.io.profiles.profile_from_weights`), written as YAML
  (:func:`~sim.io.profiles.write_profile`), and the shipped ones regenerated from their recipes
  (:func:`~sim.io.profiles.regenerate_shipped`).
"""
