"""Kubeflow Pipelines interoperability: run KFP v2 IR, export Argosy pipelines as IR.

* :mod:`.ir` reads IR files and holds the value rules (numbers are doubles);
* :mod:`.load` turns IR into an Argosy spec (``argosy run pipeline.yaml``);
* :mod:`.cel` turns trigger conditions into Argosy conditions;
* :mod:`.task` is the KFP executor contract in a task's process, and :mod:`.dsl` the part of
  ``kfp.dsl`` a lightweight component imports (Argosy installs no ``kfp``);
* :mod:`.export` writes an Argosy spec as IR (``argosy compile --target kfp``).

See docs/kubeflow.md for what is supported and what is not.
"""
