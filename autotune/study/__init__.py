"""Optuna studies over SGLang server flags: search spaces, objectives, runners, the loop."""
