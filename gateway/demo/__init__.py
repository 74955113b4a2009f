"""``gateway demo``: a transformer chain with a predictor and an explainer, run as local
processes, loaded over every protocol, with the latency of each stage and hop.

`topology` starts and stops the processes, `models` holds the models they serve, `load` is
the client, `report` turns the traces into the latency table, `cli` ties them together.
"""
