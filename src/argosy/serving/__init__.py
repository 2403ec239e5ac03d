"""The prediction service: serve a registered model's alias over HTTP (FastAPI + Uvicorn).

``model`` (a loaded version, request checks against its input schema, ``predict``),
``metrics`` (Prometheus text), ``app`` (the routes, bearer tokens, following the alias),
``serve`` (what ``argosy models serve MODEL@ALIAS`` starts), ``notify`` (a step helper that
promotes a model and tells a serving target).
"""
