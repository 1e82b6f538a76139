"""The feature store's Tandem side: Feast does the storing (stacks/features/<project>/ are Feast
definitions, applied by `feast apply`, materialized and pushed by Feast); this package reads what
Feast wrote for the gateway (online.py, redis_format.py), turns features into prompt context
(context.py), inspects a feature repository offline for `tandem plan` (repo.py, which runs
feast_tool.py inside the Feast environment, .venv-feast), writes each environment's
feature_store.yaml (store_yaml.py) and the freshness alerts (rules.py).

Runtime code: never imports pulumi, and never imports feast in the main environment (Feast pins
prometheus-client, redis and tenacity below Tandem's; see docs/feature-store.md).
"""
