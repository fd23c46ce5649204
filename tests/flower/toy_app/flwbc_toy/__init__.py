"""Toy Flower app for the deployment test: one scalar weight, deterministic updates."""
