"""Curvature math for the analyses; it lives in `flwbc.curvature`, a core module that clients,
attacks and analyses all use (kept here so existing imports keep working)."""

from flwbc.curvature import Loss, batch_loss, grad_and_hvp, hutchinson_diag, hvp, spectral_norm

__all__ = ["Loss", "batch_loss", "grad_and_hvp", "hutchinson_diag", "hvp", "spectral_norm"]
