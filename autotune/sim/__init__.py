"""Simulated SGLang."""
