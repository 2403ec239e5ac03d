"""What marks a project's root folder: imported by the step runtime, so it imports nothing.

The state folder (:func:`argosy.config.find_home`) and the code package
(:func:`argosy.spec.code_package.project_root`) both use it; it lives here, not in
:mod:`argosy.config`, because every task process imports the code package and must not pay
for pydantic (``argosy.config``'s settings) on its way to the step.
"""

from __future__ import annotations

PROJECT_MARKERS = ("argosy.toml", "pyproject.toml", "setup.py", "setup.cfg", ".git")
