"""Hops: how a request travels from this gateway to a predictor or explainer."""
